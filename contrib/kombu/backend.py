"""A Celery result backend on a JetStream key-value bucket: ``result_backend = "dfnats://..."``.

Results are kept in the bucket ``celery-results`` (``result_backend_transport_options =
{"bucket": ...}``) for ``result_expires`` (a day by default): the bucket's age limit removes
them, so no clean-up task is needed. ``incr`` is a compare-and-set on the server, so a chord's
body is applied by whichever header task finishes last, without ``chord_unlock`` polling.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats.js.errors
from celery.backends.base import KeyValueStoreBackend
from celery.exceptions import ImproperlyConfigured
from nats.js import api

from ._bridge import bridge
from ._errors import CONNECTION_ERRORS
from ._subjects import encoded

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
        self._js: Any = None

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
                self._js = js
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
        return self._run(partial(_value, _key(key)))

    def mget(self, keys: list[bytes | str]) -> list[bytes | None]:
        """The values of ``keys`` (a group's results), read at once."""
        names = [_key(key) for key in keys]

        async def read(kv: Any) -> list[bytes | None]:
            return list(await asyncio.gather(*(_value(name, kv) for name in names)))

        return self._run(read)

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

    async def _write(self, name: str, value: int, headers: dict[str, str], kv: Any) -> None:
        await self._js.publish(f"$KV.{self.bucket}.{name}", str(value).encode(), headers=headers)

    def incr(self, key: bytes | str) -> int:
        """Add one to the counter ``key`` (from 0) with compare-and-set; the new value.

        Each write names itself (``Nats-Msg-Id``), so a write retried after a lost reply is
        the same write and the server keeps it once: a chord's counter never counts a header
        task twice.
        """
        name = _key(key)
        known: int | None = None  # the last sequence the server named, for a purged counter
        for _ in range(_CAS_TRIES):
            revision, value = self._run(partial(_counter, name))
            if known is not None and value == 0:
                revision = known
            headers = {
                "Nats-Expected-Last-Subject-Sequence": str(revision),
                "Nats-Msg-Id": f"incr:{name}@{revision}:{uuid.uuid4().hex}",  # this writer's
            }
            try:
                self._run(partial(self._write, name, value + 1, headers))
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code not in (10071, 10164):
                    raise
                last = re.search(r"(\d+)\s*$", exc.description or "")  # "wrong last sequence: 7"
                known = int(last.group(1)) if last else None
                continue  # another writer came first: read again
            return value + 1
        raise RuntimeError(f"could not increment {name!r}: {_CAS_TRIES} writers raced")

    def expire(self, key: bytes | str, value: Any) -> None:
        """Keys live as long as the bucket's age limit (``result_expires``)."""


def _key(key: bytes | str) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    if _KEY.fullmatch(text) and not text.startswith(".") and not text.endswith("."):
        return text
    return encoded(text)


async def _value(name: str, kv: Any) -> bytes | None:
    try:
        entry = await kv.get(name)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry.value or None


async def _counter(name: str, kv: Any) -> tuple[int, int]:
    """The revision the counter ``name`` is at (0: never written), and its value."""
    try:
        entry = await kv.get(name)
    except nats.js.errors.KeyDeletedError as deleted:  # purged: counting starts again
        return int(getattr(deleted.entry, "revision", 0) or 0), 0
    except nats.js.errors.KeyNotFoundError:
        return 0, 0
    return int(entry.revision), int(entry.value or b"0")
