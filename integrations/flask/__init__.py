"""Durable workflows for Flask: the ``DurableFuture`` extension.

::

    from flask import Flask
    from dfcore.integrations.flask import DurableFuture

    df = DurableFuture()

    @df.activity
    def charge(customer: str, amount: float) -> dict: ...

    @df.workflow
    async def order(ctx, customer: str, amount: float) -> dict:
        return await ctx.activity(charge, customer, amount)

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["DF_NATS_URL"] = "nats://127.0.0.1:4222"
        df.init_app(app)
        return app

Then ``flask df worker`` runs the workers, and a view calls ``order.start(...)`` or, with the
transactional outbox, ``df.start_in_transaction(db.session, order, ...)``. See ``docs/flask.md``.
"""

from .extension import EXTENSION, DFState, DurableFuture, FlaskWorkflow

__all__ = ["EXTENSION", "DFState", "DurableFuture", "FlaskWorkflow"]
