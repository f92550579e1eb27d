"""Least-privilege NATS permissions for the three kinds of DurableFuture process.

docs/security.md ("Permissions") prints these for a namespace and says what each role can and
cannot do; tests/test_permissions.py runs each role against a server configured with them.

- ``client``: a web process or script that starts, signals, cancels and reads workflows;
- ``worker``: runs workflows and activities (and creates the namespace's streams and consumers);
- ``operator``: the read-only tools (``dfcore workflow list|show``, ``dfcore dlq list|show``).

NATS permissions match subjects only. A client must append starts and signals to history
subjects, so it may publish any record there: what that allows, and how an authenticating codec
narrows it, is in docs/security.md ("Threat model").
"""

from __future__ import annotations

from dfcore.jetstream._naming import Layout

ROLES = ("client", "worker", "operator")


def permissions(namespace: str, role: str) -> dict[str, list[str]]:
    """``{"publish": [...], "subscribe": [...]}``: the subjects ``role`` needs in ``namespace``.

    Raises:
        ValueError: ``role`` is not one of :data:`ROLES`.
    """
    lay = Layout(namespace)
    streams = [lay.history_stream, lay.tasks_stream, lay.dlq_stream]
    api = "$JS.API"
    info = [f"{api}.STREAM.INFO.{s}" for s in streams]
    # Watching the workflow index (the dashboard): an ordered consumer on the history stream,
    # which the server sends flow-control requests for.
    watch = [f"{api}.CONSUMER.CREATE.{lay.history_stream}", f"$JS.FC.{lay.history_stream}.>"]
    # Asking the workers who they are, and the queues' consumers what waits (App.workers, queues).
    ask = [
        lay.workers_ask,
        f"{api}.CONSUMER.LIST.{lay.history_stream}",
        f"{api}.CONSUMER.LIST.{lay.tasks_stream}",
    ]
    if role == "client":
        return {
            "publish": [
                f"{namespace}.history.>",  # starts, signals, cancellations
                f"{namespace}.index.>",  # the listing entries of the workflows it starts
                f"{namespace}.sched.*.state",  # app.schedules: create, change, delete
                f"{namespace}.sched.*.at",  # ... and arm their next times
                *info,
                *watch,
                *ask,
                f"{api}.DIRECT.GET.{lay.history_stream}",
            ],
            "subscribe": ["_INBOX.>", lay.status_all, f"{lay.workers_reply}.>"],
        }
    if role == "operator":
        return {
            "publish": [
                *info,
                *watch,
                *ask,
                f"{api}.DIRECT.GET.{lay.history_stream}",
                f"{api}.DIRECT.GET.{lay.dlq_stream}",
            ],
            "subscribe": ["_INBOX.>", f"{lay.workers_reply}.>"],
        }
    if role == "worker":
        consumer_streams = [lay.history_stream, lay.tasks_stream]
        return {
            "publish": [
                f"{namespace}.>",
                *info,
                *(f"{api}.STREAM.{verb}.{s}" for verb in ("CREATE", "UPDATE") for s in streams),
                f"{api}.STREAM.PURGE.{lay.history_stream}",  # an ended workflow's timers
                *(f"{api}.DIRECT.GET.{s}" for s in streams),
                *(
                    f"{api}.CONSUMER.{verb}.{s}.>"
                    for verb in ("CREATE", "INFO", "MSG.NEXT", "UNPIN")
                    for s in consumer_streams
                ),
                *(f"$JS.ACK.{s}.>" for s in consumer_streams),
            ],
            "subscribe": [
                "_INBOX.>",
                lay.activity_cancel_all,
                f"{namespace}.workers.>",
                lay.workers_ask,
                *(f"$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{s}.>" for s in consumer_streams),
            ],
        }
    raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")


def render(namespace: str, passwords: dict[str, str] | None = None) -> str:
    """An ``authorization`` block for a nats-server config: one user per role.

    ``passwords`` maps role to password; placeholders are written without it.
    """
    lines = ["authorization {", "  users: ["]
    for role in ROLES:
        perms = permissions(namespace, role)
        password = (passwords or {}).get(role, f"<{role} password>")
        lines += [
            "    {",
            f"      user: {role}, password: {_quote(password)}",
            "      permissions: {",
            *_allow("publish", perms["publish"]),
            *_allow("subscribe", perms["subscribe"]),
            "      }",
            "    }",
        ]
    return "\n".join([*lines, "  ]", "}", ""])


def _allow(direction: str, subjects: list[str]) -> list[str]:
    quoted = [f"            {_quote(subject)}," for subject in subjects]
    return [f"        {direction}: {{", "          allow: [", *quoted, "          ]", "        }"]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
