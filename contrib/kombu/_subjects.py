"""AMQP routing as NATS subjects: the server routes, so no process keeps a binding table.

A message published to exchange ``E`` with routing key ``a.b`` goes to the subject
``<prefix>.x.E.a.b``; the default exchange (``""``) is ``=``. A queue is a durable JetStream
consumer whose filter subjects are its bindings: ``<prefix>.x.E.key`` for a direct exchange,
the key as a pattern for a topic exchange (``*`` is one word, a trailing ``#`` any number),
``<prefix>.x.E.>`` for a fanout exchange, and ``<prefix>.x.=.<queue>`` for the default
exchange, which every queue is bound to. The stream keeps a message until every queue it
reached has acknowledged it (interest retention), so two queues bound to one key both get it.

Names that are not plain subject tokens (a dot in an exchange name, a space, ``*``) are written
as ``=`` and their URL-safe base64, so the mapping is one-to-one.
"""

from __future__ import annotations

import base64
import hashlib
import re

_TOKEN = re.compile(r"[!-~]+")  # printable ASCII without space
_UNSAFE = set(".*>=")
_CONSUMER = re.compile(r"[A-Za-z0-9_-]{1,64}")


def token(name: str) -> str:
    """``name`` as one subject token."""
    if _TOKEN.fullmatch(name) and not _UNSAFE & set(name):
        return name
    return encoded(name)


def encoded(name: str) -> str:
    """``=`` and the URL-safe base64 of ``name``: a token and a key-value key for any name."""
    return "=" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def key_tokens(routing_key: str) -> str:
    """A routing key as subject tokens: one per dot-separated word."""
    return ".".join(token(word) for word in routing_key.split("."))


def message_subject(prefix: str, exchange: str, routing_key: str) -> str:
    return f"{prefix}.x.{token(exchange)}.{key_tokens(routing_key)}"


def binding_filters(prefix: str, exchange: str, kind: str, routing_key: str) -> list[str]:
    """The filter subjects of a binding of ``exchange`` (of type ``kind``) with ``routing_key``.

    Raises:
        ValueError: a topic pattern has ``#`` before its last word, which NATS cannot match.
    """
    base = f"{prefix}.x.{token(exchange)}"
    if kind == "fanout":
        return [f"{base}.>"]
    if kind != "topic":
        return [f"{base}.{key_tokens(routing_key)}"]
    words = routing_key.split(".")
    if "#" in words[:-1]:
        raise ValueError(
            f"the topic binding {routing_key!r} has '#' before its last word; on NATS, '#' "
            "may only end a pattern (use '*' for one word)"
        )
    body = [w if w == "*" else token(w) for w in words]
    if words[-1] != "#":
        return [".".join([base, *body])]
    if len(words) == 1:
        return [f"{base}.>"]
    head = ".".join([base, *body[:-1]])
    return [head, f"{head}.>"]  # AMQP's '#' matches no word too


def queue_filter(prefix: str, queue: str) -> str:
    """The default exchange's binding of ``queue``."""
    return message_subject(prefix, "", queue)


def consumer_name(queue: str) -> str:
    """The durable consumer of ``queue``."""
    if _CONSUMER.fullmatch(queue):
        return queue
    digest = hashlib.sha256(queue.encode()).hexdigest()[:24]
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", queue)[:32]
    return f"{readable}-{digest}"


def covers(wide: str, narrow: str) -> bool:
    """Whether every subject ``narrow`` matches is matched by ``wide`` too."""
    w, n = wide.split("."), narrow.split(".")
    for i, part in enumerate(w):
        if part == ">":
            return len(n) > i and all(t != "" for t in n[i:])
        if i >= len(n):
            return False
        if part != "*" and (part != n[i] or n[i] in ("*", ">")):
            return False
        if part == "*" and n[i] == ">":
            return False
    return len(w) == len(n)


def minimal(filters: list[str]) -> list[str]:
    """``filters`` without those another one covers (JetStream refuses overlapping filters)."""
    out: list[str] = []
    for candidate in dict.fromkeys(filters):
        if any(covers(kept, candidate) for kept in out):
            continue
        out = [kept for kept in out if not covers(candidate, kept)]
        out.append(candidate)
    return out


def vhost_names(virtual_host: str) -> tuple[str, str]:
    """The subject prefix and stream of a virtual host (``/`` or empty: the default)."""
    vhost = virtual_host.strip("/")
    if not vhost:
        return "kombu", "KOMBU"
    name = vhost if _CONSUMER.fullmatch(vhost) else hashlib.sha256(vhost.encode()).hexdigest()[:16]
    return f"kombu-{name}", f"KOMBU-{name}"
