"""What the golden file scripts share: the tensor digest, the format version 1 writer, the
writer of a set of golden files with their expected digests, and the model with a chain of dead
neurons (also used by ``tests/test_compact_context.py``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nncompress as nnc
from nncompress._io import atomic_write_bytes
from nncompress.export import save_compact
from nncompress.export._codec import encode_tensor
from nncompress.export._container import FORMAT_NAME, pack
from nncompress.export.compact import as_version2
from nncompress.models import architecture, build_model

# how the golden BatchNorm1d(3) files are saved: its architecture and float16 storage
BN_KWARGS: dict[str, Any] = {"arch": {"ref": "torch.nn:BatchNorm1d",
                                      "kwargs": {"num_features": 3}},
                             "float_dtype": "float16"}


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's raw little-endian bytes."""
    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                          ).hexdigest()


def chain_model(seed: int, hidden: int, dead: float, keep: float) -> nn.Module:
    """tiny_mlp(input_size=8, hidden), 5-bit INQ: a fraction ``dead`` of fc1's neurons dead
    (weights and bias) and fc2's inputs from them too, ``keep`` of fc1's weights kept."""
    torch.manual_seed(seed)
    model = build_model("tiny_mlp", input_size=8, hidden=hidden)
    dead_rows = torch.rand(hidden) < dead
    with torch.no_grad():
        model.fc1.weight.mul_(torch.rand_like(model.fc1.weight) < keep)
        model.fc1.weight[dead_rows] = 0
        model.fc1.bias[dead_rows] = 0
        model.fc2.weight[:, dead_rows] = 0
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=8))
    nnc.quantize_step(model, 1.0)
    return nnc.finalize(model)


def save_v1(model: nn.Module, path: Path, *, arch: dict[str, Any] | None = None,
            float_dtype: str = "float32") -> None:
    """Save a finalized model as format version 1, as nncompress 0.1.0 wrote it: two streams
    per tensor (positions, values), each coded on its own, and no ``coded`` shared stream."""
    metas, streams = [], []
    for name, tensor in model.state_dict().items():
        enc = encode_tensor(name, tensor.detach().cpu(), float_dtype)
        metas.append(enc.meta | {"bytes": [len(enc.positions), len(enc.values)]})
        streams += [enc.positions, enc.values]
    meta = {"format": FORMAT_NAME, "arch": arch or architecture(model),
            "float_dtype": float_dtype, "writer": "nncompress 0.1.0", "tensors": metas}
    atomic_write_bytes(path, pack(meta, streams))  # version 1: the metadata has no "coded"


def write_golden(folder: Path, files: list[tuple[str, nn.Module, dict[str, Any]]],
                 expected: str, version: int) -> None:
    """Save each ``(file name, model, save_compact keyword arguments)`` into ``folder`` in
    format ``version`` (3: :func:`save_compact`; 2: its file rewritten with version 2's JSON
    metadata; 1: :func:`save_v1`) and write the digests of the state each file loads back as
    the JSON file ``expected``."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, model, kwargs in files:
        if version == 1:
            save_v1(model, folder / name, **kwargs)
        else:
            save_compact(model, folder / name, **kwargs)
        if version == 2:
            atomic_write_bytes(folder / name, as_version2((folder / name).read_bytes(), name))
        state = model.state_dict()
        if kwargs.get("float_dtype") == "float16":  # what a float16 file gives back
            state = {k: v.half().to(v.dtype) if v.is_floating_point() else v
                     for k, v in state.items()}
        # zeros are stored without their sign: -0.0 (a pruned negative weight) loads as 0.0
        state = {k: torch.where(v == 0, torch.zeros_like(v), v) for k, v in state.items()}
        digests[name] = {k: tensor_digest(v) for k, v in state.items()}
    (folder / expected).write_text(json.dumps(digests, indent=1) + "\n")
