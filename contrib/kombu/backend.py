"""A Celery result backend on a JetStream key-value bucket: ``result_backend = "dfnats://..."``.

Results are kept in the bucket ``celery-results`` (``result_backend_transport_options =
{"bucket": ...}``) for ``result_expires`` (a day by default): the bucket's age limit removes
them, so no clean-up task is needed. ``incr`` is a compare-and-set on the server, so a chord's
body is applied by whichever header task finishes last, without ``chord_unlock`` polling.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats.js.errors
from celery.backends.base import KeyValueStoreBackend
from celery.exceptions import ImproperlyConfigured
from nats.js import api

from ._bridge import bridge
from .transport import CONNECTION_ERRORS

log = logging.getLogger("dfcore.contrib.kombu")
_T = TypeVar("_T")
_RETRIED: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS,)

_KEY = re.compile(r"[-/_.a-zA-Z0-9]+")  # a plain key; others are "=" and base64
_TIMEOUT = 10.0
_CAS_TRIES = 100


class JetStreamBackend(KeyValueStoreBackend):
    """Task results in a JetStream key-value bucket."""

    supports_autoexpire = True
    implements_incr = True

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        options = dict(self.app.conf.get("result_backend_transport_options") or {})
        self.url = url or "dfnats://127.0.0.1:4222"
        parts = urlsplit(self.url)
        if parts.scheme not in ("dfnats", "dfnatss"):
            raise ImproperlyConfigured(
                f"result_backend {self.url!r}: dfcore.contrib.kombu's backend takes "
                "dfnats://host:port (or dfnatss:// for TLS)"
            )
        scheme = "tls" if parts.scheme == "dfnatss" else "nats"
        hosts = (parts.netloc or "127.0.0.1:4222").split(",")
        self._servers = [f"{scheme}://{host}" for host in hosts]
        self.bucket = str(options.get("bucket", "celery-results"))
        self.replicas = int(options.get("replicas", 1))
        self.retry_for = float(options.get("retry_for", 30.0))
        expires = (
            self.expires.total_seconds() if isinstance(self.expires, timedelta) else self.expires
        )
        self._ttl = float(expires) if expires else None
        self._kv: Any = None
        self._kv_client: Any = None

    async def _open(self, js: Any) -> Any:
        """The results bucket (made on first use)."""
        try:
            return await js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            config = api.KeyValueConfig(
                bucket=self.bucket,
                ttl=self._ttl,
                storage=api.StorageType.FILE,
                replicas=self.replicas,
                description="Celery task results (dfcore.contrib.kombu)",
            )
            return await js.create_key_value(config)

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``make(bucket)`` on the loop; through a server restart, try again for
        ``retry_for`` seconds (30) before giving up."""
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                client, js = bridge.connect(
                    self._servers, name="celery-results", max_reconnect_attempts=-1
                )
                if self._kv is None or self._kv_client is not client:
                    self._kv = bridge.run(self._open(js), timeout=_TIMEOUT)
                    self._kv_client = client
                return bridge.run(make(self._kv), timeout=_TIMEOUT)
            except _RETRIED as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("result backend: %r; trying again", exc)
                time.sleep(0.5)

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """With ``result_backend_always_retry``, Celery retries what the server's absence
        raised."""
        return isinstance(exc, _RETRIED)

    def get(self, key: bytes | str) -> bytes | None:
        async def get(kv: Any) -> bytes | None:
            try:
                entry = await kv.get(_key(key))
            except nats.js.errors.KeyNotFoundError:
                return None
            return entry.value or None

        return self._run(get)

    def mget(self, keys: list[bytes | str]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def set(self, key: bytes | str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._run(lambda kv: kv.put(_key(key), data))

    def delete(self, key: bytes | str) -> None:
        async def delete(kv: Any) -> None:
            try:
                await kv.purge(_key(key))
            except nats.js.errors.KeyNotFoundError:
                pass

        self._run(delete)

    def incr(self, key: bytes | str) -> int:
        """Add one to the counter ``key`` (from 0), with compare-and-set; the new value."""
        name = _key(key)

        async def incr(kv: Any) -> int:
            for _ in range(_CAS_TRIES):
                try:
                    entry = await kv.get(name)
                except nats.js.errors.KeyNotFoundError:
                    try:
                        await kv.create(name, b"1")
                        return 1
                    except nats.js.errors.KeyWrongLastSequenceError:
                        continue
                value = int(entry.value or b"0") + 1
                try:
                    await kv.update(name, str(value).encode(), last=entry.revision)
                    return value
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
            raise RuntimeError(f"could not increment {name!r}: {_CAS_TRIES} writers raced")

        return self._run(incr)

    def expire(self, key: bytes | str, value: Any) -> None:
        """Keys live as long as the bucket's age limit (``result_expires``)."""

    def as_uri(self, include_password: bool = False) -> str:
        return self.url


def _key(key: bytes | str) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    if _KEY.fullmatch(text) and not text.startswith(".") and not text.endswith("."):
        return text
    return "=" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
