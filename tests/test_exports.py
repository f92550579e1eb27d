"""The public API is exactly what __all__ says (a change here is an API change)."""

import dfcore


def test_exported_members() -> None:
    assert sorted(dfcore.__all__) == sorted(
        [
            "ActivityError",
            "Advice",
            "ActivityFunction",
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
            "METRICS",
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
    )
    for name in dfcore.__all__:
        assert hasattr(dfcore, name), name


PUBLIC_SUBMODULES = {"activity", "cli", "outbox", "testing", "integrations", "contrib"}
#: The layers' packages (tests/test_layers.py); what is inside them is private.
LAYER_PACKAGES = {"core", "jetstream", "client", "worker"}


def test_private_modules_are_not_reexported() -> None:
    """Only ``__all__`` and the public submodules (once imported) are visible on dfcore."""
    public = {n for n in dir(dfcore) if not n.startswith("_")}
    assert public <= set(dfcore.__all__) | PUBLIC_SUBMODULES | LAYER_PACKAGES


def test_core_never_imports_integrations_or_contrib() -> None:
    import ast
    from pathlib import Path

    core = Path(dfcore.__file__).parent
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            for name in names:
                assert not name.startswith(
                    ("dfcore.integrations", "dfcore.contrib", ".integrations", ".contrib")
                ), (path, name)


def test_integrations_and_contrib_use_only_the_public_api() -> None:
    import ast
    from pathlib import Path

    root = Path(dfcore.__file__).parent.parent
    for folder in ("integrations", "contrib", "example_projects"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                modules: list[str] = []
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                    modules += [f"{node.module}.{a.name}" for a in node.names]
                for module in modules:
                    parts = module.split(".")
                    if parts[0] != "dfcore" or len(parts) < 2:
                        continue
                    inner = parts[1:]  # dfcore.cli is public; its _modules are not
                    assert not any(p.startswith("_") or p in LAYER_PACKAGES for p in inner), (
                        f"{path.relative_to(root)} imports {module}, which is private"
                    )
