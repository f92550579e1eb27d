"""Helpers for code running inside an activity.

Example::

    from dfcore import activity

    @app.activity(heartbeat_timeout=10)
    def import_rows(path: str) -> int:
        start = activity.info().heartbeat_details or 0   # resume where the last attempt was
        for n, row in enumerate(read(path)[start:], start):
            save(row)
            activity.heartbeat(n)                          # progress, and a liveness signal
        return n
"""

from dfcore.core._activity import ActivityInfo, heartbeat, in_activity, info, is_cancelled

__all__ = ["ActivityInfo", "heartbeat", "in_activity", "info", "is_cancelled"]
