"""The fault-injection suite: real nats-server and ``dfcore worker`` processes, killed with SIGKILL.

At the end of a run that made reports, the table of what each fault did is printed (and written
to the file named by ``DF_FAULT_REPORT``, if set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .harness import REPORTS, Report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the fault table: workflows, lost, started twice, results used twice, re-runs."""
    if not REPORTS:
        return
    lines = [Report.HEADER, _rule()]
    lines += [report.row() for report in REPORTS]
    terminalreporter.write_sep("-", "fault injection")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("DF_FAULT_REPORT")
    if target:
        Path(target).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _rule() -> str:
    return "|" + "---|" * (Report.HEADER.count("|") - 1)
