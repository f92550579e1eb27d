"""Building blocks of the ``df`` command, for framework integrations.

``manage.py df_worker`` and ``flask df worker`` take exactly the options of ``df worker``, and
``df_workflow`` mirrors ``df workflow``, by building their parsers with these functions::

    def add_arguments(self, parser):
        cli.add_worker_arguments(parser)

    def handle(self, **options):
        get_app().run_worker(**cli.worker_options(argparse.Namespace(**options)))
"""

from ._cli import (
    add_dlq_arguments,
    add_worker_arguments,
    add_workflow_arguments,
    main,
    run_dlq_command,
    run_workflow_command,
    setup_logging,
    worker_options,
)
from ._worker_thread import WorkerThread

__all__ = [
    "WorkerThread",
    "add_dlq_arguments",
    "add_worker_arguments",
    "add_workflow_arguments",
    "main",
    "run_dlq_command",
    "run_workflow_command",
    "setup_logging",
    "worker_options",
]
