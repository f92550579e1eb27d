"""Replaying exported histories against the code on disk, before a deploy ships."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from dfcore._app import App
from dfcore.core import _replay
from dfcore.core._replay import HistoryFileError


def replay(app: App, history: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str]) -> None:
    """Replay one exported history against ``app``'s registered workflows.

    ``history`` is what ``handle.export()`` returns, or the path of a file that
    ``dfcore workflow show ID --json`` wrote. Returns when today's code produces what the
    history recorded (a run that had not ended may go on to new steps: that is no mismatch).

    Raises:
        NondeterminismError: the code changed in a way the history cannot replay; guard the
            change with ``ctx.patched``.
        HistoryFileError: ``history`` is not an exported history.
        DFError: the history's workflow type is not registered on ``app``, or the code raised
            on the way (a bug: the error carries its traceback).
    """
    if isinstance(history, str | os.PathLike):
        source = str(history)
        try:
            data: Any = orjson.loads(Path(history).read_bytes())
        except OSError as exc:
            raise HistoryFileError(f"cannot read {source}: {exc.strerror}") from None
        except orjson.JSONDecodeError as exc:
            raise HistoryFileError(f"{source} is not JSON: {exc}") from None
    else:
        source, data = "the history", history
    workflow_id, records = _replay.read_history(data, source)
    _replay.replay(app.registry, app.settings, workflow_id, records)
