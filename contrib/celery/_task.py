"""Celery tasks on durable workflows: each call is one workflow running one activity.

``task.delay(...)`` starts the workflow ``celery.task`` under the call's task id. It waits out
a ``countdown`` or ``eta`` on a durable timer (no worker holds the message meanwhile), then runs
the task's function as an activity, with Celery's retry rules: an exception retries only when
``autoretry_for`` names it or the task calls ``self.retry()``, up to ``max_retries``, after the
countdown Celery would use. The activity fails for good otherwise, and so does the workflow,
with the exception's type and message. Its ``link`` and ``link_error`` signatures are started
by the workflow, after the task (``_links``).
"""

from __future__ import annotations

import contextvars
import random
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dfcore import ActivityError, ApplicationError, RetryPolicy, activity

from ._canvas import WORKFLOW
from ._links import link_nodes, start_errbacks, start_links
from .exceptions import CeleryError, MaxRetriesExceededError, Retry, rebuild, unsupported

if TYPE_CHECKING:
    from ._app import Celery
    from ._canvas import Signature
    from ._result import AsyncResult

#: Options of ``@app.task`` this facade carries out (the rest raise, naming the option).
TASK_OPTIONS = frozenset(
    {
        "bind",
        "name",
        "queue",
        "autoretry_for",
        "dont_autoretry_for",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "max_retries",
        "default_retry_delay",
        "retry_kwargs",
        "time_limit",
        "soft_time_limit",
        "ignore_result",
        "acks_late",
        "typing",
        "serializer",
    }
)
#: Options of ``apply_async`` it carries out.
CALL_OPTIONS = frozenset(
    {"countdown", "eta", "expires", "task_id", "queue", "serializer", "link", "link_error"}
)
_NO_TIME_LIMIT = 24 * 3600.0  # a task without time_limit: a day per attempt, not five minutes
_TRACEBACK_CHARS = 8000


@dataclass
class Request:
    """``self.request`` in a bound task."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    retries: int = 0
    delivery_info: dict[str, Any] = field(default_factory=dict)

    @property
    def called_directly(self) -> bool:
        return False


@dataclass(frozen=True)
class _Call:
    """One call of a task, as ``apply_async`` sends it: the id, the queue, the workflow's
    arguments."""

    task_id: str
    queue: str | None
    args: list[Any]


_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar("celery_request")


class Task:
    """A function registered with ``@app.task`` or ``@shared_task``.

    Call it to run the function here and now (as Celery does); ``delay`` and ``apply_async``
    run it durably on a worker.
    """

    def __init__(self, app: Celery, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise unsupported(f"the task option {sorted(unknown)[0]!r}")
        self.app = app
        self.run = fn
        self.name: str = options.get("name") or f"{fn.__module__}.{fn.__qualname__}"
        self.bind = bool(options.get("bind", False))
        self.queue: str | None = options.get("queue")
        self.autoretry_for: tuple[type[BaseException], ...] = tuple(
            options.get("autoretry_for", ())
        )
        self.dont_autoretry_for: tuple[type[BaseException], ...] = tuple(
            options.get("dont_autoretry_for", ())
        )
        self.max_retries: int | None = options.get("max_retries", 3)
        self.default_retry_delay: float = float(options.get("default_retry_delay", 180))
        self.retry_backoff: bool | float = options.get("retry_backoff", False)
        self.retry_backoff_max: float = float(options.get("retry_backoff_max", 600))
        self.retry_jitter: bool = bool(options.get("retry_jitter", True))
        self.retry_kwargs: dict[str, Any] = dict(options.get("retry_kwargs", {}))
        self.time_limit: float | None = options.get("time_limit")
        self.ignore_result = bool(options.get("ignore_result", False))
        if "max_retries" in self.retry_kwargs:
            self.max_retries = self.retry_kwargs["max_retries"]
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__doc__ = fn.__doc__
        app._df_app.activity(
            name=self.name,
            retry=RetryPolicy(max_attempts=0),  # the attempt itself decides, by Celery's rules
            timeout=float(self.time_limit or _NO_TIME_LIMIT),
        )(self._attempt)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(self, *args, **kwargs) if self.bind else self.run(*args, **kwargs)

    @property
    def request(self) -> Request:
        """The current call, inside a bound task running on a worker."""
        request = _request.get(None)
        if request is None:
            return Request(id="", task=self.name, args=[], kwargs={})
        return request

    # -- calling ----------------------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this call, to make later or in a chain, group or chord."""
        from ._canvas import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain it does not get the result before it."""
        from ._canvas import Signature

        return Signature(self, args, kwargs, immutable=True)

    signature = s

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Run the task on a worker: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Run the task on a worker, once: ``task_id=`` makes a repeated call start nothing.

        Options: ``countdown`` (seconds) or ``eta`` (a datetime), waited out on a durable
        timer; ``expires`` (seconds or a datetime): a task not started by then is revoked;
        ``task_id``; ``queue``; ``link`` and ``link_error``: signatures (or lists of them) to
        call after the task succeeded (with its result) or failed.
        """
        from ._result import AsyncResult

        call = self._call(args, kwargs, options)
        self.app.df_app.start(WORKFLOW, *call.args, workflow_id=call.task_id, task_queue=call.queue)
        return AsyncResult(call.task_id, app=self.app)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay``, if and only if the current Django transaction commits (Django only)."""
        return self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``apply_async``, if and only if the current Django transaction commits.

        The call is written to DurableFuture's outbox in the transaction and sent after the
        commit (or by the relay, if this process dies first); a rollback sends nothing. The
        task id is known at once: the result is returned now (Celery returns None).

        Raises:
            CeleryError: Django, or DurableFuture's Django app, is not installed.
        """
        from ._result import AsyncResult

        start_on_commit = _outbox()
        call = self._call(args, kwargs, options)
        start_on_commit(
            self.app._task_workflow, *call.args, workflow_id=call.task_id, task_queue=call.queue
        )
        return AsyncResult(call.task_id, app=self.app)

    def _call(
        self, args: Sequence[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any]
    ) -> _Call:
        unknown = set(options) - CALL_OPTIONS
        if unknown:
            raise unsupported(f"the apply_async option {sorted(unknown)[0]!r}")
        queue = options.get("queue") or self.queue
        here = self._default_queue()
        links = {
            "link": link_nodes(options.get("link"), here),
            "link_error": link_nodes(options.get("link_error"), here, errback=True),
        }
        start = [
            self.name,
            list(args or ()),
            dict(kwargs or {}),
            _seconds_until(options.get("eta"), options.get("countdown")),
            _deadline(options.get("expires")),
        ]
        if links["link"] or links["link_error"]:
            start.append({name: nodes for name, nodes in links.items() if nodes})
        return _Call(str(options.get("task_id") or uuid.uuid4()), queue, start)

    def _default_queue(self) -> str:
        return str(self.app.df_app.settings.task_queue)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **_: Any,
    ) -> Retry:
        """Retry this call later (raise what it returns, or let it raise: it does)."""
        limit = self.max_retries if max_retries is None else max_retries
        retries = self.request.retries
        if limit is not None and retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{self.request.id}] args:{self.request.args} "
                f"kwargs:{self.request.kwargs}"
            )
        raise Retry(exc=exc, when=self.default_retry_delay if countdown is None else countdown)

    # -- the activity -----------------------------------------------------------------------

    def _attempt(
        self, args: list[Any], kwargs: dict[str, Any], failure: dict[str, Any] | None = None
    ) -> Any:
        info = activity.info()
        request = Request(info.workflow_id, self.name, args, kwargs, retries=info.attempt - 1)
        called_with = [*self._failure_args(failure), *args] if failure else args
        token = _request.set(request)
        try:
            return self(*called_with, **kwargs)
        except Retry as retry:
            raise _retry_later(retry.exc, retry.when) from retry.exc
        except Exception as exc:
            if self._autoretries(exc):
                if self.max_retries is not None and request.retries >= self.max_retries:
                    raise _for_good(exc) from exc
                raise _retry_later(exc, self._countdown(request.retries)) from exc
            raise _for_good(exc) from exc
        finally:
            _request.reset(token)

    @staticmethod
    def _failure_args(failure: dict[str, Any]) -> list[Any]:
        """``(request, exc, traceback)`` of the failed task, for an errback that takes them."""
        failed = Request(failure["id"], failure["task"], failure["args"], failure["kwargs"])
        return [failed, rebuild(failure["type"], failure["message"]), failure.get("traceback")]

    def _autoretries(self, exc: BaseException) -> bool:
        return isinstance(exc, self.autoretry_for) and not isinstance(exc, self.dont_autoretry_for)

    def _countdown(self, retries: int) -> float:
        """Celery's countdown before retry ``retries + 1``."""
        if "countdown" in self.retry_kwargs:
            return float(self.retry_kwargs["countdown"])
        if not self.retry_backoff:
            return self.default_retry_delay
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(self.retry_backoff_max, factor * 2**retries)
        return random.uniform(0, delay) if self.retry_jitter else delay


def _retry_later(exc: BaseException | None, countdown: float) -> ApplicationError:
    kind = type(exc).__name__ if exc is not None else "Retry"
    return ApplicationError(
        str(exc or "retry"),
        *_traceback(exc),
        type=kind,
        next_retry_delay=max(countdown, 0.0),
    )


def _for_good(exc: BaseException) -> ApplicationError:
    return ApplicationError(str(exc), *_traceback(exc), type=type(exc).__name__, non_retryable=True)


def _traceback(exc: BaseException | None) -> list[dict[str, str]]:
    """The failure's details: the task's traceback, as Celery stores it (its last part)."""
    if exc is None:
        return []
    text = "".join(traceback.format_exception(exc))
    return [{"traceback": text[-_TRACEBACK_CHARS:]}]


def traceback_in(details: Any) -> str | None:
    """The traceback a failed attempt's details hold, if any."""
    for detail in details if isinstance(details, list | tuple) else ():
        if isinstance(detail, dict) and isinstance(detail.get("traceback"), str):
            return str(detail["traceback"])
    return None


def _seconds_until(eta: datetime | None, countdown: float | None) -> float:
    if eta is not None:
        when = eta if eta.tzinfo else eta.replace(tzinfo=UTC)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return max(float(countdown or 0), 0.0)


def _deadline(expires: float | datetime | timedelta | None) -> float | None:
    """``expires`` as epoch seconds."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return (expires if expires.tzinfo else expires.replace(tzinfo=UTC)).timestamp()
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else float(expires)
    return datetime.now(UTC).timestamp() + seconds


async def run_task(
    ctx: Any,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    countdown: float,
    expires: float | None,
    calls: dict[str, Any] | None = None,
) -> Any:
    """The workflow of every call: wait out the countdown, run the task once, then start its
    links (``calls["link"]``) or errbacks (``calls["link_error"]``); ``calls["failure"]``
    makes the task an errback called with the failed task's request, exception and
    traceback."""
    calls = calls or {}
    if countdown > 0:
        ctx.logger.info("waiting %ss before %s", countdown, name)
        await ctx.sleep(countdown)
    if expires is not None and ctx.now().timestamp() > expires:
        raise ApplicationError(f"task {name} expired before it ran", type="TaskRevokedError")
    extra = [calls["failure"]] if "failure" in calls else []
    try:
        result = await ctx.activity(name, args, kwargs, *extra)
    except ActivityError as exc:  # the task's own exception, as Celery reports it
        failure = {
            "id": ctx.info.workflow_id,
            "task": name,
            "args": args,
            "kwargs": kwargs,
            "type": exc.cause_type,
            "message": exc.cause_message,
            "traceback": traceback_in(exc.details),
        }
        await start_errbacks(ctx, calls.get("link_error", ()), failure)
        raise ApplicationError(exc.cause_message, type=exc.cause_type) from None
    await start_links(ctx, calls.get("link", ()), result)
    return result


def _outbox() -> Callable[..., Any]:
    """Django's ``start_on_commit``, or an error that says what to install."""
    try:
        from dfcore.integrations.django import start_on_commit
    except (ImportError, RuntimeError) as exc:  # not installed, or not in INSTALLED_APPS
        raise CeleryError(
            "delay_on_commit and apply_async_on_commit need Django and DurableFuture's Django "
            "app: pip install 'durablefuture[django]' and add 'dfcore.integrations.django' to "
            f"INSTALLED_APPS ({exc})"
        ) from exc
    return start_on_commit
