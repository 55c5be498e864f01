"""Arguments that several subcommands share, each defined once so help and names agree.

A subcommand's ``add_parser`` calls these; the values land in ``args`` under the names given
here (``recipe``, ``overrides``, ``quiet``, ``threads``, ``path``, ``allow_import``, ``json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nncompress.errors import ConfigError

__all__ = [
    "add_allow_import_argument",
    "add_device_argument",
    "add_json_argument",
    "add_model_path_argument",
    "add_progress_arguments",
    "add_recipe_argument",
    "add_set_argument",
    "apply_threads",
    "check_backend",
]


def add_recipe_argument(parser: argparse.ArgumentParser) -> None:
    """The positional ``recipe``: a YAML file or the name of a shipped recipe."""
    parser.add_argument("recipe", help="recipe YAML file, or the name of a shipped recipe")


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--set key.path=value`` recipe override (``args.overrides``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE",
                        help="override a recipe value, e.g. stages.0.iterations=100 or "
                             "stages.dns.defaults.gamma=1e-4 (repeatable)")


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (one log line per evaluation instead of progress bars) and ``--threads``."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars; one line per evaluation (for logs)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice); 1 is often "
                             "fastest for small models on a busy machine")


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count when ``--threads`` was given.

    Raises:
        ConfigError: ``threads`` is below 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads {threads}: use 1 or more")
    import torch

    torch.set_num_threads(threads)


def add_model_path_argument(parser: argparse.ArgumentParser) -> None:
    """The positional ``path`` of a model to load: run folder, weights, checkpoint or ``.ncz``."""
    parser.add_argument("path", type=Path,
                        help="run folder, model.safetensors, checkpoint or .ncz file")


def add_allow_import_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-import``: let ``package.module:callable`` model refs run their code."""
    parser.add_argument("--allow-import", action="store_true",
                        help="allow package.module:callable models (runs their code)")


def add_device_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--device auto|cpu|cuda|cuda:N|mps`` (``args.device``); checked when the command runs."""
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help=f"auto, cpu, cuda, cuda:N or mps (default: {default}); auto takes "
                             "CUDA when present")


def add_json_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: print ``what`` as JSON instead of text."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def check_backend(backend: str | None, device: str, precision: str) -> None:
    """nccl only moves GPU tensors: refuse it for a run (or solver) on another device.

    Raises:
        ConfigError: ``backend`` is nccl and ``device`` is not a CUDA device.
    """
    from nncompress.errors import ConfigError
    from nncompress.train.device import resolve_device

    where = resolve_device(device, precision)
    if backend == "nccl" and where.type != "cuda":
        raise ConfigError(f"--dist-backend nccl needs the model on a GPU, and the device "
                          f"is {device!r} ({where.type}); give --device cuda, or use "
                          "--dist-backend gloo")
