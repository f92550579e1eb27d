"""The outbox table, the relay lease, and an unmanaged model the admin lists workflows under."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from dfcore import PreparedStart
from dfcore.outbox import OutboxRow, trace_from_column, trace_to_column


class OutboxEntry(models.Model):
    """A workflow start written in the same transaction as the data that asked for it."""

    workflow_id = models.CharField(max_length=255, db_index=True)
    workflow_type = models.CharField(max_length=255)
    task_queue = models.CharField(max_length=255)
    payload = models.BinaryField(help_text="the encoded start record")
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="publishes tried so far")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    trace_context = models.TextField(
        blank=True, default="", help_text="the trace headers the start carries (JSON)"
    )

    class Meta:
        db_table = "dfcore_outbox"
        ordering = ["-id"]
        verbose_name = "outbox entry"
        verbose_name_plural = "outbox"
        indexes = [
            models.Index(
                fields=["id"],
                name="dfcore_outbox_pending",
                condition=models.Q(published_at__isnull=True),
            ),
            models.Index(fields=["published_at"], name="dfcore_outbox_published"),
        ]

    def __str__(self) -> str:
        return f"start of {self.workflow_type} {self.workflow_id} ({self.status})"

    @property
    def status(self) -> str:
        """``published``, ``pending`` or ``retrying`` (a publish failed; see last_error)."""
        if self.published_at is not None:
            return "published"
        return "retrying" if self.attempts else "pending"

    @classmethod
    def from_start(cls, start: PreparedStart, **fields: Any) -> OutboxEntry:
        return cls(
            workflow_id=start.workflow_id,
            workflow_type=start.workflow_type,
            task_queue=start.task_queue,
            payload=start.data,
            trace_context=trace_to_column(start),
            **fields,
        )

    def as_row(self) -> OutboxRow:
        start = PreparedStart(
            self.workflow_id,
            self.workflow_type,
            self.task_queue,
            bytes(self.payload),
            trace_from_column(self.trace_context),
        )
        return OutboxRow(self.pk, start, self.attempts)


class RelayLease(models.Model):
    """Whose turn it is to relay, on databases that cannot lock rows with SKIP LOCKED."""

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=255)
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "dfcore_relay_lease"

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at}"


class Workflow(models.Model):
    """Workflows live in JetStream, not in a table: this unmanaged model only gives the admin
    a place to list them (see ``admin.py``)."""

    workflow_id = models.CharField(max_length=255, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "workflow"
        verbose_name_plural = "workflows"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return self.workflow_id
