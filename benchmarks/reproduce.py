"""Run the benchmark recipes (or read finished run folders) and write BENCHMARKS.md.

Usage::

    python benchmarks/reproduce.py --run [NAME ...] [--runs-dir runs] [--quiet]
    python benchmarks/reproduce.py --from runs/lenet5_dns_inq runs/lenet300_100_dns_inq[=NAME]
        [--out BENCHMARKS.md] [--readme README.md] [--ablation MEAN=RUN_A:RUN_B ...]
        [--notes NOTES.md] [--no-reference-eval] [--record benchmarks/results.json]

``--run`` runs each named shipped recipe (default: every top-level shipped recipe but the
demo) as ``nncompress run NAME --out RUNS_DIR/NAME --threads 1``, with ``--resume`` when the
folder already holds a run (finished or interrupted), then reads the folders. ``--from``
only reads finished folders; ``FOLDER=NAME`` shows a folder as a run of the shipped recipe
``NAME`` (made under another name: its command then carries ``--set name=...``, or the run's
own recipe.yaml when the two differ in more). ``--ablation MEAN=A:B`` adds a row to the
"effect of each mean" table, where run B is run A plus that mean. ``--readme`` replaces
README's results table, between the lines ``<!-- benchmarks:results begin -->`` and
``<!-- benchmarks:results end -->``, with the summary table of BENCHMARKS.md (and its
"effect of each mean" table when pairs are given). ``--notes`` adds a Markdown file as
BENCHMARKS.md's closing "Notes" section. ``--record FILE`` keeps every row's exact values by
folder (``_bench_record.py``): a folder that still holds ``report.json`` is read and recorded
again; one that is gone is taken from the record and marked "(recorded)" in the tables.

Every input is checked before anything runs or is written: a folder without ``report.json``
(and not in the record), an unknown recipe name, a README without the markers, a damaged
record or a malformed ``--ablation`` stops with one message and exit code 1. Every file is
written atomically.

The tables' numbers and their sources: ``_bench_markdown.py``; goals and anchors:
``_bench_goals.py``; reading a run folder: ``_bench_runs.py``; commands: ``_bench_command.py``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from _bench_markdown import Ablation, ablation_table, benchmarks_markdown, summary_table
from _bench_record import Record
from _bench_runs import RunRow, read_run
from nncompress._io import atomic_write_text
from nncompress.errors import ConfigError, NNCompressError, did_you_mean
from nncompress.recipe import packaged_recipes

BEGIN = "<!-- benchmarks:results begin -->"
END = "<!-- benchmarks:results end -->"


class _Usage(Exception):
    """An argparse usage error, reported like any other mistake (exit code 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="benchmarks/reproduce.py", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", nargs="*", metavar="NAME",
                        help="run these shipped recipes (default: the benchmark recipes)")
    source.add_argument("--from", dest="folders", nargs="+", metavar="RUN_DIR[=NAME]",
                        help="read these finished run folders only (=NAME: as a run of the "
                             "shipped recipe NAME)")
    parser.add_argument("--runs-dir", default="runs", help="where --run puts its run folders")
    parser.add_argument("--out", default="BENCHMARKS.md", help="the Markdown file to write")
    parser.add_argument("--readme", default=None, help="also replace README's results block")
    parser.add_argument("--ablation", action="append", default=[], metavar="MEAN=RUN_A:RUN_B",
                        help="run B is run A plus MEAN (repeatable)")
    parser.add_argument("--notes", default=None, metavar="FILE",
                        help="Markdown to add as the closing Notes section")
    parser.add_argument("--no-reference-eval", action="store_true",
                        help="do not measure each reference's test error (nncompress eval)")
    parser.add_argument("--quiet", action="store_true", help="pass -q to nncompress run")
    parser.add_argument("--record", default=None, metavar="FILE",
                        help="JSON record of the rows: folders that are gone are read from it, "
                             "the others are recorded in it")
    return parser


def benchmark_recipes() -> dict[str, Path]:
    """The shipped recipes ``--run`` takes by default: top level, not the demo; those that
    start from ``model.weights`` (another run's model) after those that do not.

    Example:
        >>> "lenet5_dns_inq" in benchmark_recipes()
        True
    """
    shipped = packaged_recipes()
    top = min(len(p.parts) for p in shipped.values())
    chosen = [(name, path) for name, path in shipped.items()
              if len(path.parts) == top and not name.startswith("demo")]
    return dict(sorted(chosen, key=lambda item: _starts_from_weights(item[1])))


def _starts_from_weights(file: Path) -> bool:
    try:
        model = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("model")
    except (OSError, yaml.YAMLError, AttributeError):
        return False  # nncompress run reports the problem
    return isinstance(model, dict) and bool(model.get("weights"))


def recipe_names(names: Sequence[str]) -> dict[str, Path]:
    """The recipe files of the names given to ``--run`` (``NAME``, ``NAME.yaml`` or
    ``recipes/NAME.yaml``), by name.

    Raises:
        ConfigError: a name is not a shipped recipe.
    """
    shipped = packaged_recipes()
    if not names:
        return benchmark_recipes()
    out = {}
    for text in names:
        name = Path(text).name.removesuffix(".yaml")
        if name not in shipped:
            raise ConfigError(f"--run {text!r}: not a shipped recipe{did_you_mean(name, shipped)};"
                              f" give one of: {', '.join(benchmark_recipes())}")
        out[name] = shipped[name]
    return out


def ablation_pairs(texts: Sequence[str]) -> list[tuple[str, str, str]]:
    """Parse ``MEAN=RUN_A:RUN_B`` values.

    Raises:
        ConfigError: a value is not of that form.

    Example:
        >>> ablation_pairs(["distillation=runs/a:runs/b"])
        [('distillation', 'runs/a', 'runs/b')]
    """
    out = []
    for text in texts:
        mean, sep, pair = text.partition("=")
        folders = pair.split(":")
        if not sep or not mean.strip() or len(folders) != 2 or not all(folders):
            raise ConfigError(f"--ablation {text!r}: expected MEAN=RUN_A:RUN_B, e.g. "
                              "distillation=runs/lenet5_dns:runs/lenet5_dns_distill")
        out.append((mean.strip(), folders[0], folders[1]))
    return out


def replace_block(text: str, block: str, source: str = "README") -> str:
    """``text`` with the lines between the two marker comments replaced by ``block``.

    Raises:
        ConfigError: a marker is missing, repeated or out of order.

    Example:
        >>> replace_block(f"a\\n{BEGIN}\\nold\\n{END}\\nz\\n", "new\\n")
        'a\\n<!-- benchmarks:results begin -->\\nnew\\n<!-- benchmarks:results end -->\\nz\\n'
    """
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"{source}: needs one line {BEGIN} and, after it, one line {END} "
                          "around the results table; add them and run again")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def run_recipes(recipes: dict[str, Path], runs_dir: Path, quiet: bool) -> list[str]:
    """Run (or resume) each recipe file into ``runs_dir/NAME``; the folders, in order.

    Raises:
        ConfigError: a run failed (its exit code is given).
    """
    folders = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name, file in recipes.items():
        out = runs_dir / name
        command = [sys.executable, "-m", "nncompress", "run", str(file), "--out", str(out),
                   "--threads", "1", *(["--resume"] if (out / "recipe.yaml").is_file() else []),
                   *(["-q"] if quiet else [])]
        print(f"reproduce: nncompress {shlex.join(command[3:])}", flush=True)
        code = subprocess.run(command, env=env, check=False).returncode
        if code != 0:
            raise ConfigError(f"nncompress run {name} --out {out} stopped with exit code {code}; "
                              "nothing written (fix it, then run again: the folder resumes)")
        folders.append(str(out))
    return folders


def _readme_block(rows: Sequence[RunRow], ablations: Sequence[Ablation], out: str) -> str:
    name = Path(out).name
    effect = ("\nEffect of each mean (run b is run a plus the mean):\n\n"
              + "\n".join(ablation_table(ablations)) + "\n") if ablations else ""
    return (f"\n{summary_table(rows)}{effect}\nGenerated by `benchmarks/reproduce.py` from the "
            f"same runs as [{name}]({name}), which adds per-layer kept %, bits, reference "
            "errors, wall times, the goals and the commands.\n\n")


def folder_recipes(texts: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--from`` values as ``(folder, shipped recipe name or None)``.

    Raises:
        ConfigError: a name after ``=`` is not a shipped recipe.

    Example:
        >>> folder_recipes(["runs/a", "runs/t5=lenet5_sparse"])
        [('runs/a', None), ('runs/t5', 'lenet5_sparse')]
    """
    out: list[tuple[str, str | None]] = []
    for text in texts:
        folder, sep, name = text.rpartition("=") if "=" in text else (text, "", "")
        if sep and name not in packaged_recipes():
            raise ConfigError(f"--from {text!r}: {name!r} is not a shipped recipe"
                              f"{did_you_mean(name, packaged_recipes())}; give one of: "
                              f"{', '.join(benchmark_recipes())}")
        out.append((folder, name or None))
    return out


def _check_inputs(args: argparse.Namespace, record: Record | None
                  ) -> tuple[dict[str, Path], list[tuple[str, str, str]]]:
    names = recipe_names(args.run) if args.run is not None else {}
    if args.folders:
        args.folders = folder_recipes(args.folders)
    pairs = ablation_pairs(args.ablation)
    if args.readme is not None:
        replace_block(_read(Path(args.readme)), "", args.readme)
    if args.notes is not None:
        _read(Path(args.notes))
    # every finished folder named must have its report (or its recorded row) before anything
    # runs or is measured
    wanted = [*(("runs", f) for f, _ in args.folders or []),
              *(("pairs", f) for _, a, b in pairs for f in (a, b))]
    for kind, folder in wanted:
        if (Path(folder) / "report.json").is_file():
            continue
        if record is None:
            raise ConfigError(f"{folder}: no report.json; give finished run folders "
                              "(or --run to run the recipes, or --record with their rows)")
        record.row(kind, folder)  # not recorded, or damaged: the error names the folder
    return names, pairs


def _named(row: RunRow, name: str | None) -> RunRow:
    return row if name is None else replace(row, name=name)


def unique_names(rows: Sequence[RunRow]) -> list[RunRow]:
    """The rows, each run whose recipe name another row shares named with its folder too.

    Example:
        >>> # two runs of lenet5_dns_inq -> "lenet5_dns_inq (runs/a)", "lenet5_dns_inq (runs/b)"
    """
    counts = Counter(row.name for row in rows)
    return [row if counts[row.name] == 1 else replace(row, name=f"{row.name} ({row.folder})")
            for row in rows]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _row(folder: str, kind: str, record: Record | None, name: str | None = None,
         **read: Any) -> RunRow:
    """The row of ``folder``: read (and recorded) while it holds a report, else recorded."""
    if record is not None and not (Path(folder) / "report.json").is_file():
        return _named(record.row(kind, folder), name)
    row = _named(read_run(folder, **read), name)
    if record is not None:
        record.put(kind, row, f"run folder, read {datetime.date.today().isoformat()}")
    return row


def main(argv: Sequence[str] | None = None) -> int:
    """Run or read, then write BENCHMARKS.md (and README's block); 0 on success, 1 on error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        record = None if args.record is None else Record.load(args.record)
        names, pairs = _check_inputs(args, record)
        shipped = packaged_recipes()
        if args.folders:
            folders = [f for f, _ in args.folders]
            shown = [n for _, n in args.folders]
        else:
            folders, shown = run_recipes(names, Path(args.runs_dir), args.quiet), list(names)
        rows = unique_names([_row(f, "runs", record, n,
                                  evaluate_reference=not args.no_reference_eval,
                                  recipe_file=None if n is None else shipped[n])
                             for f, n in zip(folders, shown)])
        ablations = [Ablation(mean, _row(a, "pairs", record, evaluate_reference=False),
                              _row(b, "pairs", record, evaluate_reference=False))
                     for mean, a, b in pairs]
        text = benchmarks_markdown(rows, ablations,
                                   shlex.join(["python", "benchmarks/reproduce.py", *argv]),
                                   _read(Path(args.notes)) if args.notes else "")
        readme = None if args.readme is None else replace_block(
            _read(Path(args.readme)), _readme_block(rows, ablations, args.out), args.readme)
        atomic_write_text(args.out, text)
        if readme is not None:
            atomic_write_text(args.readme, readme)
        if record is not None:
            record.save()
    except (NNCompressError, _Usage) as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 1
    written = [args.out, *([args.readme] if args.readme else []),
               *([args.record] if args.record else [])]
    print(f"reproduce: wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
