from django.db import models


class Order(models.Model):
    """An order placed in the shop; its fulfilment runs as a durable workflow."""

    customer = models.CharField(max_length=100)
    product = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=20, default="new")
    charge_id = models.CharField(max_length=64, blank=True)
    tracking_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"

    @property
    def workflow_id(self) -> str:
        return f"order-{self.pk}"
