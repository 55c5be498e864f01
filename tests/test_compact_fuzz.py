"""Mutated .ncz files: every one loads or raises an NNCompressError; nothing else escapes.

Raw corruption (bit flips, truncation, splices: the checksum catches them), bodies edited
with a recomputed checksum (the decoders catch them), and crafted files whose metadata or
streams were edited field by field (the schema, the budget and the guarded build catch them;
see ``test_compact_crafted``).
"""

from __future__ import annotations

import random
import resource
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from nncompress.errors import NNCompressError
from nncompress.export._container import parse
from nncompress.export._meta_binary import varint
from nncompress.export.compact import _load
from tests.compact_crafting import base_files, body_start, crafted_cases, crafted_v3_cases


def _flip_bits(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data


def _truncate(data: bytearray, rng: random.Random) -> bytearray:
    return data[: rng.randrange(len(data))]


def _splice(data: bytearray, rng: random.Random) -> bytearray:
    at = rng.randrange(len(data))
    if rng.random() < 0.5:
        return data[:at] + bytearray(rng.randbytes(rng.randint(1, 8))) + data[at:]
    return data[:at] + data[at + rng.randint(1, 8):]


def _body_with_valid_checksum(data: bytearray, rng: random.Random) -> bytearray:
    """Corrupt the body and fix length and CRC, so the decoders themselves are exercised."""
    v3 = data[4] == 3
    body = data[body_start(data):]
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(body))
        body[at] = rng.randrange(256) if rng.random() < 0.5 else body[at] ^ (1 << rng.randrange(8))
    if rng.random() < 0.2:
        body = _splice(body, rng)
    crc = zlib.crc32(body).to_bytes(4, "little")
    if v3:
        return data[:6] + crc + bytearray(varint(len(body))) + body
    return data[:8] + len(body).to_bytes(8, "little") + crc + body


_MUTATIONS: list[Callable[[bytearray, random.Random], bytearray]] = [
    _flip_bits, _truncate, _splice, _body_with_valid_checksum, _body_with_valid_checksum]


@pytest.mark.slow
def test_thousands_of_mutations_raise_only_nncompress_errors(tmp_path: Path) -> None:
    files = base_files(tmp_path)
    # format version 2, version 1 and version 3 files
    bases = [*files[:2], *files[4:], *base_files(tmp_path / "v3", 3)[:2]]
    rng = random.Random(1234)
    outcomes: Counter[str] = Counter()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(3000):
        base = bases[i % len(bases)]
        mutate = _MUTATIONS[i % len(_MUTATIONS)]
        data = bytes(mutate(bytearray(base), rng))
        try:
            meta, streams = parse(data, "fuzz")
            _load(meta, streams, "fuzz", False, len(data))
            outcomes["loaded"] += 1
        except NNCompressError as exc:
            assert str(exc)
            outcomes[type(exc).__name__] += 1
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 200_000, f"peak memory grew by {grown_kib} KiB"
    assert outcomes["FormatError"] > 2500
    # a mutated value code or float byte can still decode into a valid (different) model
    assert outcomes["loaded"] < 300


@pytest.mark.parametrize(("base", "version", "message"), [
    ("v2", 0, "version"), ("v2", 4, "newer"), ("v2", 65535, "newer"),
    # the metadata of versions 1 and 2 is compressed with its own dictionary
    ("v2", 1, "metadata"), ("v1", 2, "metadata"),
    # the header of version 3 is shorter
    ("v2", 3, "unexpected bytes|checksum|truncated"), ("v3", 2, "unknown format version 2"),
    ("v3", 1, "unknown format version 1")])
def test_other_versions_are_rejected(tmp_path: Path, base: str, version: int,
                                     message: str) -> None:
    files = {"v2": base_files(tmp_path)[1], "v1": base_files(tmp_path)[5],
             "v3": base_files(tmp_path, 3)[1]}
    data = bytearray(files[base])
    data[4:6] = version.to_bytes(2, "little")
    with pytest.raises(NNCompressError, match=message):
        parse(bytes(data), "x")


def _load_all(files: Iterable[bytes]) -> Counter[str]:
    """Load each file: how many loaded, how many raised each error (named "fuzz")."""
    outcomes: Counter[str] = Counter()
    for data in files:
        try:
            meta, streams = parse(data, "fuzz")
            _load(meta, streams, "fuzz", False, len(data))
            outcomes["loaded"] += 1
        except NNCompressError as exc:
            assert str(exc).startswith("fuzz")
            outcomes[type(exc).__name__] += 1
    return outcomes


@pytest.mark.slow
def test_crafted_version_3_metadata_raises_only_nncompress_errors(tmp_path: Path) -> None:
    outcomes = _load_all(crafted_v3_cases(base_files(tmp_path, 3), seed=7, count=1500))
    assert outcomes["FormatError"] > 1000, outcomes
    assert outcomes["loaded"] < 300, outcomes


@pytest.mark.slow
def test_thousands_of_crafted_files_raise_only_nncompress_errors(tmp_path: Path) -> None:
    bases = base_files(tmp_path)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = _load_all(crafted_cases(bases, seed=2024, count=2000))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 200_000, f"peak memory grew by {grown_kib} KiB"
    assert set(outcomes) <= {"FormatError", "ConfigError", "loaded"}, outcomes
    assert outcomes["FormatError"] > 1500, outcomes
