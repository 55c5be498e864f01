"""Kept share and test error of a trained model rounded to INQ levels at once, `max` vs `mse`.

Usage::

    python benchmarks/inq_levels.py [--run runs/lenet5_reference] [--k 1 2 4 8]
        [--mantissa-bits 0 1] [--threads 1]

The run folder's final model (``model.safetensors``; the default is the LeNet-5 reference of
``nncompress run recipes/lenet5_reference.yaml --out runs/lenet5_reference --threads 1``) is
prepared for INQ at each K with portions [1.0], so every weight and bias is rounded in one step
without retraining, under each level rule (``levels: max``, the paper's ``n1``; ``levels: mse``,
the ``n1`` fitted to the weights), finalized, and evaluated on the test split of the run's data
(MNIST: the 10,000 test images) by ``nncompress.train.loop.evaluate``. "kept" is the share of
the compressible layers' entries left non-zero (``kept_fraction``); "n1" is each layer's
weight / bias exponent. Prints a Markdown table; a missing run folder or model stops with one
message and exit code 1.

Measured (``python benchmarks/inq_levels.py``: runs/lenet5_reference, 1 thread; 18 s of
CPU)::

    | K | levels | kept | test error | n1 (weight/bias) |
    |---|---|---|---|---|
    | - | reference | 100.0% | 0.87% |  |
    | 1 | max | 0.3% | 77.16% | conv1 -1/-2, conv2 -2/-3, ip1 -3/-6, ip2 -2/-4 |
    | 1 | mse | 62.3% | 2.85% | conv1 -2/-2, conv2 -4/-4, ip1 -5/-8, ip2 -4/-5 |
    | 2 | max | 26.2% | 3.10% | conv1 -1/-2, conv2 -2/-3, ip1 -3/-6, ip2 -2/-4 |
    | 2 | mse | 80.9% | 1.81% | conv1 -2/-2, conv2 -4/-4, ip1 -5/-7, ip2 -3/-5 |
    | 4 | max | 81.1% | 1.01% | conv1 -1/-2, conv2 -2/-3, ip1 -3/-6, ip2 -2/-4 |
    | 4 | mse | 90.4% | 0.98% | conv1 -1/-2, conv2 -3/-3, ip1 -4/-6, ip2 -2/-4 |
    | 8 | max | 98.8% | 1.02% | conv1 -1/-2, conv2 -2/-3, ip1 -3/-6, ip2 -2/-4 |
    | 8 | mse | 98.8% | 1.02% | conv1 -1/-2, conv2 -2/-3, ip1 -3/-6, ip2 -2/-4 |

At K = 8 both rules choose the same ``n1`` for every blob.

With mantissa bits (``--run runs/lenet5_reference_long --mantissa-bits 0 1 2``; that reference
scores 0.78%), test error under ``levels: mse`` for M = 0 / 1 / 2: K = 1 3.63% / 1.63% / 1.61%,
K = 2 1.55% / 0.93% / 0.95%, K = 4 0.86% / 0.83% / 0.81%, K = 8 0.85% / 0.85% / 0.81%; the
kept shares stay within 0.2 points of M = 0's, except at K = 1, M = 2 (73.3% against 51.0%).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError, NNCompressError
from nncompress.inq import MAX_MANTISSA_BITS

LEVEL_RULES = ("max", "mse")
RECIPE_COMMAND = "nncompress run recipes/lenet5_reference.yaml --out {run} --threads 1"


class _Usage(Exception):
    """An argparse usage error, reported like any other mistake (exit code 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="inq_levels.py", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/lenet5_reference"),
                        help="finished run folder whose model.safetensors is rounded "
                             "(default: runs/lenet5_reference)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8], metavar="K",
                        help="INQ exponent counts to measure (default: 1 2 4 8)")
    parser.add_argument("--mantissa-bits", type=int, nargs="+", default=[0], metavar="M",
                        help="INQ mantissa bits to measure, 0 to 3 (default: 0, the paper's "
                             "powers of two)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    return parser


def check_inputs(args: argparse.Namespace) -> Path:
    """The run's model file, once every argument is checked (before anything loads).

    Raises:
        ConfigError: a K outside 1..64, threads below 1, no run folder or no final model in it.
    """
    for k in args.k:
        if not 1 <= k <= 64:
            raise ConfigError(f"--k {k}: use integers from 1 to 64 (8 = 5-bit, 1 = ternary)")
    for bits in args.mantissa_bits:
        if not 0 <= bits <= MAX_MANTISSA_BITS:
            raise ConfigError(f"--mantissa-bits {bits}: use integers from 0 (powers of two) to "
                              f"{MAX_MANTISSA_BITS}")
    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: use 1 or more")
    run: Path = args.run
    command = RECIPE_COMMAND.format(run=run)
    if not run.is_dir():
        raise ConfigError(f"{run}: no run folder there; make it first with `{command}`")
    model = run / "model.safetensors"
    if not model.is_file():
        raise ConfigError(f"{model} is missing: the run has not finished; finish it first "
                          f"with `{command} --resume`")
    return model


def _exponents(model: nn.Module) -> str:
    """Each prepared layer's ``n1`` of its weight / bias, e.g. ``conv1 0/-3``."""
    cells = []
    for name, layer in nnc.compressed_layers(model):
        n1 = [str(levels[0]) if (levels := layer.inq_levels(blob)) else "-"
              for blob in ("weight", "bias")]
        cells.append(f"{name} {'/'.join(n1)}")
    return ", ".join(cells)


def rounded(base: nn.Module, k: int, levels: str, bits: int = 0) -> tuple[nn.Module, str]:
    """A copy of ``base`` with every weight and bias rounded to K levels under ``levels``
    (with ``bits`` mantissa bits), finalized, and the ``n1`` each blob took."""
    model = copy.deepcopy(base)
    nnc.prepare(model, nnc.INQConfig(portions=(1.0,), num_quantum_values=k, levels=levels,
                                     mantissa_bits=bits))
    exponents = _exponents(model)
    nnc.quantize_step(model)
    return nnc.finalize(model).eval(), exponents


def measure(model_file: Path, ks: Sequence[int],
            mantissa_bits: Sequence[int] = (0,)) -> list[list[str]]:
    """Rows ``K, levels, kept, test error, n1`` for the reference and each K, mantissa bits M
    and rule (the levels cell says ``M`` when it is not 0).

    Raises:
        NNCompressError: the model or its run's data cannot be read.
    """
    from nncompress.data import Splits
    from nncompress.run_folder import load_run_model
    from nncompress.run_inputs import open_recipe_data
    from nncompress.train.loop import evaluate, kept_fraction

    base, recipe = load_run_model(model_file)
    if recipe is None:
        raise ConfigError(f"{model_file}: no recipe.yaml beside it to take the data from")
    splits = open_recipe_data(recipe.data, seed=recipe.seed)
    if not isinstance(splits, Splits):
        raise ConfigError(f"{recipe.data.spec}: streamed data; this script evaluates data held "
                          "in memory (mnist)")

    def row(k: str, levels: str, model: nn.Module, exponents: str) -> list[str]:
        accuracy = evaluate(model, splits.test_x, splits.test_y)[1]
        return [k, levels, f"{100 * kept_fraction(model):.1f}%",
                f"{100 * (1 - accuracy):.2f}%", exponents]

    rows = [row("-", "reference", base, "")]
    for k in ks:
        for bits in mantissa_bits:
            for levels in LEVEL_RULES:
                rule = f"{levels}, M {bits}" if bits else levels
                rows.append(row(str(k), rule, *rounded(base, k, levels, bits)))
    return rows


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """The rows as a Markdown table under the header ``K | levels | kept | test error | n1``."""
    head = ("K", "levels", "kept", "test error", "n1 (weight/bias)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; 0 on success, 1 on a user mistake."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        model_file = check_inputs(args)
        torch.set_num_threads(args.threads)
        table = markdown(measure(model_file, args.k, args.mantissa_bits))
    except (NNCompressError, _Usage) as exc:
        print(f"inq_levels: error: {exc}", file=sys.stderr)
        return 1
    print(f"Run {args.run}: every entry rounded at once (portions [1.0]), test split")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
