from celery import shared_task

from .models import Order


@shared_task
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task
def xsum(numbers):
    return sum(numbers)


@shared_task(bind=True, autoretry_for=(ConnectionError,), max_retries=3, default_retry_delay=1)
def fetch_rate(self, currency):
    # The rates service is down on the first try; Celery retries the task a second later.
    if self.request.retries == 0:
        raise ConnectionError(f"the rates service is down, no rate for {currency}")
    return {"currency": currency, "rate": 1.25, "retries": self.request.retries}


@shared_task
def confirm_order(order_id):
    Order.objects.filter(pk=order_id).update(status="confirmed")
    return order_id


@shared_task
def report():
    return Order.objects.count()
