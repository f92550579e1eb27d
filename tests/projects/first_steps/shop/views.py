from celery import chain, chord
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Order
from .tasks import add, confirm_order, fetch_rate, mul, xsum


@csrf_exempt
@require_POST
def add_numbers(request):
    result = add.delay(int(request.POST["x"]), int(request.POST["y"]))
    return JsonResponse({"task_id": result.id})


@csrf_exempt
@require_POST
def rate(request):
    result = fetch_rate.delay(request.POST["currency"])
    return JsonResponse({"task_id": result.id})


@csrf_exempt
@require_POST
def pipeline(request):
    n = int(request.POST["n"])
    chained = chain(add.s(n, n), mul.s(10), add.s(1)).delay()
    chorded = chord([add.s(i, i) for i in range(n)])(xsum.s())
    return JsonResponse({"chain": chained.id, "chord": chorded.id})


@csrf_exempt
@require_POST
def place_order(request):
    with transaction.atomic():
        order = Order.objects.create(item=request.POST["item"])
        confirm_order.delay_on_commit(order.pk)
    return JsonResponse({"order": order.pk}, status=201)


def order_status(request, pk):
    order = get_object_or_404(Order, pk=pk)
    return JsonResponse({"order": order.pk, "status": order.status})
