"""benchmarks/reproduce.py: BENCHMARKS.md rows from real (tiny) run folders, and bad input."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import reproduce  # noqa: E402
from _bench_command import reproduce_command  # noqa: E402
from _bench_goals import GOALS, check_goal  # noqa: E402
from _bench_runs import LayerRow, RunRow, read_run, wall_time  # noqa: E402
from nncompress.errors import NNCompressError  # noqa: E402
from nncompress.pipeline import run_recipe  # noqa: E402
from nncompress.recipe import packaged_recipes, parse_recipe  # noqa: E402


def tiny_raw(name: str, c_rate: float, k: int, distill: bool = False) -> dict[str, Any]:
    """Reference -> DNS -> INQ -> finalize -> export on 8x8 synthetic data; evaluations fall on
    each stage's last iteration, on the test split (nothing held out)."""
    teacher = {"distill": {"teacher": "reference"}} if distill else {}
    train = {"batch_size": 16, "eval_interval": 4, "checkpoint_interval": 4}
    return {
        "version": 1, "name": name,
        "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
        "data": {"spec": "synthetic:n=192,test=64,size=8", "validation": 0}, "seed": 3,
        "stages": [
            {"stage": "train", "name": "reference", "iterations": 8, "lr": {"base_lr": 0.05},
             **train},
            {"stage": "dns", "iterations": 8, "defaults": {"gamma": 0.01, "c_rate": c_rate},
             **teacher, **train},
            {"stage": "inq", "portions": [0.5, 1.0], "iterations_per_step": [4, 0],
             "defaults": {"num_quantum_values": k}, **train},
            {"stage": "finalize"}, {"stage": "export", "file": "model.ncz"},
        ],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    for name, c_rate, k, distill in (("tiny_a", 0.3, 4, False), ("tiny_b", 0.8, 2, True)):
        run_recipe(parse_recipe(tiny_raw(name, c_rate, k, distill)), root / name,
                   progress="none")
    return root / "tiny_a", root / "tiny_b"


def report(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "report.json").read_text()))


def expected_result_row(folder: Path, k: int, dns: str = "dns") -> str:
    r = report(folder)
    entries, kept = r["totals"]["entries"], r["totals"]["kept"]
    nbytes = r["compact"]["bytes"]
    return (f"| tiny_mlp | `{r['recipe']}`: train → {dns} → inq K={k} | {kept:,} of {entries:,} | "
            f"{entries / kept:.1f}x | {100 * r['test']['error']:.2f}% | {nbytes:,} B | "
            f"{4 * entries / nbytes:,.0f}x |")


def expected_layer_row(folder: Path) -> str:
    r = report(folder)
    cells = [f"{100 * layer['kept'] / layer['entries']:.2f}% ({layer['bits']} b)"
             for layer in r["layers"]]
    return f"| `{r['recipe']}` | " + " | ".join(cells) + " |"


@pytest.mark.slow
def test_from_writes_the_reports_numbers(runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = runs
    out = tmp_path / "BENCHMARKS.md"
    assert reproduce.main(["--from", str(a), str(b), "--out", str(out),
                           "--no-reference-eval"]) == 0
    lines = out.read_text().splitlines()
    assert expected_result_row(a, 4) in lines
    assert expected_result_row(b, 2, "dns (distilled)") in lines
    assert expected_layer_row(a) in lines and expected_layer_row(b) in lines
    assert report(a)["totals"]["kept"] != report(b)["totals"]["kept"]  # two distinct runs
    rows = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    minutes = f"{rows[-1]['elapsed_s'] / 60:.1f} min"
    err = f"{100 * report(a)['test']['error']:.2f}%"
    ncz = f"{report(a)['compact']['bytes']:,} B"
    widths = sorted({layer["bits"] for layer in report(a)["layers"]})
    bits = f"{widths[0]}" if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"
    assert f"| `tiny_a` | `{a}` | {err} | - | {bits} | {ncz} | 0 | - | {minutes} |" in lines
    assert f"nncompress run {a}/recipe.yaml --out {a} --threads 1" in lines
    assert "| LeNet-5 | DNS (Guo, Yao, Chen, NIPS 2016) |  | 108x | 0.91% |  |  |" in lines


@pytest.mark.slow
def test_reference_error_is_the_reference_on_the_test_split(runs: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    a, _ = runs
    out = tmp_path / "B.md"
    assert reproduce.main(["--from", str(a), "--out", str(out)]) == 0
    reference = report(a)["stages"][0]
    assert reference["iteration"] == 8  # its last evaluation was at its end, on the test split
    row = next(x for x in out.read_text().splitlines() if x.startswith(f"| `tiny_a` | `{a}`"))
    assert row.split(" | ")[3] == f"{100 * (1 - reference['accuracy']):.2f}%"


@pytest.mark.slow
def test_reference_of_a_recipe_without_training_is_its_starting_weights(
        runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = runs
    raw = tiny_raw("tiny_c", 0.3, 8)
    raw["model"]["weights"] = str(a / "model.safetensors")  # run a's final model
    raw["stages"] = [{**raw["stages"][2], "portions": [1.0], "iterations_per_step": [0]},
                     *raw["stages"][3:]]
    run_recipe(parse_recipe(raw), tmp_path / "c", progress="none")
    c = read_run(tmp_path / "c")
    assert c.stages == ("inq", "finalize", "export") and c.inq_k == (8,)
    assert c.reference_error == pytest.approx(report(a)["test"]["error"], abs=1e-12)
    assert c.weights_wall_s == wall_time(a / "metrics.jsonl")[0] and c.weights_wall_s
    assert c.prerequisites == (f"nncompress run {a}/recipe.yaml --out {a} --threads 1  # makes "
                               f"{a / 'model.safetensors'}",)


@pytest.mark.slow
def test_validation_accuracy_is_the_last_evaluation_on_held_out_examples(
        runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = runs
    assert read_run(a, evaluate_reference=False).validation_accuracy is None  # none held out
    held = tmp_path / "held"
    shutil.copytree(a, held)
    recipe = yaml.safe_load((held / "recipe.yaml").read_text())
    recipe["data"]["validation"] = 32
    (held / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    evaluated = [s["accuracy"] for s in report(held)["stages"] if "accuracy" in s]
    assert len(evaluated) >= 2 and evaluated[-1] is not None
    assert read_run(held, evaluate_reference=False).validation_accuracy == evaluated[-1]


@pytest.mark.slow
def test_readme_block_and_ablation(runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = runs
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{reproduce.BEGIN}\nold table\n{reproduce.END}\n\nafter\n")
    out = tmp_path / "B.md"
    notes = tmp_path / "notes.md"
    notes.write_text("Tried: *c_rate* 0.8.\n")
    assert reproduce.main(["--from", str(a), "--out", str(out), "--readme", str(readme),
                           "--no-reference-eval", "--ablation", f"c rate 0.8={a}:{b}",
                           "--notes", str(notes)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# x\n\n{reproduce.BEGIN}\n") and text.endswith(
        f"{reproduce.END}\n\nafter\n")
    assert "old table" not in text and expected_result_row(a, 4) in text.splitlines()
    ra, rb = report(a), report(b)
    change = 100 * (rb["test"]["error"] - ra["test"]["error"])
    kept = rb["totals"]["kept"] - ra["totals"]["kept"]
    nbytes = rb["compact"]["bytes"] - ra["compact"]["bytes"]
    assert (f"| c rate 0.8 | `{a}` → `{b}` | - → - | {100 * ra['test']['error']:.2f}% → "
            f"{100 * rb['test']['error']:.2f}% | {change:+.2f} points | "
            f"{ra['totals']['kept']:,} → {rb['totals']['kept']:,} | {kept:+,} | "
            f"{ra['compact']['bytes']:,} B → {rb['compact']['bytes']:,} B | {nbytes:+,} B |"
            ) in out.read_text().splitlines()
    effect = next(x for x in out.read_text().splitlines() if x.startswith("| c rate 0.8 |"))
    assert effect in text.splitlines()  # README shows the effect of each mean too
    assert "\n## Notes\n\nTried: *c_rate* 0.8.\n\n## Commands\n" in out.read_text()


@pytest.mark.slow
def test_run_runs_then_resumes_a_finished_folder(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "tiny_a.yaml"
    file.write_text("# tuned on nothing: a test recipe\n" + yaml.safe_dump(tiny_raw(
        "tiny_a", 0.3, 4)))
    monkeypatch.setattr(reproduce, "packaged_recipes", lambda: {"tiny_a": file})
    args = ["--run", "tiny_a", "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--no-reference-eval", "--out", str(tmp_path / "B.md")]
    assert reproduce.main(args) == 0
    first = report(tmp_path / "runs" / "tiny_a")
    assert reproduce.main(args) == 0  # the finished folder resumes: same numbers
    assert report(tmp_path / "runs" / "tiny_a")["totals"] == first["totals"]
    assert expected_result_row(tmp_path / "runs" / "tiny_a", 4) in \
        (tmp_path / "B.md").read_text().splitlines()
    assert "tuned on nothing: a test recipe" in (tmp_path / "B.md").read_text()


@pytest.mark.slow
def test_a_folder_shown_as_a_run_of_a_shipped_recipe_made_under_another_name(
        runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    a, b = runs
    shipped = tmp_path / "tiny_shipped.yaml"  # tiny_a's recipe under another name
    shipped.write_text(yaml.safe_dump(tiny_raw("tiny_shipped", 0.3, 4)))
    monkeypatch.setattr(reproduce, "packaged_recipes", lambda: {"tiny_shipped": shipped})
    out = tmp_path / "B.md"
    assert reproduce.main(["--from", f"{a}=tiny_shipped", f"{b}=tiny_shipped", "--out",
                           str(out), "--no-reference-eval"]) == 0
    lines = out.read_text().splitlines()
    assert f"nncompress run {shipped} --set name=tiny_a --out {a} --threads 1" in lines
    # tiny_b differs in more than its name: each difference is a --set value
    assert any(line.startswith(f"nncompress run {shipped} --set name=tiny_b --set "
                               "stages.dns.defaults.c_rate=0.8 ") for line in lines)
    assert f"# tiny_shipped ({a})  (shipped recipe with --set values)" in lines
    assert any(line.startswith(f"| `tiny_shipped ({a})` | `{a}` |") for line in lines)
    assert reproduce.main(["--from", f"{a}=tiny_shiped", "--out", str(tmp_path / "C.md")]) == 1
    assert "'tiny_shiped' is not a shipped recipe (did you mean 'tiny_shipped'?)" in \
        capsys.readouterr().err
    assert not (tmp_path / "C.md").exists()


def test_folder_without_report_exits_1_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "half").mkdir()
    out = tmp_path / "B.md"
    assert reproduce.main(["--from", str(tmp_path / "half"), "--out", str(out)]) == 1
    assert f"{tmp_path / 'half'}: no report.json" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_recipe_exits_1_and_runs_nothing(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "B.md"
    code = reproduce.main(["--run", "lenet5_dns_inqq", "--runs-dir", str(tmp_path / "runs"),
                           "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "--run 'lenet5_dns_inqq': not a shipped recipe" in err
    assert "did you mean 'lenet5_dns_inq'" in err
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("extra", "says"), [
    (["--readme", "NOMARKERS"], f": needs one line {reproduce.BEGIN} and, after it, one line "),
    (["--ablation", "x=only_one"], "--ablation 'x=only_one': expected MEAN=RUN_A:RUN_B"),
    (["--notes", "missing.md"], "missing.md: cannot read it"),
    (["--bogus"], "unrecognized arguments: --bogus (see benchmarks/reproduce.py --help)")])
def test_bad_arguments_exit_1_and_write_nothing(tmp_path: Path, extra: list[str], says: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    extra = [str(readme) if x == "NOMARKERS" else x for x in extra]
    out = tmp_path / "B.md"
    assert reproduce.main(["--from", str(tmp_path), "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reproduce: error: ") and says in err and err.count("\n") == 1
    assert not out.exists() and readme.read_text() == "# no markers\n"


def test_wall_time_adds_the_sessions_of_a_resumed_run(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"elapsed_s": t}) + "\n" for t in (1, 5, 9, 2, 4.5)))
    assert wall_time(metrics) == (13.5, 2)
    assert wall_time(tmp_path / "missing.jsonl") == (None, 0)


def test_command_gives_the_set_values_that_rebuild_the_run() -> None:
    shipped = packaged_recipes()["lenet5_dns_inq"]
    sets = ["stages.dns.iterations=100", "stages.inq.defaults.num_quantum_values=4"]
    recipe = parse_recipe(yaml.safe_load(shipped.read_text()), overrides=sets,
                          check_registries=False)
    from nncompress.recipe import dump_recipe

    saved = yaml.safe_load(dump_recipe(recipe))
    command, note = reproduce_command("runs/x", saved, shipped)
    assert command == ("nncompress run recipes/lenet5_dns_inq.yaml --set stages.dns.iterations="
                       "100 --set stages.inq.defaults.num_quantum_values=4 --out runs/x "
                       "--threads 1") and note == "shipped recipe with --set values"
    same = yaml.safe_load(dump_recipe(parse_recipe(yaml.safe_load(shipped.read_text()))))
    assert reproduce_command("runs/x", same, shipped) == (
        "nncompress run recipes/lenet5_dns_inq.yaml --out runs/x --threads 1", "")
    del saved["stages"][3]  # a stage less: no --set gives that
    assert reproduce_command("runs/x", saved, shipped)[0] == \
        "nncompress run runs/x/recipe.yaml --out runs/x --threads 1"


def row(model: str = "lenet5", *, kept: int = 4000, error: float = 0.0091,
        nbytes: int | None = 3000, stages: tuple[str, ...] = ("train", "dns", "inq"),
        k: tuple[int, ...] = (8,), reference: float | None = None) -> RunRow:
    return RunRow(folder="runs/x", name="x", model=model, stages=stages, inq_k=k, validation=0,
                  error=error, reference_error=reference, entries=431080, kept=kept,
                  layers=(LayerRow("fc", 431080, kept, 5),), ncz_bytes=nbytes, wall_s=None,
                  sessions=0, command="", command_note="", header="")


def test_goals_say_met_or_by_how_much_they_are_missed() -> None:
    dns = GOALS[0]  # >= 110x at <= 0.91%
    met = check_goal(dns, [row(kept=3918, error=1 - 0.9909)])  # 110.02x; 0.0091 in floats
    assert met.met and met.misses == ()
    assert check_goal(dns, [row(kept=3919)]).misses == ("0.003x short of 110x",)  # 109.997x
    missed = check_goal(dns, [row(kept=4045, error=0.0096)])
    assert not missed.met and missed.misses == ("3.4x short of 110x", "0.05 points over 0.91%")
    best = check_goal(dns, [row(kept=4045, error=0.0096), row(kept=3900, error=0.0095)])
    assert best.row is not None and best.row.kept == 3900  # one miss beats two
    assert check_goal(dns, [row(stages=("train", "inq"))]).row is None  # no DNS: not a candidate
    inq5 = GOALS[4]  # INQ alone, K=8: at most +0.05 points
    assert check_goal(inq5, [row(stages=("train", "inq"), error=0.0096, reference=0.009)
                             ]).misses == ("0.01 points over +0.05",)
    assert check_goal(inq5, [row(stages=("train", "inq"), error=0.0095, reference=0.009)]).met
    assert check_goal(inq5, [row(stages=("train", "inq"), k=(4,))]).row is None  # K=4 goal
    assert check_goal(inq5, [row(stages=("train", "inq"))]).misses == (
        "error over reference not recorded",)
    small = check_goal(GOALS[2], [row(nbytes=2001, error=0.01)])
    assert small.misses == ("1 B over 2,000 B",)


def test_default_recipes_run_those_starting_from_weights_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {}
    for name, weights in (("a_tuned", "runs/z_ref/model.safetensors"), ("demo_x", None),
                          ("z_ref", None)):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump({"model": {"ref": "lenet5", "weights": weights}}))
    monkeypatch.setattr(reproduce, "packaged_recipes", lambda: files)
    assert list(reproduce.benchmark_recipes()) == ["z_ref", "a_tuned"]
    assert reproduce.recipe_names([]) == {"z_ref": files["z_ref"], "a_tuned": files["a_tuned"]}


def test_runs_of_one_recipe_are_told_apart_by_their_folders() -> None:
    from dataclasses import replace

    rows = reproduce.unique_names([replace(row(), folder="runs/a"), replace(row(), folder="runs/b"),
                                   replace(row(), name="y")])
    assert [r.name for r in rows] == ["x (runs/a)", "x (runs/b)", "y"]


def test_stage_labels_name_k_fitted_levels_and_distillation() -> None:
    from _bench_runs import _labels

    recipe = {"stages": [
        {"stage": "dns"},
        {"stage": "inq", "defaults": {"num_quantum_values": 2, "levels": "mse"},
         "distill": {"teacher": "reference"}},
        {"stage": "inq", "defaults": {"num_quantum_values": 8, "levels": "max"}},
        {"stage": "inq", "defaults": {"num_quantum_values": 4, "mantissa_bits": 1}},
        {"stage": "inq", "defaults": {"num_quantum_values": 3, "mantissa_bits": 2}},
        {"stage": "finalize"}]}
    assert _labels(recipe) == ("dns", "inq K=2 mse levels (distilled)", "inq K=8",
                               "inq K=4 +1 mantissa bit", "inq K=3 +2 mantissa bits",
                               "finalize")


@pytest.mark.slow
def test_record_keeps_the_rows_of_folders_that_are_gone(runs: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    a, b = runs
    here = tmp_path / "here"  # copies, moved away after the first write
    shutil.copytree(a, here / "tiny_a")
    shutil.copytree(b, here / "tiny_b")
    fa, fb = str(here / "tiny_a"), str(here / "tiny_b")
    record, out = tmp_path / "results.json", tmp_path / "B.md"
    args = ["--from", fa, "--ablation", f"c rate 0.8={fa}:{fb}", "--no-reference-eval",
            "--record", str(record), "--out", str(out)]
    assert reproduce.main(args) == 0
    old = out.read_text()
    saved = json.loads(record.read_text())
    assert saved["format"] == "nncompress-benchmark-record" and saved["version"] == 1
    assert set(saved["runs"]) == {fa} and set(saved["pairs"]) == {fa, fb}
    assert saved["runs"][fa]["source"].startswith("run folder, read ")
    assert saved["runs"][fa]["row"]["kept"] == report(a)["totals"]["kept"]
    saved["runs"][fa]["source"] = "run folder, read 2000-01-01"  # an earlier day's reading
    record.write_text(json.dumps(saved))
    assert reproduce.main(args) == 0  # the same values read again: the entry stays as it was
    assert json.loads(record.read_text())["runs"][fa]["source"] == "run folder, read 2000-01-01"
    assert [x["kept"] for x in saved["runs"][fa]["row"]["layers"]] == \
        [x["kept"] for x in report(a)["layers"]]
    shutil.rmtree(here)
    assert reproduce.main(args) == 0
    new = out.read_text()
    assert "(recorded)" not in old and f"| `tiny_a` | `{fa}` (recorded) |" in new
    assert f"`{fa}` (recorded) → `{fb}` (recorded)" in new
    assert "- **(recorded)**: the run folder was not on that machine" in new
    assert expected_result_row(a, 4) in new.splitlines()  # the same numbers, from the record
    assert expected_layer_row(a) in new.splitlines()
    strip = [line for line in new.replace(" (recorded)", "").splitlines()
             if not line.startswith("- **(recorded)**")]
    assert strip == old.splitlines()
    assert json.loads(record.read_text()) == saved  # nothing read: the record stays as it was


def test_a_folder_that_is_gone_and_not_recorded_exits_1_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record, out = tmp_path / "results.json", tmp_path / "B.md"
    record.write_text(json.dumps({"format": "nncompress-benchmark-record", "version": 1,
                                  "runs": {}, "pairs": {}}))
    before = record.read_text()
    assert reproduce.main(["--from", "runs/gone", "--record", str(record), "--out",
                           str(out)]) == 1
    assert f"runs/gone: no report.json and not in {record}" in capsys.readouterr().err
    assert not out.exists() and record.read_text() == before


@pytest.mark.parametrize(("content", "says"), [
    ("{not json", "not a readable benchmark record"),
    ('{"format": "other", "version": 1}', "not a nncompress-benchmark-record file of version 1"),
    ('{"format": "nncompress-benchmark-record", "version": 1, "runs": {"runs/x": 3}}',
     "'runs' must map folders to"),
    ('{"format": "nncompress-benchmark-record", "version": 1, "runs": {"runs/x": {"row": '
     '{"folder": "runs/x", "colour": 1}}}}', "runs.runs/x: missing field(s) command"),
])
def test_a_damaged_record_exits_1_naming_it(tmp_path: Path, content: str, says: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    record, out = tmp_path / "results.json", tmp_path / "B.md"
    record.write_text(content)
    assert reproduce.main(["--from", "runs/x", "--record", str(record), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert says in err and str(record) in err
    assert not out.exists() and record.read_text() == content


def test_record_rows_round_trip_and_unknown_fields_are_named() -> None:
    from _bench_record import row_from_json, row_to_json

    original = row(kept=3918, reference=0.0087)
    data = json.loads(json.dumps(row_to_json(original)))
    assert row_from_json(data, "r") == replace(original, recorded=True)
    with pytest.raises(NNCompressError, match=r"r: unknown field\(s\) colour"):
        row_from_json({**data, "colour": 1}, "r")
    with pytest.raises(NNCompressError, match="a malformed layer"):
        row_from_json({**data, "layers": [{"name": "fc"}]}, "r")
