"""Property tests: rounding and mask updates agree with the references on arbitrary floats."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nncompress import dns, inq
from tests.test_dns import reference_update
from tests.test_inq import reference_level_range, reference_round

finite32 = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite32, min_size=1, max_size=64), st.integers(min_value=1, max_value=12))
@example(values=[1.1774410346489275e-39], k=6)  # levels would reach below 2^-133
@example(values=[3e38], k=8)  # 4/3 of it is beyond float32: n1 stops at 127
def test_quantize_matches_reference(values: list[float], k: int) -> None:
    tensor = torch.tensor(values, dtype=torch.float32)
    peak = float(tensor.abs().max())
    if peak == 0:
        return
    n1, n2 = inq.level_range(peak, k)
    paper_n1, _ = reference_level_range(peak, k)
    # Exponents stay where bfloat16 holds every power of two exactly: 2^-133 ... 2^127.
    expected_n1 = min(max(paper_n1, -133), 127)
    assert (n1, n2) == (expected_n1, max(expected_n1 - k + 1, -133))
    assert inq.quantize(tensor, n1, n2).tolist() == [reference_round(v, n1, n2) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite32, st.booleans()), min_size=1, max_size=64),
       st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=2))
def test_update_mask_matches_reference(entries: list[tuple[float, bool]], low: float,
                                       band: float) -> None:
    weights = [w for w, _ in entries]
    mask = torch.tensor([t for _, t in entries])
    high = low * (1 + band)
    expected = reference_update(weights, mask.tolist(), low, high)
    dns.update_mask(torch.tensor(weights, dtype=torch.float32), mask, low, high)
    assert mask.tolist() == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=10, width=32), min_size=1, max_size=50),
       st.data())
def test_select_largest_takes_exactly_count(keys: list[float], data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=0, max_value=len(keys)))
    chosen = inq.select_largest(torch.tensor(keys), count)
    order = sorted(range(len(keys)), key=lambda i: (-np.float32(keys[i]), i))[:count]
    assert sorted(np.flatnonzero(chosen.numpy()).tolist()) == sorted(order)
