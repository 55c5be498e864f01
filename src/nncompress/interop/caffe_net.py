"""A PyTorch module built from a Caffe net prototxt.

:class:`CaffeNet` runs the layers of the TRAIN phase in training mode and those of the TEST phase
in eval mode (Caffe's include/exclude rules), keeps every learned blob in a child module named
after its layer (``conv1``, ``ip1``, ...), and so works with :func:`nncompress.prepare`,
``state_dict`` and any optimizer. ``net(x)`` returns the scores (the first bottom of the loss or
accuracy layer); :meth:`CaffeNet.run` returns every blob, as Caffe's ``Net::Forward`` does.

Example:
    >>> net = from_prototxt("lenet_train_test.prototxt", input_shape=(1, 28, 28))  # doctest: +SKIP
    >>> net(torch.zeros(2, 1, 28, 28)).shape  # doctest: +SKIP
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.errors import ConfigError
from nncompress.interop.caffe_checks import check_blob_size, check_bottoms, check_layers
from nncompress.interop.caffe_layers import (
    BUILDERS,
    INPUT_TYPES,
    LOSS_TYPES,
    Op,
    dummy_blob,
    fill,
    input_blob_shape,
)
from nncompress.interop.caffe_losses import LABEL_TYPES
from nncompress.interop.caffe_spec import (
    COMPRESSION_TYPES,
    Compression,
    LayerSpec,
    layer_specs,
    module_key,
    phase_included,
)
from nncompress.interop.prototxt import Message, parse_file, parse_text

__all__ = ["PHASES", "CaffeNet", "Step", "from_prototxt", "from_text", "supported_types"]

PHASES = ("TRAIN", "TEST")


def supported_types() -> list[str]:
    """The layer types :class:`CaffeNet` runs, sorted.

    Example:
        >>> "DNSConvolution" in supported_types()
        True
    """
    return sorted([*BUILDERS, *INPUT_TYPES, *COMPRESSION_TYPES])


@dataclass
class Step:
    """One layer of the net, as run: its spec, the module key (if it holds blobs) and its op."""

    spec: LayerSpec
    key: str | None
    op: Op | None
    phases: tuple[str, ...]


class CaffeNet(nn.Module):
    """A Caffe net as a PyTorch module.

    Args:
        net: the parsed net prototxt.
        input_shape: the shape of one example of a Data layer's first top, e.g. ``(1, 28, 28)``
            (Data layers read LMDB files in Caffe; here the data comes from elsewhere). Input and
            DummyData layers carry their own shapes.
        seed: seed of the weight fillers.

    Raises:
        ConfigError: an unknown layer type (naming the layer, its type and the supported types),
            a bottom no earlier layer produces, a layer name used twice in one phase, a blob
            beyond the size bound, or a missing input shape.
        PrototxtError: a layer parameter is malformed, unknown, or out of range (with
            file:line:column; the checks and bounds are in :mod:`.caffe_checks`).
    """

    def __init__(self, net: Message, input_shape: Sequence[int] | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.net_name = net.get_str("name", "") or ""
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.specs = layer_specs(net)
        check_layers(net, self.specs, PHASES)
        self.steps: list[Step] = []
        self.keys: dict[str, str] = {}  # Caffe layer name -> child module name
        self.outputs: dict[str, str | None] = {}  # phase -> the blob net(x) returns
        self.inputs: dict[str, str | None] = {}  # phase -> the blob net(x) takes
        self._key_types: dict[str, str] = {}
        self.input_transform: nn.Module | None = None  # how data is scored (converted files)
        self._build(torch.Generator().manual_seed(seed))

    # -- building -----------------------------------------------------------------------------
    def _build(self, gen: torch.Generator) -> None:
        for spec in self.specs:
            if spec.type not in BUILDERS and spec.type not in INPUT_TYPES:
                raise ConfigError(
                    f"{spec.where}: layer '{spec.name}' has type '{spec.written_type}', which is "
                    f"not supported; supported types: {', '.join(supported_types())}")
        built: dict[int, Step] = {}
        for phase in PHASES:
            shapes: dict[str, tuple[int, ...]] = {}
            for index, spec in enumerate(self.specs):
                if not phase_included(spec, phase):
                    continue
                check_bottoms(spec, shapes, phase)
                step = built.get(index) or self._build_step(spec, shapes, gen)
                built[index] = step
                step.phases += (phase,)
                self._infer(step, shapes, phase)
            self.inputs[phase] = next((s.tops[0] for i, s in enumerate(self.specs)
                                       if i in built and phase in built[i].phases
                                       and s.type in INPUT_TYPES and s.tops), None)
            self.outputs[phase] = self._output_blob(phase, built)
        self.steps = [built[i] for i in sorted(built)]

    def _build_step(self, spec: LayerSpec, shapes: Mapping[str, tuple[int, ...]],
                    gen: torch.Generator) -> Step:
        if spec.type in INPUT_TYPES:
            return Step(spec, None, None, ())
        built = BUILDERS[spec.type](spec, [shapes[b] for b in spec.bottoms], gen)
        key = None
        if built.module is not None:
            key = self._shared_key(spec) or module_key(spec.name, set(dir(self)) |
                                                       set(self._modules))
            if key not in self._modules:
                self.add_module(key, built.module)
                self._key_types[key] = spec.type
            self.keys[spec.name] = key
        return Step(spec, key, built.op, ())

    def _shared_key(self, spec: LayerSpec) -> str | None:
        """Caffe shares a layer's blobs between the TRAIN and TEST nets by layer name."""
        key = self.keys.get(spec.name)
        if key is not None:
            previous = self._key_types[key]
            if previous != spec.type:
                raise ConfigError(f"{spec.where}: two layers are named '{spec.name}' with "
                                  f"different types ({previous}, {spec.type})")
        return key

    def _infer(self, step: Step, shapes: dict[str, tuple[int, ...]], phase: str) -> None:
        spec = step.spec
        if spec.type in INPUT_TYPES:
            for i, top in enumerate(spec.tops):
                shapes[top] = input_blob_shape(spec, i, self.input_shape)
                check_blob_size(spec, top, dummy_blob(spec, i, None) if spec.type == "DummyData"
                                else shapes[top])
            return
        with torch.no_grad():
            xs = [torch.zeros((2, *shapes[b][1:])) if shapes[b] else torch.zeros(())
                  for b in spec.bottoms]
            if spec.type in LABEL_TYPES:
                xs[1:] = [torch.zeros(x.shape, dtype=torch.int64) for x in xs[1:]]
            if spec.type in (*LOSS_TYPES, "Accuracy") and xs and xs[0].is_meta:
                # built on the meta device (a file's shape check): scalar tops, no values to count
                shapes.update({top: () for top in spec.tops})
                return
            module = self._modules.get(step.key) if step.key else None
            was_training = module.training if module is not None else False
            if module is not None:
                module.eval()
            try:
                assert step.op is not None
                outs = step.op(module, xs, False)
            except (RuntimeError, ValueError, IndexError) as exc:
                raise ConfigError(f"{spec.where}: layer '{spec.name}' ({spec.type}) cannot take "
                                  f"bottoms of shapes {[list(shapes[b]) for b in spec.bottoms]}: "
                                  f"{exc}") from None
            finally:
                if module is not None:
                    module.train(was_training)
        for top, out in zip(spec.tops, outs):
            shapes[top] = (1, *out.shape[1:]) if out.dim() else ()
            check_blob_size(spec, top, shapes[top])

    def _output_blob(self, phase: str, built: Mapping[int, Step]) -> str | None:
        """The scores: the first bottom of the Accuracy or loss layer that scores the labels,
        the deepest such head when there are several (auxiliary heads come earlier)."""
        active = [s for i, s in enumerate(self.specs) if i in built and phase in built[i].phases]
        labels = {s.tops[1] for s in active if s.type in INPUT_TYPES and len(s.tops) > 1}
        made_at = {t: i for i, s in enumerate(active) for t in s.tops}
        heads = [s for s in active if s.type in (*LOSS_TYPES, "Accuracy") and s.bottoms
                 and (len(s.bottoms) < 2 or not labels or s.bottoms[1] in labels)]
        if heads:
            return max(heads, key=lambda s: made_at.get(s.bottoms[0], -1)).bottoms[0]
        consumed = {b for s in active for b in s.bottoms}
        tops = [t for s in active if s.type not in INPUT_TYPES for t in s.tops
                if t not in consumed]
        return tops[-1] if tops else None

    # -- running ------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        """``TRAIN`` in training mode, ``TEST`` in eval mode."""
        return "TRAIN" if self.training else "TEST"

    def run(self, blobs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the layers of the current phase on the given input blobs.

        Layers whose inputs were not given (for example the loss when no label is fed) are
        skipped. DummyData layers fill their tops when not given.

        Args:
            blobs: input blobs by name, e.g. ``{"data": x, "label": y}``.

        Returns:
            Every blob computed, by name (in-place tops hold the last value).
        """
        phase = self.phase
        values = dict(blobs)
        missing: set[str] = set()
        for step in self.steps:
            if phase not in step.phases:
                continue
            spec = step.spec
            if spec.type in INPUT_TYPES:
                self._feed_input(spec, values, missing)
                continue
            if any(b in missing for b in spec.bottoms):
                missing.update(spec.tops)
                continue
            module = self._modules[step.key] if step.key else None
            assert step.op is not None
            for top, out in zip(spec.tops, step.op(module, [values[b] for b in spec.bottoms],
                                                   self.training)):
                values[top] = out
        return values

    def _feed_input(self, spec: LayerSpec, values: dict[str, torch.Tensor],
                    missing: set[str]) -> None:
        for i, top in enumerate(spec.tops):
            if top in values:
                continue
            if spec.type == "DummyData":
                values[top] = self._dummy(spec, i)
            else:
                missing.add(top)

    def _dummy(self, spec: LayerSpec, index: int) -> torch.Tensor:
        p = spec.msg.message("dummy_data_param") or Message(where=spec.where)
        fillers = p.messages("data_filler")
        filler = (fillers[index] if len(fillers) > 1 else fillers[0]) if fillers else None
        out = torch.empty(tuple(dummy_blob(spec, index, None)))
        generator = self.__dict__.setdefault("_dummy_gen", torch.Generator().manual_seed(0))
        fill(out, filler, generator, spec)
        return out

    def losses(self, values: Mapping[str, torch.Tensor]) -> dict[str, tuple[float, torch.Tensor]]:
        """The weighted loss tops of the current phase: ``{top: (loss_weight, value)}``."""
        out: dict[str, tuple[float, torch.Tensor]] = {}
        for step in self.steps:
            spec = step.spec
            if self.phase not in step.phases:
                continue
            default = 1.0 if spec.type in LOSS_TYPES else 0.0
            for i, top in enumerate(spec.tops):
                weight = spec.loss_weights[i] if i < len(spec.loss_weights) else default
                if weight and top in values:
                    out[top] = (weight, values[top])
        return out

    def net_outputs(self) -> list[str]:
        """Blobs of the current phase that no layer reads (Caffe prints these)."""
        active = [s.spec for s in self.steps if self.phase in s.phases]
        consumed = {b for s in active for b in s.bottoms}
        return list(dict.fromkeys(t for s in active if s.type not in INPUT_TYPES
                                  for t in s.tops if t not in consumed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scores for input ``x``: the output blob (see :meth:`_output_blob`); ``N x C x 1
        x 1`` scores of fully convolutional nets come as ``N x C``."""
        source, target = self.inputs[self.phase], self.outputs[self.phase]
        if source is None or target is None:
            raise ConfigError(f"net '{self.net_name}' has no input or output blob in the "
                              f"{self.phase} phase")
        out = self.run({source: x})[target]
        squeeze = out.dim() > 2 and all(d == 1 for d in out.shape[2:])
        return out.reshape(out.shape[:2]) if squeeze else out

    def compression(self) -> dict[str, Compression]:
        """Module name -> the DNS/INQ parameters of the layers written as DNS/INQ types."""
        return {s.key: s.spec.compression for s in self.steps
                if s.key is not None and s.spec.compression is not None}


def from_prototxt(path: str | Path, input_shape: Sequence[int] | None = None,
                  seed: int = 0) -> CaffeNet:
    """Build a :class:`CaffeNet` from a net prototxt file.

    Args:
        path: the ``*.prototxt`` net file.
        input_shape: the shape of one example for Data layers, e.g. ``(1, 28, 28)``.
        seed: seed of the weight fillers.

    Returns:
        The net, in training mode, with weights from its fillers.

    Raises:
        FormatError: the file is missing (naming the path) or malformed (file:line:column).
        ConfigError: see :class:`CaffeNet`.

    Example:
        >>> net = from_prototxt("lenet.prototxt", input_shape=(1, 28, 28))  # doctest: +SKIP
    """
    return CaffeNet(parse_file(path, "net prototxt"), input_shape=input_shape, seed=seed)


def from_text(text: str, input_shape: Sequence[int] | None = None, seed: int = 0,
              transform: dict[str, Any] | None = None, output: str | None = None) -> CaffeNet:
    """Build a :class:`CaffeNet` from net prototxt text (how compact files record a Caffe net).

    Args:
        text: the net prototxt.
        input_shape: the shape of one example for Data layers.
        seed: seed of the weight fillers.
        transform: the input transform the net is scored with (``CaffeTransform.to_json``);
            kept as its ``input_transform``.
        output: the blob ``net(x)`` returns in the TEST phase, instead of the scored one.

    Example:
        >>> net = from_text('input: "x" input_shape { dim: 1 dim: 3 } '
        ...                 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
        ...                 'inner_product_param { num_output: 2 } }')
        >>> net(torch.zeros(4, 3)).shape
        torch.Size([4, 2])
    """
    net = CaffeNet(parse_text(text, "<net text>"), input_shape=input_shape, seed=seed)
    if transform is not None:
        from nncompress.interop.transform import CaffeTransform

        net.input_transform = CaffeTransform.from_json(transform)
    if output is not None:
        net.outputs["TEST"] = output
    return net
