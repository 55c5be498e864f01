"""Load a pretrained ``state_dict`` file (``.safetensors`` or a weights-only ``.pth``) into a model.

Every key and shape is checked before anything is copied, so a file that does not fit leaves
the model as it was and the error names each key that differs: missing, unexpected, or of
another shape (with both shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.errors import ConfigError

__all__ = ["load_state_dict_file", "mismatches", "read_state_dict"]

# Checkpoint wrappers that hold the state dict one level down.
_WRAPPER_KEYS = ("state_dict", "model")
# Key prefixes of wrapped models: DataParallel / DistributedDataParallel, wrapper modules.
_PREFIXES = ("model.", "module.")
# The parts of an nncompress training checkpoint; only its model.* tensors are weights.
_CHECKPOINT_PARTS = ("model.", "optimizer.", "rng.")
# BatchNorm counters that files written before PyTorch 0.4.1 lack; loading keeps the model's.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
_LISTED = 10
# What `nncompress caffe convert --mean-file/--mean-value` adds to a converted net's weights.
_CAFFE_TRANSFORM = "input_transform."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a ``.safetensors`` file or of a ``.pth``/``.pt`` saved by torch.save.

    ``.pth`` files are read with ``torch.load(weights_only=True)``: tensors and plain containers
    only, never arbitrary pickled objects. A checkpoint holding the state dict under
    ``state_dict`` or ``model`` is unwrapped; of an nncompress training checkpoint
    (``model.*``, ``optimizer.*``, ``rng.*``), the model's tensors are returned.

    Args:
        path: the file.

    Returns:
        Parameter and buffer name -> tensor, on the CPU.

    Raises:
        ConfigError: the file is missing, unreadable, not a state dict, or holds non-tensors.

    Example:
        >>> read_state_dict("resnet18.pth")  # doctest: +SKIP
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"weights file {str(file)!r} not found")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(file), device="cpu")
        else:
            raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or foreign files raise many types
        raise ConfigError(f"cannot read weights from {str(file)!r}: {exc} (give a .safetensors "
                          "file or a .pth/.pt written by torch.save(model.state_dict(), ...))"
                          ) from None
    return _plain_state(raw, file)


def _plain_state(raw: Any, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, Mapping) and not _all_tensors(raw):
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is not None:
            raw = inner
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{str(file)!r} holds no state dict (a mapping of names to tensors); "
                          "save model.state_dict()")
    bad = [str(k) for k, v in raw.items() if not isinstance(k, str) or
           not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{str(file)!r}: entries that are not named tensors: "
                          f"{_listed(bad)}; save model.state_dict()")
    state = {str(k): v for k, v in raw.items()}
    if any(k.startswith("rng.") for k in state) and \
            all(k.startswith(_CHECKPOINT_PARTS) for k in state):
        state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    return state


def _without_prefix(state: dict[str, torch.Tensor],
                    model_keys: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Remove a wrapper's prefix shared by every key, unless the keys already fit the model."""
    if any(k in model_keys for k in state):
        return state
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _all_tensors(raw: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in raw.values())


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _shape(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def mismatches(model_state: Mapping[str, torch.Tensor],
               file_state: Mapping[str, torch.Tensor]) -> list[str]:
    """Describe each difference between a model's and a file's state dicts (empty: they fit).

    Keys of another shape and missing keys come in the model's order, unexpected ones sorted.

    Example:
        >>> mismatches({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2), "b": torch.zeros(1)})
        ["key 'w': the file has shape [3, 2], the model [2, 3]", "not in the model: 'b'"]
    """
    problems = [f"key {k!r}: the file has shape {_shape(file_state[k])}, the model "
                f"{_shape(v)}"
                for k, v in model_state.items()
                if k in file_state and tuple(file_state[k].shape) != tuple(v.shape)]
    missing = [k for k in model_state if k not in file_state
               and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = sorted(k for k in file_state if k not in model_state)
    if missing:
        problems.append(f"missing from the file: {_listed(missing)}")
    if unexpected:
        hint = (" (input_transform.* is the input mean of a converted Caffe net: convert it "
                "without --mean-file/--mean-value and give the mean in the data transform)"
                if any(k.startswith(_CAFFE_TRANSFORM) for k in unexpected) else "")
        problems.append(f"not in the model: {_listed(unexpected)}{hint}")
    return problems


def load_state_dict_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a pretrained ``state_dict`` file into a plain (not yet prepared) model, in place.

    Names and shapes must match exactly (BatchNorm's ``num_batches_tracked`` may be absent);
    when no name matches, a ``module.`` or ``model.`` prefix shared by every key (a wrapped
    model's) is removed first. Values are cast to the model's dtypes and copied to its
    devices. Nothing is copied unless everything fits.

    Args:
        model: e.g. ``build_model("resnet18")``; torchvision's ResNet, VGG, SqueezeNet and
            MobileNetV2 files fit the models of the same name.
        path: a ``.safetensors`` file, or a ``.pth``/``.pt`` read with ``weights_only=True``.

    Returns:
        ``model``.

    Raises:
        ConfigError: the file cannot be read or does not fit: each key of another shape is
            named with both shapes, and the missing and unexpected keys are listed.

    Example:
        >>> from nncompress.models import build_model
        >>> net = load_state_dict_file(build_model("resnet18"), "resnet18.pth")  # doctest: +SKIP
    """
    expected = model.state_dict()
    state = _without_prefix(read_state_dict(path), expected)
    problems = mismatches(expected, state)
    if problems:
        raise ConfigError(f"weights in {str(path)!r} do not fit the model: "
                          + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    return model
