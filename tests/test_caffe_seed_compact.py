"""The seed's compact files (SPEC §7): exact bytes of a hand example, a slow reference reader,
both variants' round trips, the variant chosen by the file, and the CLI on a trained LeNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nncompress as nnc
from nncompress.cli import main
from nncompress.errors import ConfigError, FormatError
from nncompress.interop.caffe_net import from_text
from nncompress.interop.caffemodel import read_caffemodel, write_caffemodel
from nncompress.interop.seed_compact import decode_blobs, encode_blob
from nncompress.interop.weights import net_blobs

FIXTURES = Path(__file__).parents[1].parent / "shared" / "fixtures" / "caffe" / "mnist"


def _reference_read(data: bytes, sizes: list[int], gap_bits: int) -> list[np.ndarray]:
    """The layout read entry by entry, as the seed's C++ decoder walks it."""
    out, pos = [], 0
    for numel in sizes:
        n = int.from_bytes(data[pos:pos + 4], "little", signed=True)
        book = np.frombuffer(data[pos + 4:pos + 68], "<f4")
        pos += 68
        half = (n + 1) // 2
        codes, gaps = [], []
        for i in range(n):
            byte = data[pos + i // 2]
            codes.append(byte >> 4 if i % 2 == 0 else byte & 15)
        pos += half
        for i in range(n):
            if gap_bits == 4:
                byte = data[pos + i // 2]
                gaps.append(byte >> 4 if i % 2 == 0 else byte & 15)
            else:
                gaps.append(data[pos + i])
        pos += half if gap_bits == 4 else 2 * half
        blob, index = np.zeros(numel, np.float32), -1
        for code, gap in zip(codes, gaps):
            index += gap + 1
            blob[index] = book[code]
        out.append(blob)
    assert pos == len(data)
    return out


def test_hand_example_bytes_with_a_filler() -> None:
    values = np.zeros(40, np.float32)
    values[1], values[20] = 0.5, -0.25
    data = encode_blob(values, 4)
    book = np.zeros(16, np.float32)
    book[1:3] = [-0.25, 0.5]
    # entries (gap 1, code 2), filler (gap 15, code 0), (gap 2, code 1)
    assert data == (np.array([3], "<i4").tobytes() + book.tobytes()
                    + bytes([0x20, 0x10]) + bytes([0x1F, 0x20]))
    data8 = encode_blob(values, 8)
    assert data8 == (np.array([2], "<i4").tobytes() + book.tobytes() + bytes([0x21])
                     + bytes([1, 18]))


def _blobs(seed: int) -> list[np.ndarray]:
    gen = np.random.default_rng(seed)
    levels = np.array([-(2.0 ** -e) for e in range(1, 8)] + [2.0 ** -e for e in range(1, 8)])
    out = []
    for numel, density in ((700, 0.01), (300, 0.3), (50, 0.0), (1, 1.0), (600, 0.002)):
        blob = np.where(gen.random(numel) < density, gen.choice(levels, numel), 0.0)
        out.append(blob.astype(np.float32))
    gaps = np.zeros(600, np.float32)  # gaps of exactly 16, 17, 256 and 257 positions
    for index in (15, 32, 288, 545):
        gaps[index] = 0.125
    out.append(gaps)
    return out


@pytest.mark.parametrize("gap_bits", [4, 8])
def test_round_trip_matches_the_reference_reader(gap_bits: int) -> None:
    blobs = _blobs(gap_bits)
    data = b"".join(encode_blob(b, gap_bits) for b in blobs)
    sizes = [b.size for b in blobs]
    reference = _reference_read(data, sizes, gap_bits)
    decoded, bits = decode_blobs(data, [(f"b{i}", n) for i, n in enumerate(sizes)])
    assert bits == gap_bits
    for original, ref, got in zip(blobs, reference, decoded):
        assert np.array_equal(ref, original) and np.array_equal(got, original)


def test_a_file_that_fits_no_variant_says_why() -> None:
    blobs = _blobs(0)
    data = b"".join(encode_blob(b, 4) for b in blobs)
    sizes = [(f"b{i}", b.size) for i, b in enumerate(blobs)]
    with pytest.raises(FormatError, match=r"not a seed compact file for this net.*4-bit"):
        decode_blobs(data[:-1], sizes)
    with pytest.raises(FormatError, match="bytes are left over"):
        decode_blobs(data + b"\0" * 3, sizes, gap_bits=4)
    with pytest.raises(ConfigError, match="16 distinct non-zero values; the seed's format"):
        encode_blob(np.arange(1, 17, dtype=np.float32), 4, "layer 'ip' weight")


SMALL = """name: "small"
input: "data" input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
"""


def _quantized(text: str, shape: tuple[int, ...] | None = None) -> torch.nn.Module:
    net = from_text(text, input_shape=shape, seed=2)
    nnc.prepare(net, nnc.INQConfig(num_quantum_values=7, include_bias=True))
    nnc.quantize_step(net, 1.0)
    return nnc.finalize(net)


@pytest.mark.parametrize("gap_bits", ["4", "8"])
def test_cli_round_trip_through_caffemodel_and_ncz(tmp_path: Path, gap_bits: str) -> None:
    net = _quantized(SMALL)
    (tmp_path / "net.prototxt").write_text(SMALL)
    write_caffemodel(tmp_path / "q.caffemodel", net_blobs(net), "small")  # type: ignore[arg-type]
    binary = tmp_path / "q.binary"
    assert main(["caffe", "encode-compact", str(tmp_path / "net.prototxt"),
                 str(tmp_path / "q.caffemodel"), "-o", str(binary), "--gap-bits", gap_bits]) == 0
    for out in ("back.caffemodel", "back.ncz"):
        assert main(["caffe", "decode-compact", str(tmp_path / "net.prototxt"), str(binary),
                     "-o", str(tmp_path / out)]) == 0
    back = {e.name: e.blobs for e in read_caffemodel(tmp_path / "back.caffemodel")}
    for entry in read_caffemodel(tmp_path / "q.caffemodel"):
        assert all(np.array_equal(a, b) for a, b in zip(entry.blobs, back[entry.name]))
    from nncompress.export import load_compact

    model = load_compact(tmp_path / "back.ncz")
    for (k, v), w in zip(net.state_dict().items(), model.state_dict().values()):
        assert torch.equal(v, w), k


def test_unquantized_weights_are_refused_by_the_encoder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "net.prototxt").write_text(SMALL)
    write_caffemodel(tmp_path / "w.caffemodel", net_blobs(from_text(SMALL)), "small")
    assert main(["caffe", "encode-compact", str(tmp_path / "net.prototxt"),
                 str(tmp_path / "w.caffemodel"), "-o", str(tmp_path / "w.binary")]) == 1
    assert "layer 'conv1' weight has 36 distinct non-zero values" in capsys.readouterr().err
    assert not (tmp_path / "w.binary").exists()


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared Caffe fixtures absent")
def test_trained_seed_lenet_round_trips_in_both_variants(tmp_path: Path) -> None:
    from nncompress.interop.solver_train import train_from_solver

    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{FIXTURES / "lenet_train_test_inq_100.prototxt"}"\n'
                      'base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: 2 '
                      'snapshot_prefix: "lenet_inq" random_seed: 1\n')
    result = train_from_solver(solver, data="synthetic:n=128,test=10", out_dir=tmp_path,
                               log=lambda s: None)
    plain = result.snapshots[0]
    net = FIXTURES / "lenet_train_test.prototxt"
    for bits in ("4", "8"):
        binary = tmp_path / f"lenet{bits}.binary"
        assert main(["caffe", "encode-compact", str(net), str(plain), "-o", str(binary),
                     "--gap-bits", bits, "--input-shape", "1,28,28"]) == 0
        out = tmp_path / f"back{bits}.caffemodel"
        assert main(["caffe", "decode-compact", str(net), str(binary), "-o", str(out),
                     "--input-shape", "1,28,28"]) == 0
        back = {e.name: e.blobs for e in read_caffemodel(out)}
        for entry in read_caffemodel(plain):
            assert all(np.array_equal(a, b) for a, b in zip(entry.blobs, back[entry.name]))
