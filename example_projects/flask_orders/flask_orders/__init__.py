"""A small shop on Flask whose orders are fulfilled by a durable workflow.

``flask --app flask_orders df dev`` runs it with an embedded NATS server and a worker; see the
README. ``create_app`` is the app factory ``flask --app flask_orders`` finds.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from dfcore.integrations.flask.outbox import create_outbox_tables

from . import views
from .models import db
from .workflows import df


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the shop: its config, the database and outbox tables, DurableFuture, the pages.

    Args:
        test_config: config that replaces ``instance/config.py`` (for tests).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(default_config())
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)
    db.init_app(app)
    df.init_app(app)  # after the config: it reads the DF_* keys now
    app.register_blueprint(views.bp)
    with app.app_context():
        db.create_all()
        create_outbox_tables(db.engine)
    return app


def default_config() -> dict[str, Any]:
    """The defaults, from ``ORDERS_*`` environment variables where set.

    The other ``DF_*`` keys (``DF_NATS_URL``...) are left to DurableFuture, which takes them
    from the environment; ``flask df dev`` points ``DF_NATS_URL`` at its embedded server.
    """
    environ = os.environ
    return {
        # A relative SQLite path is in the instance folder (Flask-SQLAlchemy's rule).
        "SQLALCHEMY_DATABASE_URI": environ.get("ORDERS_DATABASE_URI", "sqlite:///orders.sqlite3"),
        # Copies of the shop share a NATS server under different namespaces. DF_NAMESPACE in
        # the environment still wins, as it does for every DF_* key.
        "DF_NAMESPACE": environ.get("DF_NAMESPACE") or environ.get("ORDERS_NAMESPACE", "orders"),
    }
