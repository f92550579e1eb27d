"""The test app's config: in a process started with DF_TEST_TRACE_FILE (a worker of a tracing
test), the project's App is instrumented there, as a project would in its own ``ready()``."""

from __future__ import annotations

import os

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.djangoapp"
    label = "djangoapp"

    def ready(self) -> None:
        path = os.environ.get("DF_TEST_TRACE_FILE")
        if path:
            from dfcore.contrib.tracing import instrument
            from dfcore.integrations.django import get_app
            from tests.tracing.spans import file_provider

            instrument(get_app(), tracer_provider=file_provider(path), metrics=False)
