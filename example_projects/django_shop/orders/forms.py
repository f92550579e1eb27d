from decimal import Decimal

from django import forms

from .models import Order


class OrderForm(forms.ModelForm):
    """The order form. An amount of 0 is allowed on purpose: charging it fails, so the
    workflow retries ``charge_card`` and then fails, which the order page shows."""

    quantity = forms.IntegerField(min_value=1, initial=1)
    amount = forms.DecimalField(min_value=Decimal(0), max_digits=10, decimal_places=2)

    class Meta:
        model = Order
        fields = ["customer", "product", "quantity", "amount"]
