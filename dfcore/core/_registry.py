"""The registry: which workflows and activities a process defines, by name."""

from __future__ import annotations

import difflib
import functools
from typing import Any, Generic, ParamSpec, TypeVar

from dfcore.core._call_args import return_hint
from dfcore.core._definitions import ActivityDefinition, ActivityOptions, WorkflowDefinition
from dfcore.core._errors import ConfigurationError, RegistrationError
from dfcore.core._schedules import ScheduleSpec

P = ParamSpec("P")
T = TypeVar("T")


class ActivityFunction(Generic[P, T]):
    """A registered activity. Calling it runs the function directly (not durably)."""

    def __init__(self, definition: ActivityDefinition) -> None:
        self.definition = definition
        functools.update_wrapper(self, definition.fn)

    @property
    def name(self) -> str:
        return self.definition.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.definition.fn(*args, **kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<activity {self.name!r}>"


class Registry:
    """Workflow and activity definitions by name, as a worker looks them up.

    Attributes:
        workflows: workflow definitions by name.
        activities: activity definitions by name.
    """

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDefinition] = {}
        self.activities: dict[str, ActivityDefinition] = {}
        self._by_fn: dict[Any, ActivityDefinition] = {}
        self.schedules: list[ScheduleSpec] = []  # declared with @app.schedule

    def add_workflow(self, defn: WorkflowDefinition) -> None:
        """Register a workflow under its name.

        Raises:
            RegistrationError: another function is registered under that name.
        """
        _register(self.workflows, defn.name, defn, "workflow")

    def add_schedule(self, spec: ScheduleSpec) -> None:
        """Declare a schedule (``@app.schedule``).

        Raises:
            ConfigurationError: its id is declared already, with another spec.
        """
        for known in self.schedules:
            if known.schedule_id == spec.schedule_id and not known.same_as(spec):
                raise ConfigurationError(
                    f"schedule {spec.schedule_id!r} is declared twice with different specs "
                    f"({spec.describe()} for {spec.workflow!r}, and {known.describe()} for "
                    f"{known.workflow!r}); give each schedule its own id"
                )
        if not any(known.schedule_id == spec.schedule_id for known in self.schedules):
            self.schedules.append(spec)

    def add_activity(self, defn: ActivityDefinition) -> ActivityFunction[..., Any]:
        """Register an activity under its name and return the callable that stands for it.

        Raises:
            RegistrationError: another function is registered under that name.
        """
        _register(self.activities, defn.name, defn, "activity")
        wrapper: ActivityFunction[..., Any] = ActivityFunction(defn)
        self._by_fn[defn.fn] = defn
        self._by_fn[wrapper] = defn
        return wrapper

    def lookup_activity(self, ref: Any) -> tuple[str, ActivityOptions, Any]:
        """Resolve what workflow code passed to ``ctx.activity``: name, options, result type.

        Raises:
            RegistrationError: ``ref`` is a function that is not a registered activity.
        """
        if isinstance(ref, ActivityFunction):
            defn = ref.definition
        elif isinstance(ref, str):
            found = self.activities.get(ref)
            if found is None:
                return ref, ActivityOptions(), None  # may live on other workers
            defn = found
        elif (found := _hashable_get(self._by_fn, ref)) is not None:
            defn = found
        else:
            raise RegistrationError(
                f"{getattr(ref, '__qualname__', ref)!r} is not an activity: decorate it with "
                "@app.activity, or pass the registered activity name as a string"
            )
        return defn.name, defn.options, return_hint(defn.fn)

    def unknown_workflow(self, name: str, owner: str) -> RegistrationError:
        """The error for starting ``name``, which is not among the workflows of ``owner``."""
        known = sorted(self.workflows)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        return RegistrationError(
            f"{owner} has no workflow named {name!r}{hint}; its workflows are: "
            f"{shown}. Define it with @app.workflow in a module this process imports, or "
            "start it by its function"
        )


def _register(registry: dict[str, Any], name: str, defn: Any, kind: str) -> None:
    existing = registry.get(name)
    if existing is not None and existing.fn is not defn.fn:
        where = f"{existing.fn.__module__}.{existing.fn.__qualname__}"
        raise RegistrationError(
            f"{kind} name {name!r} is already registered by {where}; "
            f"pass name='...' to @app.{kind} to give one of them another name"
        )
    registry[name] = defn


def _hashable_get(mapping: dict[Any, ActivityDefinition], key: Any) -> ActivityDefinition | None:
    try:
        return mapping.get(key)
    except TypeError:
        return None


__all__ = ["ActivityFunction", "Registry"]
