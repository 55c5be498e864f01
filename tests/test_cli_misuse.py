"""Command-line misuse: each case exits 1 with one message naming the value and the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save

from nncompress.cli import main
from nncompress.cli._misuse import checked
from nncompress.errors import ConfigError
from nncompress.models import locate_ref

TINY = {
    "version": 1, "name": "tiny_misuse",
    "model": {"ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 12}},
    "data": {"spec": "synthetic:n=96,test=32,size=8"}, "seed": 1,
    "stages": [{"stage": "train", "iterations": 2, "batch_size": 16}, {"stage": "finalize"}],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("misuse")
    recipe = base / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(recipe), "--out", str(base / "run"), "--quiet"]) == 0
    return base / "run"


def fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; it must exit 1 with one error line and no traceback; return the line."""
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("nncompress: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("nncompress: error: ")


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump(TINY))
    return file


@pytest.mark.parametrize("kind", ["file", "devnull", "under a file"])
def test_run_out_must_be_a_folder_that_can_be_written(tmp_path: Path, recipe_file: Path,
                                                      kind: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    out = {"file": afile, "devnull": Path("/dev/null"), "under a file": afile / "run"}[kind]
    message = fails(["run", str(recipe_file), "--out", str(out), "--quiet"], capsys)
    if kind == "under a file":
        assert message.startswith(f"cannot write the run folder {str(out)!r} (")
        assert message.endswith("); choose another --out")
    else:
        assert message == (f"--out {str(out)!r} is a file, not a folder; give a folder for the "
                           "run (new, or an earlier run's with --resume)")
    assert afile.read_text() == "keep"


def test_export_to_a_directory(finished: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(["export", str(finished), "-o", str(tmp_path)], capsys) == (
        f"-o {str(tmp_path)!r} is a directory; give a file name, e.g. "
        f"{str(tmp_path / 'model.ncz')!r}")
    assert fails(["export", str(finished), "--onnx", str(tmp_path)], capsys).startswith(
        f"--onnx {str(tmp_path)!r} is a directory")


@pytest.mark.parametrize("name", ["recipe.yaml", "checkpoints", "model.safetensors",
                                  "checkpoints/x.ncz"])
def test_export_never_replaces_a_file_of_the_run_folder(finished: Path, name: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    before = (finished / "recipe.yaml").read_bytes()
    message = fails(["export", str(finished), "-o", str(finished / name)], capsys)
    own = "checkpoints/" if name.startswith("checkpoints/") else name
    assert message == (f"-o {str(finished / name)!r} would replace the run folder's own {own}; "
                       f"give another name, e.g. {str(finished / 'model.ncz')!r}")
    assert (finished / "recipe.yaml").read_bytes() == before


def test_export_with_an_unknown_suffix(finished: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.xyz"
    assert fails(["export", str(finished), "-o", str(out)], capsys) == (
        f"-o {str(out)!r}: unknown suffix '.xyz'; use .ncz, e.g. {str(tmp_path / 'out.ncz')!r}")
    assert not out.exists()


def test_export_to_an_unwritable_place(finished: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    assert fails(["export", str(finished), "-o", str(afile / "m.ncz")], capsys) == (
        f"-o {str(afile / 'm.ncz')!r}: cannot write in {str(afile)!r}; choose a folder you can "
        "write to")
    if Path("/proc/self").is_dir():  # a folder where no file can be made, even by root
        message = fails(["export", str(finished), "-o", "/proc/m.ncz"], capsys)
        assert message.startswith("-o '/proc/m.ncz': cannot write it (")
        assert message.endswith("); choose another file")


def test_a_recipe_export_stage_cannot_name_a_run_folder_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = {**TINY, "stages": [*TINY["stages"], {"stage": "export", "file": "recipe.yaml"}]}
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    message = fails(["validate", str(recipe)], capsys)
    assert message.endswith("stages[2].file: 'recipe.yaml' would replace the run folder's own "
                            "recipe.yaml; give another name, e.g. 'model.ncz'")


def test_eval_of_data_of_another_shape(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = fails(["eval", str(finished), "--data", "synthetic:n=64,test=32,size=6"], capsys)
    assert message.startswith("--data 'synthetic:n=64,test=32,size=6': the model does not take "
                              "its examples of shape (1, 6, 6) (mat1 and mat2 shapes")
    assert message.endswith("); give data of the shape the model was trained on")


def test_evaluating_no_examples_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^--data 'folder:x': the val split holds no examples"):
        list(checked(torch.nn.Linear(2, 2), iter([]), "folder:x", "val"))


def test_eval_of_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(["eval", str(tmp_path)], capsys) == (
        f"{str(tmp_path)!r} is not a run folder with weights or checkpoints")


@pytest.mark.parametrize(("header", "message"), [
    ("{not json", "its nncompress header is not JSON ("),
    ("[1, 2]", "its nncompress header is not a JSON object"),
    (json.dumps({"format": "nncompress-weights", "version": 1}),
     "its nncompress header lacks the architecture (an object with a ref string and kwargs)"),
    (json.dumps({"format": "nncompress-weights", "architecture": {"ref": 3}}),
     "its nncompress header lacks the architecture"),
    (json.dumps({"format": "nncompress-weights", "architecture": {
        "ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 2**40}}}),
     "metadata field arch.kwargs.hidden is 1099511627776, expected an integer in"),
    (json.dumps({"format": "nncompress-weights", "architecture": {
        "ref": "tiny_mlp", "kwargs": {"input_size": 8, "hidden": 10**8}}}),
     "building the model would take more than "),
])
def test_weights_with_a_bad_header(tmp_path: Path, header: str, message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "w.safetensors"
    file.write_bytes(save({"fc1.weight": torch.zeros(2, 2)}, metadata={"nncompress": header}))
    for command in ("eval", "export"):
        extra = ["--data", "synthetic"] if command == "eval" else ["-o", str(tmp_path / "m.ncz")]
        assert fails([command, str(file), *extra], capsys).startswith(f"{file}: {message}")


def test_caffe_train_without_the_solvers_net(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "nets/missing.prototxt"\nbase_lr: 0.01\nmax_iter: 2\n'
                      'lr_policy: "fixed"\n')
    message = fails(["caffe", "train", "--solver", str(solver), "--data", "synthetic"], capsys)
    assert message.startswith("net prototxt not found: nets/missing.prototxt")
    assert message.endswith("give --net")


def _user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``evil_mod`` and package ``evil_pkg`` (with ``sub``): importing either writes a file."""
    code = "import pathlib\npathlib.Path({!r}).write_text('ran')\ndef build():\n    pass\n"
    (tmp_path / "mods" / "evil_pkg").mkdir(parents=True)
    (tmp_path / "mods" / "evil_mod.py").write_text(code.format(str(tmp_path / "mod_ran")))
    (tmp_path / "mods" / "evil_pkg" / "__init__.py").write_text(
        code.format(str(tmp_path / "pkg_ran")))
    (tmp_path / "mods" / "evil_pkg" / "sub.py").write_text(code.format(str(tmp_path / "sub_ran")))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    for name in ("evil_mod", "evil_pkg", "evil_pkg.sub"):  # as if never imported
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path / "mods"


@pytest.mark.parametrize("ref", ["evil_mod:build", "evil_pkg.sub:build", "os:system"])
def test_validate_checks_a_code_reference_without_importing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        ref: str) -> None:
    mods = _user_modules(tmp_path, monkeypatch)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "model": {"ref": ref}}))
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert f"note: model {ref!r} is Python code (" in out and "it was not imported" in out
    if ref != "os:system":
        origin = mods / (ref.partition(":")[0].replace(".", "/") + ".py")
        assert f"(module file {origin})" in out
    assert not any((tmp_path / f).exists() for f in ("mod_ran", "pkg_ran", "sub_ran"))
    assert "evil_pkg" not in sys.modules and "evil_mod" not in sys.modules


@pytest.mark.parametrize(("ref", "message"), [
    ("no_such_mod_xyz.sub:make", "no module 'no_such_mod_xyz' on the Python path"),
    ("evil_pkg.nope:make", "no module 'evil_pkg.nope' on the Python path"),
    ("evil mod:build", "must look like 'package.module:callable'"),
    ("evil_mod:build()", "must look like 'package.module:callable'"),
])
def test_a_bad_code_reference_is_refused_without_importing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str, message: str) -> None:
    _user_modules(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=message):
        locate_ref(ref)
    assert not (tmp_path / "pkg_ran").exists()


def test_run_says_once_that_it_imports_the_users_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _user_modules(tmp_path, monkeypatch)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "model": {"ref": "evil_mod:build"}}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("nncompress: importing Python code of this recipe (model "
                     "'evil_mod:build'): module evil_mod runs with your permissions") == 1
    assert (tmp_path / "mod_ran").exists()  # it did import it (build() returns no model)
    assert "'evil_mod:build' returned NoneType, not a torch.nn.Module" in err


def test_eval_of_a_run_with_a_damaged_recipe(finished: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "model.safetensors").unlink()  # the newest checkpoint is loaded with the recipe
    (run / "recipe.yaml").write_bytes(b"\x00garbage: [")
    assert fails(["eval", str(run)], capsys).startswith(
        f"{run / 'recipe.yaml'}: cannot read the recipe: ")
