"""``app.conf`` and the app's signals, as small as Celery code needs them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: What ``app.conf.<name>`` gives for a setting nobody set (Celery's defaults).
DEFAULTS: dict[str, Any] = {
    "broker_url": None,
    "result_backend": None,
    "timezone": None,
    "enable_utc": True,
    "task_default_queue": None,
}
_MISSING = object()


class Settings(dict[str, Any]):
    """``app.conf``: Celery's settings by their lower-case names, read and set as attributes
    (``app.conf.beat_schedule = {...}``) or as a mapping (``app.conf["timezone"]``,
    ``app.conf.update(...)``). ``changed(name)`` is told of every change."""

    _changed: Callable[[str], None]

    def __init__(self, changed: Callable[[str], None]) -> None:
        super().__init__()
        object.__setattr__(self, "_changed", changed)

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name == "beat_schedule":  # kept, so that changing it in place changes the setting
            return dict.setdefault(self, name, {})
        if name in DEFAULTS:
            return DEFAULTS[name]
        raise AttributeError(f"app.conf has no setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __setitem__(self, name: str, value: Any) -> None:
        before = self.get(name, _MISSING)
        super().__setitem__(name, value)
        try:
            self._changed(name)
        except BaseException:  # refused: the setting stays as it was
            if before is _MISSING:
                super().__delitem__(name)
            else:
                super().__setitem__(name, before)
            raise

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._changed(name)

    def update(self, *others: Mapping[str, Any] | Iterable[tuple[str, Any]], **more: Any) -> None:  # type: ignore[override]
        for name, value in dict(*others, **more).items():
            self[name] = value

    def setdefault(self, name: str, default: Any = None) -> Any:
        if name not in self:
            self[name] = default
        return self[name]


class Signal:
    """``app.on_after_configure`` and ``app.on_after_finalize``: ``@signal.connect`` (bare or
    with options) adds a receiver, called as ``receiver(sender=app, ...)`` when it is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: list[Callable[..., Any]] = []

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    def connect(self, receiver: Callable[..., Any] | None = None, **_: Any) -> Any:
        if receiver is None:
            return self.connect
        if receiver not in self.receivers:
            self.receivers.append(receiver)
        return receiver

    def send(self, sender: Any, **named: Any) -> None:
        for receiver in list(self.receivers):
            receiver(sender=sender, **named)
