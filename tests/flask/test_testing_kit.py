"""docs/testing.md's Flask example: an app's workflow tested with dfcore.testing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from dfcore.testing import WorkflowEnvironment
from tests.flask.conftest import Factory
from tests.flaskapp import df, greet_later


@pytest.fixture
def web(make_flask_app: Factory) -> Flask:
    return make_flask_app()


@pytest.fixture
def env(web: Flask, df_env: Callable[..., WorkflowEnvironment]) -> WorkflowEnvironment:
    return df_env(df.get_app(web))


def test_a_week_later_in_a_flask_app(web: Flask, env: WorkflowEnvironment) -> None:
    with web.app_context():
        text = env.run_sync(greet_later, "ida", 7, workflow_id="later-ida")
    assert text.startswith("hello ida from tests.flaskapp")
