"""Building blocks of the ``df`` command, for framework integrations.

``manage.py df_worker`` and ``flask df worker`` take exactly the options of ``df worker``, and
``df_workflow`` mirrors ``df workflow``, by building their parsers with these functions::

    def add_arguments(self, parser):
        cli.add_worker_arguments(parser)

    def handle(self, **options):
        args = argparse.Namespace(**options)
        if not cli.supervise_if_asked(args):  # --processes N: N copies of this command
            get_app().run_worker(**cli.worker_options(args))
"""

from dfcore.cli._argparse import (
    add_dlq_arguments,
    add_nats_only_argument,
    add_worker_arguments,
    add_workflow_arguments,
    dev_banner,
    main,
    run_dlq_command,
    run_workflow_command,
    setup_logging,
    start_dev_server,
    supervise_if_asked,
    wait_for_interrupt,
    worker_options,
)
from dfcore.worker._worker_thread import WorkerThread

__all__ = [
    "WorkerThread",
    "add_dlq_arguments",
    "add_nats_only_argument",
    "add_worker_arguments",
    "add_workflow_arguments",
    "dev_banner",
    "main",
    "run_dlq_command",
    "run_workflow_command",
    "setup_logging",
    "start_dev_server",
    "supervise_if_asked",
    "wait_for_interrupt",
    "worker_options",
]
