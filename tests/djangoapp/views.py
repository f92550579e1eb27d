"""A view starting a workflow through the transactional outbox (tests/django/test_tracing.py)."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from dfcore.integrations.django import start_on_commit

from .workflows import traced_order


@require_POST
def place_order(request: HttpRequest, key: str) -> JsonResponse:
    with transaction.atomic():
        handle = start_on_commit(traced_order, key, workflow_id=f"traced-{key}")
    return JsonResponse({"workflow_id": handle.workflow_id}, status=202)
