"""An activities module: autodiscovery imports it as well as workflows.py."""

from __future__ import annotations

from django.db import connection

from dfcore.integrations.django import app


@app.activity
def count_users() -> int:
    from django.contrib.auth.models import User

    return User.objects.count()


@app.activity
def connection_id() -> int:
    """The identity of this thread's database connection (the ORM opens one if needed)."""
    connection.ensure_connection()
    return id(connection.connection)
