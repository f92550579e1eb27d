"""DurableFuture: durable workflows for Python web applications, on NATS JetStream.

Quick start::

    from dfcore import App

    app = App("shop")

    @app.activity(timeout=30)
    def charge(customer: str, amount: float) -> dict: ...

    @app.workflow
    async def order(ctx, customer: str, amount: float) -> dict:
        return await ctx.activity(charge, customer, amount)

    handle = order.start("bob", 10.0, workflow_id="order-42")
    handle.result(timeout=30)
"""

from dfcore import activity
from dfcore._app import App, WorkflowFunction
from dfcore.client._handle import WorkflowHandle, WorkflowStatus
from dfcore.client._schedules import Schedule
from dfcore.client._start import PreparedStart
from dfcore.core._children import ChildWorkflowHandle
from dfcore.core._codec import IdentityCodec, JSONConverter, PayloadCodec
from dfcore.core._config import Advice, Settings
from dfcore.core._context import WorkflowContext, WorkflowInfo
from dfcore.core._definitions import RetryPolicy
from dfcore.core._errors import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    CodecKeyError,
    CodecUnavailableError,
    ConfigurationError,
    DFConnectionError,
    DFError,
    NondeterminismError,
    PayloadError,
    PayloadTooLargeError,
    RegistrationError,
    SerializationError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from dfcore.core._history import EventType, HistoryEvent
from dfcore.core._observe import (
    AttemptObservation,
    ObservedAttempt,
    ObservedGauges,
    ObservedInput,
    ObservedQueue,
    ObservedStart,
    ObservedTask,
    Observer,
)
from dfcore.core._registry import ActivityFunction
from dfcore.core._schedules import ScheduleSpec
from dfcore.jetstream._dlq import DeadLetter
from dfcore.jetstream._index import WorkflowSummary, WorkflowWatch
from dfcore.jetstream._naming import check_task_queue, check_workflow_id
from dfcore.jetstream._server import EmbeddedServer
from dfcore.jetstream._workers import QueueInfo, RunningActivity, WorkerInfo
from dfcore.worker._metrics import METRICS, Metric, MetricSink, MetricsObserver
from dfcore.worker._worker import Worker

__version__ = "0.1.0"

__all__ = [
    "METRICS",
    "ActivityError",
    "ActivityFunction",
    "Advice",
    "App",
    "ApplicationError",
    "AttemptObservation",
    "CancelledError",
    "ChildWorkflowError",
    "ChildWorkflowHandle",
    "CodecKeyError",
    "CodecUnavailableError",
    "ConfigurationError",
    "DFConnectionError",
    "DFError",
    "DeadLetter",
    "EmbeddedServer",
    "EventType",
    "HistoryEvent",
    "IdentityCodec",
    "JSONConverter",
    "Metric",
    "MetricSink",
    "MetricsObserver",
    "NondeterminismError",
    "ObservedAttempt",
    "ObservedGauges",
    "ObservedInput",
    "ObservedQueue",
    "ObservedStart",
    "ObservedTask",
    "Observer",
    "PayloadCodec",
    "PayloadError",
    "PayloadTooLargeError",
    "PreparedStart",
    "QueueInfo",
    "RegistrationError",
    "RetryPolicy",
    "RunningActivity",
    "Schedule",
    "ScheduleSpec",
    "SerializationError",
    "Settings",
    "Worker",
    "WorkerInfo",
    "WorkflowAlreadyStartedError",
    "WorkflowContext",
    "WorkflowFailureError",
    "WorkflowFunction",
    "WorkflowHandle",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "WorkflowSummary",
    "WorkflowWatch",
    "__version__",
    "activity",
    "check_task_queue",
    "check_workflow_id",
]
