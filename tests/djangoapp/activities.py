"""An activities module: autodiscovery imports it as well as workflows.py."""

from __future__ import annotations

from typing import Any

from django.db import connection

from dfcore.integrations.django import app


@app.activity
def count_users() -> int:
    from django.contrib.auth.models import User

    return User.objects.count()


@app.activity
def starts_with_no_connection() -> bool:
    """Whether this thread's database connection was closed since its last activity."""
    was_closed = connection.connection is None
    connection.ensure_connection()  # leave it open, as an ORM query would
    return was_closed


@app.workflow
async def three_activities_on_one_thread(ctx: Any) -> list[bool]:
    return [await ctx.activity(starts_with_no_connection) for _ in range(3)]
