"""Commit an outbox row, then hang before the post-commit publish (the test SIGKILLs us).

Run as ``python -m tests.flask.outbox_crash WORKFLOW_ID`` with ``FLASKAPP_DATABASE_URI`` and the
``DF_*`` settings of the test in the environment.
"""

from __future__ import annotations

import sys
import threading

from sqlalchemy import event
from sqlalchemy.orm import Session


def hang(session: Session) -> None:
    print("committed", flush=True)
    threading.Event().wait()  # until SIGKILL: the outbox's own after_commit never runs


def main(workflow_id: str) -> None:
    event.listen(Session, "after_commit", hang)  # before the outbox's: listeners keep order
    from tests.flaskapp import create_app, db, df, greet

    with create_app().app_context():
        df.start_in_transaction(db.session, greet, "crash", workflow_id=workflow_id)
        db.session.commit()


if __name__ == "__main__":
    main(sys.argv[1])
