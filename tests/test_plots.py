"""Plots of a run folder: one PNG per plot, of the expected size, with the expected content."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nncompress.cli import main
from nncompress.cli.plot import plots_after_run
from nncompress.errors import FormatError
from nncompress.report import build_report, write_report
from nncompress.report.plots import read_metrics, write_plots

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

BLUE, RED = (31, 119, 180), (214, 39, 40)  # matplotlib's tab:blue and tab:red


def _run_folder(tmp_path: Path, *, pow2: bool = True, weights: bool = True) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    rows = [("reference", 0, 0, it, 2.0 / it, 0.5 + it / 100, 1.0, 0.01) for it in (5, 10)]
    rows += [("dns", 1, 0, it, 1.0 / it, 0.7, 0.3, 0.005) for it in (4, 8)]
    rows += [("inq", 2, s, 3, 0.2, 0.8, 0.3, 0.001) for s in (0, 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps({
        "stage": st, "stage_index": si, "step": step, "iteration": it, "loss": loss,
        "eval_loss": loss * 1.1, "accuracy": acc, "kept_fraction": kept, "lr": lr,
        "split": "val"}) + "\n" for st, si, step, it, loss, acc, kept, lr in rows))
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in (("fc1", (16, 32)), ("fc2", (4, 16))):
        w = torch.randn(shape, generator=gen) * 0.1
        w = w * (torch.rand(shape, generator=gen) < 0.3)
        if pow2:
            w = torch.sign(w) * 2.0 ** torch.round(torch.log2(w.abs().clamp_min(2.0 ** -8)))
            w = w * (w.abs() > 2.0 ** -8)
        state[f"{name}.weight"] = w.contiguous()
        state[f"{name}.bias"] = torch.zeros(shape[0])
    layers = [{"name": n, "layer_type": "Linear", "mode": "plain",
               "entries": state[f"{n}.weight"].numel(),
               "kept": int(state[f"{n}.weight"].count_nonzero()), "levels": 9 if pow2 else None,
               "bits": b, "fixed_fraction": 1.0} for n, b in (("fc1", 5), ("fc2", 4))]
    write_report(run / "report.json", build_report(layers, test={"loss": 0.2, "accuracy": 0.9}))
    if weights:
        from safetensors.torch import save_file

        save_file(state, str(run / "model.safetensors"))
    return run


def _pixels(path: Path) -> tuple[tuple[int, int], np.ndarray]:
    image = Image.open(path).convert("RGB")
    return image.size, np.asarray(image, dtype=np.int64).reshape(-1, 3)


def _share(pixels: np.ndarray, color: tuple[int, int, int]) -> float:
    return float((np.abs(pixels - np.array(color)).sum(1) < 40).mean())


@pytest.mark.slow  # matplotlib renders: seconds on a busy machine
def test_one_file_per_plot_with_real_content(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    written = write_plots(run)
    assert [p.name for p in written] == ["curves.png", "kept.png", "histograms.png", "bits.png"]
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(p.name for p in written)
    sizes = {"curves.png": (1000, 700), "kept.png": (500, 400), "histograms.png": (800, 300),
             "bits.png": (500, 400)}
    for path in written:
        size, pixels = _pixels(path)
        assert size == sizes[path.name]
        non_white = float((pixels != 255).any(1).mean())
        assert non_white > 0.02, path.name  # axes, text and data, not a blank canvas
        assert _share(pixels, BLUE) > 0.001, path.name  # the data are drawn
    _, histogram = _pixels(run / "plots" / "histograms.png")
    assert _share(histogram, RED) > 0.0005  # INQ levels marked


@pytest.mark.slow  # matplotlib renders: seconds on a busy machine
def test_no_level_marks_without_powers_of_two(tmp_path: Path) -> None:
    run = _run_folder(tmp_path, pow2=False)
    write_plots(run, tmp_path / "out")
    _, histogram = _pixels(tmp_path / "out" / "histograms.png")
    assert _share(histogram, RED) == 0.0
    assert _share(histogram, BLUE) > 0.001


@pytest.mark.slow  # matplotlib renders: seconds on a busy machine
def test_without_weights_there_is_no_histogram(tmp_path: Path) -> None:
    run = _run_folder(tmp_path, weights=False)
    assert [p.name for p in write_plots(run)] == ["curves.png", "kept.png", "bits.png"]


def test_metrics_laid_end_to_end(tmp_path: Path) -> None:
    rows = read_metrics(_run_folder(tmp_path) / "metrics.jsonl")
    assert [r["run_iteration"] for r in rows] == [5, 10, 14, 18, 21, 24]
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"iteration": 1}\n[1, 2]\n')
    with pytest.raises(FormatError, match="line 2: not a metrics record"):
        read_metrics(bad)


@pytest.mark.slow  # matplotlib renders: seconds on a busy machine
def test_cli_plot_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path)
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"plots:       none yet (nncompress plot {run})")
    assert main(["plot", str(run), "-o", str(tmp_path / "elsewhere")]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "elsewhere" / f"{n}.png") for n in ("curves", "kept", "histograms", "bits")]
    assert plots_after_run(run) == (
        f"plots:       {run / 'plots'} (curves.png, kept.png, histograms.png, bits.png)")
    capsys.readouterr()
    assert main(["report", str(run), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == json.loads((run / "report.json").read_text())
    assert out.err.strip() == (
        f"plots:       {run / 'plots'} (curves.png, kept.png, histograms.png, bits.png)")


def test_without_matplotlib_plot_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert main(["plot", str(run)]) == 1
    assert "pip install nncompress[plot]" in capsys.readouterr().err
    assert not (run / "plots").exists()


def test_plot_of_a_folder_that_is_not_a_run(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path)]) == 1
    assert "no metrics here" in capsys.readouterr().err
    assert plots_after_run(tmp_path) is None
