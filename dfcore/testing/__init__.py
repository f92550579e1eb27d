"""Testing your own workflows: a real nats-server, an in-process worker, and time skipping.

::

    from dfcore.testing import WorkflowEnvironment

    with WorkflowEnvironment(app, nats_url=server.url, namespace="t1") as env:
        assert await env.run(order, "bob", 10.0) == {...}

With pytest, ``pytest_plugins = ["dfcore.testing.plugin"]`` in ``conftest.py`` gives the
fixtures ``df_server`` (one embedded server per test run), ``df_namespace`` (one per test) and
``df_env`` (a factory of environments on both). ``replay(app, "order.json")`` checks that
changed code still replays a history exported with ``dfcore workflow show ID --json``. See
docs/testing.md.
"""

from dfcore.core._replay import HistoryFileError
from dfcore.testing._env import WorkflowEnvironment
from dfcore.testing._replay import replay

__all__ = ["HistoryFileError", "WorkflowEnvironment", "replay"]
