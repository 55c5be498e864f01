"""``nncompress`` entry point: exit codes for user errors, bugs, interrupts and closed pipes."""

from __future__ import annotations

import argparse

import pytest

from nncompress import __version__
from nncompress.cli import main
from nncompress.cli import report as report_command
from nncompress.errors import ConfigError


def _failing(exc: BaseException):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        raise exc

    return run


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert main([]) == 1
    assert main(["no-such-command"]) == 1


@pytest.mark.parametrize(("exc", "code"), [
    (ConfigError("bad value"), 1), (RuntimeError("bug"), 3), (KeyboardInterrupt(), 130),
    (BrokenPipeError(), 141),
], ids=["user-error", "bug", "interrupt", "closed-pipe"])
def test_exit_codes(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
                    exc: BaseException, code: int) -> None:
    monkeypatch.setattr(report_command, "run", _failing(exc))
    assert main(["report", "somewhere"]) == code
    err = capfd.readouterr().err
    if code == 1:
        assert err == "nncompress: error: bad value\n"
    if code == 3:
        assert "RuntimeError: bug" in err and "internal error (exit 3)" in err
