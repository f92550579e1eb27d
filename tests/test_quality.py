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


MAX_MODULE_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    """A module that grows past this mixes concerns; split it by concern (docs/architecture.md)."""
    long = {
        str(path.relative_to(ROOT)): lines
        for folder in ("dfcore", "integrations", "contrib")
        for path in (ROOT / folder).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
