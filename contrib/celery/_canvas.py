"""Signatures and the canvas: ``chain``, ``group`` and ``chord`` as one durable workflow.

A canvas is sent as a tree of JSON nodes and carried out by the workflow ``celery.canvas``:
each task is an activity (with its task's retry rules), a chain passes each result on as the
next task's first argument (unless the signature is immutable, ``.si()``), a group runs its
tasks in parallel and gives the list of their results, and a chord runs its body once, after
every task of its header, with that list; no ``chord_unlock`` polls for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dfcore import ActivityError, ApplicationError

from .exceptions import unsupported

if TYPE_CHECKING:
    from ._app import Celery
    from ._result import AsyncResult
    from ._task import Task

WORKFLOW = "celery.task"  # the workflow of a task call (contrib/celery/_task.py)
CANVAS = "celery.canvas"
_NOTHING: dict[str, Any] = {"__dfcore_nothing__": True}  # no result to pass on (at the start)


class Signature:
    """A task call not made yet: ``task.s(*args, **kwargs)`` (``.si()`` for one that ignores
    the result of the task before it in a chain)."""

    def __init__(
        self,
        task: Task,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        #: What ``link()`` and ``link_error()`` added, for ``apply_async``.
        self.links: dict[str, list[Signature | Canvas]] = {"link": [], "link_error": []}

    def __repr__(self) -> str:
        shown = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"{self.task.name}({', '.join(shown)})"

    def __or__(self, other: Signature | Canvas) -> Canvas:
        return chain(self, other)

    def link(self, callback: Signature | Canvas) -> Signature | Canvas:
        """Call ``callback`` after this task succeeded, as ``apply_async(link=...)`` does."""
        self.links["link"].append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Call ``errback`` after this task failed, as ``apply_async(link_error=...)`` does."""
        self.links["link_error"].append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """:meth:`link_error`, returning this signature."""
        self.link_error(errback)
        return self

    def node(self) -> dict[str, Any]:
        if self.links["link"] or self.links["link_error"]:
            raise unsupported(
                f"link() or link_error() on {self!r} inside a chain, group, chord or link"
            )
        return {
            "t": "task",
            "name": self.task.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "immutable": self.immutable,
        }

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Call it, with ``args`` before its own (as Celery's partial signatures do)."""
        for name, added in self.links.items():
            if added:
                given = options.get(name)
                more = list(given) if isinstance(given, list | tuple) else [given] if given else []
                options[name] = [*added, *more]
        return self.task.apply_async(
            [*args, *self.args], {**self.kwargs, **(kwargs or {})}, **options
        )

    @property
    def app(self) -> Celery:
        return self.task.app


class Canvas:
    """A chain, group or chord of signatures; ``apply_async()`` runs it as one workflow."""

    def __init__(self, kind: str, parts: list[Signature | Canvas], body: Signature | None = None):
        if not parts:
            raise ValueError(f"a {kind} needs at least one task")
        self.kind = kind
        self.parts = parts
        self.body = body

    def __or__(self, other: Signature | Canvas) -> Canvas:
        return chain(self, other)

    def __call__(self, body: Signature) -> AsyncResult:
        """``chord(header)(body)``: run the header, then the body."""
        if self.kind != "group":
            raise TypeError(f"a {self.kind} is not called with a body; use chord(header)(body)")
        return Canvas("chord", self.parts, body).apply_async()

    def node(self) -> dict[str, Any]:
        node: dict[str, Any] = {"t": self.kind, "parts": [part.node() for part in self.parts]}
        if self.body is not None:
            node["body"] = self.body.node()
        return node

    @property
    def app(self) -> Celery:
        return self.parts[0].app

    def delay(self) -> AsyncResult:
        return self.apply_async()

    def apply_async(self, task_id: str | None = None, **options: Any) -> AsyncResult:
        """Run the whole canvas as one durable workflow; its result is the last task's (a
        chain), the list of results (a group) or the body's (a chord)."""
        from ._result import AsyncResult

        if options:
            raise unsupported(f"the canvas option {sorted(options)[0]!r}")
        task_id = task_id or str(uuid.uuid4())
        self.app.df_app.start(CANVAS, self.node(), workflow_id=task_id)
        return AsyncResult(task_id, app=self.app)


def chain(*tasks: Signature | Canvas | Iterable[Signature | Canvas]) -> Canvas:
    """Each task gets the result of the one before as its first argument."""
    return Canvas("chain", _flat(tasks))


def group(*tasks: Signature | Canvas | Iterable[Signature | Canvas]) -> Canvas:
    """The tasks run in parallel; the result is the list of theirs, in order."""
    return Canvas("group", _flat(tasks))


def chord(header: Iterable[Signature | Canvas], body: Signature | None = None) -> Any:
    """``chord(header, body)`` or ``chord(header)(body)``: the body runs once, after every
    header task, with the list of their results."""
    parts = _flat([header])
    if body is None:
        return Canvas("group", parts)
    return Canvas("chord", parts, body).apply_async()


def signature(
    name: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
) -> Signature:
    """A signature of the task ``name`` of the current app."""
    from ._app import current_app

    app = current_app()
    app.finalize()
    task = app.tasks.get(name)
    if task is None:
        raise unsupported(f"a signature of {name!r}, which is not a task of this app,")
    return Signature(task, args, kwargs, immutable=bool(options.get("immutable")))


def _flat(tasks: Iterable[Any]) -> list[Signature | Canvas]:
    out: list[Signature | Canvas] = []
    for task in tasks:
        if isinstance(task, Signature | Canvas):
            out.append(task)
        else:
            out.extend(_flat(task))
    return out


async def run_canvas(ctx: Any, node: dict[str, Any], previous: Any = _NOTHING) -> Any:
    """The workflow of a canvas: carry out ``node``, given the result before it."""
    kind = node["t"]
    if kind == "task":
        args = list(node["args"])
        if previous != _NOTHING and not node.get("immutable"):
            args = [previous, *args]
        try:
            return await ctx.activity(node["name"], args, node["kwargs"])
        except ActivityError as exc:
            raise ApplicationError(exc.cause_message, type=exc.cause_type) from None
    if kind == "chain":
        value = previous
        for part in node["parts"]:
            value = await run_canvas(ctx, part, value)
        return value
    if kind == "group":
        return list(await ctx.gather(*(run_canvas(ctx, part, previous) for part in node["parts"])))
    if kind == "chord":
        results = await run_canvas(ctx, {"t": "group", "parts": node["parts"]}, previous)
        return await run_canvas(ctx, node["body"], results)
    raise ApplicationError(f"not a canvas node: {kind!r}", type="ValueError")
