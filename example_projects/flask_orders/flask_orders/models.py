"""The database: Flask-SQLAlchemy's ``db`` and the ``Order`` model."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Order(db.Model):  # type: ignore[name-defined,misc]
    """An order placed in the shop; its fulfilment runs as a durable workflow.

    The amount is kept in cents: SQLite has no decimal type, and money is never a float.
    """

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    product: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[int] = mapped_column(default=1)
    amount_cents: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="placed")
    charge_id: Mapped[str] = mapped_column(String(64), default="")
    tracking_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"<Order {self.id} ({self.status})>"

    @property
    def amount(self) -> Decimal:
        """The amount in the currency's units, ``Decimal("12.50")``."""
        return Decimal(self.amount_cents).scaleb(-2)

    @property
    def workflow_id(self) -> str:
        """The id of the workflow that fulfils this order: one workflow per order."""
        return f"order-{self.id}"
