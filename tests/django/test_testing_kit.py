"""docs/testing.md's Django example: a project's workflow tested with dfcore.testing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dfcore.integrations.django import get_app
from dfcore.testing import WorkflowEnvironment
from tests.djangoapp.workflows import greet_later


@pytest.fixture
def env(df_env: Callable[..., WorkflowEnvironment]) -> WorkflowEnvironment:
    return df_env(get_app())


def test_a_week_later_in_a_django_project(env: WorkflowEnvironment) -> None:
    assert env.run_sync(greet_later, "ida", 7) == "hello ida"


def test_the_project_app_gets_its_settings_back(
    df_env: Callable[..., WorkflowEnvironment], dfcore_settings: dict[str, str]
) -> None:
    env = df_env(get_app())
    assert get_app().settings.namespace != dfcore_settings["NAMESPACE"]
    env.stop()
    assert get_app().settings.namespace == dfcore_settings["NAMESPACE"]
