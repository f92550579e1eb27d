"""Lint and strict typing run with the tests, so CI (which runs `make test`) enforces them."""

from __future__ import annotations

import subprocess
import sys

from .workerkit import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ruff_check() -> None:
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format() -> None:
    out = run("ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_on_dfcore() -> None:
    out = run("mypy", "dfcore")
    assert out.returncode == 0, out.stdout + out.stderr
