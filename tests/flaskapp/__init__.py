"""A Flask app for the Flask tests: the usual extension and app-factory layout.

``flask --app tests.flaskapp df worker`` runs it as a real process; its database is
``FLASKAPP_DATABASE_URI`` and its DurableFuture settings come from the ``DF_*`` environment.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dfcore.integrations.flask import DurableFuture
from dfcore.integrations.flask.outbox import create_outbox_tables


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
df = DurableFuture()


class Greeting(db.Model):  # type: ignore[name-defined,misc]
    """A row a view writes in the same transaction as the workflow's start."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Delivery(db.Model):  # type: ignore[name-defined,misc]
    """Written by the activity, through Flask-SQLAlchemy: proves the app context."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(String(255))


@df.activity
def deliver(workflow_id: str, name: str) -> str:
    text = f"hello {name} from {current_app.name} ({current_app.config['DF_NAMESPACE']})"
    db.session.add(Delivery(workflow_id=workflow_id, text=text))
    db.session.commit()
    return text


@df.workflow
async def greet(ctx: Any, name: str) -> str:
    return await ctx.activity(deliver, ctx.info.workflow_id, name)


@df.workflow
async def greet_later(ctx: Any, name: str, days: float) -> str:
    await ctx.sleep(days * 24 * 3600)
    return await ctx.activity(deliver, ctx.info.workflow_id, name)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("FLASKAPP_DATABASE_URI", "sqlite://")
    app.config.update(config or {})
    db.init_app(app)
    df.init_app(app)
    with app.app_context():
        db.create_all()
        create_outbox_tables(db.engine)

    @app.post("/greet/<name>")
    def greet_view(name: str) -> dict[str, str]:
        db.session.add(Greeting(name=name))
        handle = df.start_in_transaction(db.session, greet, name, workflow_id=f"greet-{name}")
        db.session.commit()
        return {"workflow_id": handle.workflow_id}

    @app.get("/greet/<name>")
    async def greeting_view(name: str) -> dict[str, str]:
        status = await greet.get_handle(f"greet-{name}").astatus()
        return {"status": status.status}

    return app
