"""Lint and strict typing run with the tests, so CI (which runs `make test`) enforces them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


MYPY_INTEGRATIONS = """\
[mypy]
python_version = 3.11
strict = True
warn_unreachable = True
plugins = mypy_django_plugin.main
mypy_path = {tree}:{shop}
cache_dir = {tree}/.mypy_cache
[mypy.plugins.django-stubs]
django_settings_module = tests.django_settings
[mypy-nats,nats.*]
ignore_missing_imports = True
[mypy-celery,celery.*]
ignore_missing_imports = True
[mypy-dfcore.contrib.kombu.*]
# kombu's and Celery's classes are subclassed here, and most of their methods are untyped
disallow_untyped_calls = False
disallow_subclassing_any = False
"""


def test_mypy_strict_on_integrations_and_contrib(tmp_path: Path) -> None:
    """Checked under the names they are installed as, dfcore.integrations and dfcore.contrib
    (pyproject's package-dir), in a tree of links; Django's types from django-stubs."""
    package = tmp_path / "dfcore"
    package.mkdir()
    for entry in (ROOT / "dfcore").iterdir():
        (package / entry.name).symlink_to(entry)
    for extra in ("integrations", "contrib"):
        (package / extra).symlink_to(ROOT / extra)
    shop = ROOT / "example_projects" / "django_shop"  # the test settings install its app
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_INTEGRATIONS.format(tree=tmp_path, shop=shop))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "-p", "dfcore"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(shop)])},
    )
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
