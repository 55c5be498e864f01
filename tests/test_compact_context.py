"""Live columns coded against the previous layer's live rows (format version 2, ``cols_ctx``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nncompress.export._tensors as tensors_module
from nncompress.errors import FormatError
from nncompress.export import load_compact, save_compact
from nncompress.export._container import pack, parse
from nncompress.export._context import candidates, columns_of, context_of, with_context
from tests.compact_crafting import as_version2
from tests.data._golden_common import chain_model


def test_candidates_follow_the_previous_rows() -> None:
    # a conv layer of 3 input channels x 2x2 kernels after a layer whose rows 0 and 2 are live
    likely, others = candidates(np.array([0, 2]), 4, 12)
    assert likely.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert others.tolist() == [4, 5, 6, 7]
    cols = np.array([1, 5, 8, 11])
    flags = with_context(cols, np.array([0, 2]), 4, 12)
    assert [f.tolist() for f in flags] == [[0, 1, 0, 0, 1, 0, 0, 1], [0, 1, 0, 0]]
    assert columns_of(*flags, np.array([0, 2]), 4, 12).tolist() == cols.tolist()


def test_the_previous_layer_is_the_nearest_earlier_matrix() -> None:
    weight = {"shape": [6, 10], "rows": 3}
    bias = {"shape": [6]}
    assert context_of([weight, bias], {"shape": [4, 6]}) == (0, 1)
    assert context_of([weight, bias], {"shape": [4, 12, 3, 3]}) == (0, 18)
    assert context_of([weight, bias], {"shape": [4, 7]}) is None  # 6 rows do not divide 7
    assert context_of([{"shape": [6, 10]}, bias], {"shape": [4, 6]}) is None  # no row set
    assert context_of([bias], {"shape": [4, 6]}) is None


def _chain() -> torch.nn.Module:
    return chain_model(seed=0, hidden=200, dead=0.8, keep=0.1)


def test_columns_after_dead_neurons_cost_almost_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model = _chain()
    info = save_compact(model, tmp_path / "ctx.ncz")
    meta, _ = parse(as_version2((tmp_path / "ctx.ncz").read_bytes()))
    fc2 = meta["tensors"][2]
    assert fc2["name"] == "fc2.weight" and fc2.get("cols_ctx") is True
    loaded = load_compact(tmp_path / "ctx.ncz")
    for (name, want), got in zip(model.state_dict().items(), loaded.state_dict().values(),
                                 strict=True):
        assert torch.equal(torch.where(want == 0, 0.0, want), got), name
    monkeypatch.setattr(tensors_module, "_use_context", lambda plans: None)
    plain = save_compact(model, tmp_path / "plain.ncz")
    assert "cols_ctx" not in parse((tmp_path / "plain.ncz").read_bytes())[0]["tensors"][2]
    # fc2's ~40 live columns of 200: a gap-coded set without the context
    assert info.tensors[2].position_bytes + 15 < plain.tensors[2].position_bytes
    assert info.file_bytes < plain.file_bytes


def _load_edited(tmp_path: Path, data: bytes, edit: object) -> str:
    meta, body = parse(as_version2(data))  # JSON metadata: any field takes any value
    edit(meta)  # type: ignore[operator]
    coded, rest = body[:meta["coded"]], body[meta["coded"]:]
    (tmp_path / "e.ncz").write_bytes(pack(meta, [coded, rest]))
    with pytest.raises(FormatError) as err:
        load_compact(tmp_path / "e.ncz")
    return str(err.value)


def test_a_context_the_metadata_cannot_support_is_a_format_error(tmp_path: Path) -> None:
    save_compact(_chain(), tmp_path / "m.ncz")
    data = (tmp_path / "m.ncz").read_bytes()

    def no_rows(meta: dict) -> None:  # type: ignore[type-arg]
        del meta["tensors"][0]["rows"]
    assert "'cols_ctx' without a previous layer" in _load_edited(tmp_path, data, no_rows)

    def not_true(meta: dict) -> None:  # type: ignore[type-arg]
        meta["tensors"][2]["cols_ctx"] = 1
    assert "cols_ctx (tensor 'fc2.weight') is 1, expected true" in _load_edited(
        tmp_path, data, not_true)

    def more_cols(meta: dict) -> None:  # type: ignore[type-arg]
        meta["tensors"][2]["cols"] += 1
    # the sub-matrix grows: the stream no longer decodes to what the metadata says
    message = _load_edited(tmp_path, data, more_cols)
    assert "coded stream" in message or "live columns decoded" in message
