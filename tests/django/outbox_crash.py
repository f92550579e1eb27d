"""Commit an outbox row, then hang before the post-commit publish (the test SIGKILLs us).

Run as ``python -m tests.django.outbox_crash ALIAS WORKFLOW_ID`` with
``DJANGO_SETTINGS_MODULE=tests.django_settings`` and the test's ``DF_TEST_DB_TAG``.
"""

from __future__ import annotations

import sys
import threading

import django


def main(alias: str, workflow_id: str) -> None:
    django.setup()
    from django.db import transaction

    from dfcore.integrations.django import start_on_commit
    from tests.djangoapp.workflows import greeting

    def hang() -> None:
        print("committed", flush=True)
        threading.Event().wait()  # until SIGKILL: the publish callback below never runs

    with transaction.atomic(using=alias):
        transaction.on_commit(hang, using=alias)  # runs first: callbacks keep their order
        start_on_commit(greeting, "crash", workflow_id=workflow_id, using=alias)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
