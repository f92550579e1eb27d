"""``link=`` and ``link_error=``: what runs after a task, each call a workflow of its own.

``apply_async`` turns each signature into a JSON node carried in the task's workflow start,
so the workflow, not the process that called it, starts the links: after the task succeeded
each ``link`` with the result as its first argument (not an ``.si()``), after it failed each
``link_error``. They start as child workflows that outlive the task (``"abandon"``) under ids
made from the task's (``<task id>-link-<n>``, ``<task id>-errback-<n>``), the same on every
replay, so a link never starts twice. The task completes once they have started; it does not
wait for them to run (Celery too sends the callbacks, then stores the result).

An errback gets what Celery gives it, by the same rule: a task whose function takes more than
one positional argument (after the signature's own) is called with ``(request, exc,
traceback)`` before them; any other task, and every bound task, is called with the failed
task's id.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from dfcore import ChildWorkflowError

from ._canvas import CANVAS, WORKFLOW, Canvas, Signature
from .exceptions import unsupported

if TYPE_CHECKING:
    from ._task import Task

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def link_nodes(value: Any, queue: str, *, errback: bool = False) -> list[dict[str, Any]]:
    """The nodes of ``link=`` (``errback=False``) or ``link_error=``: a signature, a chain,
    group or chord (``link`` only), or a list of them. ``queue``: where a canvas runs."""
    if value is None:
        return []
    option = "link_error" if errback else "link"
    items = list(value) if isinstance(value, list | tuple) else [value]
    nodes: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Signature):
            nodes.append(_task_node(item, errback))
        elif isinstance(item, Canvas):
            if errback:
                raise unsupported("a chain, group or chord as link_error")
            nodes.append({"t": "canvas", "node": item.node(), "queue": queue})
        else:
            raise TypeError(
                f"{option}= takes a signature, such as task.s() or task.si(), or a list of "
                f"them; got {item!r}"
            )
    return nodes


def _task_node(sig: Signature, errback: bool) -> dict[str, Any]:
    task = sig.task
    node = {**sig.node(), "queue": task.queue or task._default_queue()}
    if errback:
        node["failure"] = not sig.immutable and _takes_failure(task, sig)
    return node


def _takes_failure(task: Task, sig: Signature) -> bool:
    """Whether an errback takes ``(request, exc, traceback)`` (Celery's test: it accepts more
    than one positional argument besides the signature's own, and is not bound)."""
    if task.bind:
        return False
    try:
        params = inspect.signature(partial(task.run, *sig.args, **sig.kwargs)).parameters
    except (TypeError, ValueError):
        params = inspect.signature(task.run).parameters
    kinds = [param.kind for param in params.values()]
    return inspect.Parameter.VAR_POSITIONAL in kinds or sum(k in _POSITIONAL for k in kinds) > 1


# -- in the task's workflow -----------------------------------------------------------------


async def start_links(ctx: Any, nodes: Sequence[dict[str, Any]], result: Any) -> None:
    """Start each ``link`` of a task that returned ``result``."""
    starts = []
    for node in nodes:
        if node["t"] == "canvas":
            starts.append((CANVAS, [node["node"], result], node["queue"]))
        else:
            args = node["args"] if node["immutable"] else [result, *node["args"]]
            starts.append((WORKFLOW, _call(node, args), node["queue"]))
    await _start(ctx, "link", starts)


async def start_errbacks(
    ctx: Any, nodes: Sequence[dict[str, Any]], failure: dict[str, Any]
) -> None:
    """Start each ``link_error`` of a task that failed; ``failure``: its id, name, args,
    kwargs and the exception's type and message."""
    starts = []
    for node in nodes:
        if node["immutable"]:
            args = _call(node, node["args"])
        elif node["failure"]:
            args = [*_call(node, node["args"]), {"failure": failure}]
        else:
            args = _call(node, [failure["id"], *node["args"]])
        starts.append((WORKFLOW, args, node["queue"]))
    await _start(ctx, "errback", starts)


def _call(node: dict[str, Any], args: list[Any]) -> list[Any]:
    """The arguments of ``run_task`` for a call of the node's task, at once."""
    return [node["name"], args, node["kwargs"], 0.0, None]


async def _start(ctx: Any, kind: str, starts: list[tuple[str, list[Any], str]]) -> None:
    parent = ctx.info.workflow_id

    async def start(n: int, workflow: str, args: list[Any], queue: str) -> None:
        child_id = f"{parent}-{kind}-{n}"
        try:
            await ctx.start_child(
                workflow,
                *args,
                workflow_id=child_id,
                task_queue=queue,
                parent_close_policy="abandon",
            )
        except ChildWorkflowError as exc:  # its id is taken: it was started already
            ctx.logger.warning("the %s %s of %s did not start: %s", kind, child_id, parent, exc)

    if starts:
        await ctx.gather(*(start(n, *call) for n, call in enumerate(starts)))
