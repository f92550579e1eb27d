"""The order form, checked by hand: each field's value, or a message saying what to fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_TEXT = 100
MAX_QUANTITY = 1000
MAX_AMOUNT = Decimal("99999999.99")


@dataclass
class OrderForm:
    """The submitted fields (as typed, to show them again) and the errors by field name.

    An amount of 0 is allowed on purpose: charging it fails, so the workflow retries
    ``charge_card`` and then fails, which the order page shows.
    """

    data: Mapping[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, default: str = "") -> str:
        return self.data.get(name, default)

    def clean(self) -> dict[str, Any] | None:
        """The ``Order`` fields, or ``None`` with :attr:`errors` filled in."""
        values = {
            "customer": self._text("customer"),
            "product": self._text("product"),
            "quantity": self._quantity(),
            "amount_cents": self._amount_cents(),
        }
        return None if self.errors else values

    def _text(self, name: str) -> str:
        text = self.value(name).strip()
        if not text:
            self.errors[name] = "This field is required."
        elif len(text) > MAX_TEXT:
            self.errors[name] = f"Use at most {MAX_TEXT} characters (this has {len(text)})."
        return text

    def _quantity(self) -> int:
        raw = self.value("quantity").strip()
        try:
            quantity = int(raw)
        except ValueError:
            self.errors["quantity"] = f"Enter a whole number, not {raw!r}."
            return 0
        if not 1 <= quantity <= MAX_QUANTITY:
            self.errors["quantity"] = f"Enter a quantity from 1 to {MAX_QUANTITY}."
        return quantity

    def _amount_cents(self) -> int:
        raw = self.value("amount").strip()
        try:
            amount = Decimal(raw)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite():
            self.errors["amount"] = f"Enter an amount such as 12.50, not {raw!r}."
        elif amount < 0 or amount > MAX_AMOUNT:
            self.errors["amount"] = f"Enter an amount from 0 to {MAX_AMOUNT}."
        elif amount != amount.quantize(Decimal("0.01")):
            self.errors["amount"] = "Use at most two decimal places (cents)."
        else:
            return int(amount.scaleb(2))
        return 0
