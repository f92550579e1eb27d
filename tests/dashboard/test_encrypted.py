"""An encrypting codec: the dashboard shows payloads only where it has the key, and still
lists the workflows (their index headers stay readable) where it has not."""

from __future__ import annotations

import os
from typing import Any

from dfcore.contrib.encryption import AESGCMCodec

from ..workerkit import WorkerThread
from .kit import served


def test_payloads_show_only_where_the_dashboard_has_the_key(make_app: Any) -> None:
    key, other = os.urandom(32), os.urandom(32)
    app = make_app(codec=AESGCMCodec(key))

    @app.workflow
    async def greet(ctx: Any, name: str) -> str:
        return f"hello {name}"

    with WorkerThread(app):
        assert (
            greet.start("secret-name", workflow_id="enc-1").result(timeout=30)
            == "hello secret-name"
        )
    with served(app) as api:
        status, shown = api.get("/api/workflows/enc-1")
        assert status == 200 and shown["args"] == ["secret-name"]
        assert shown["result"] == "hello secret-name"
        assert api.get("/api/session")[1]["codec"] == {"configured": True, "can_decode": True}
    stranger = make_app(codec=AESGCMCodec(other))  # the same namespace, another key
    with served(stranger) as api:
        assert api.get("/api/session")[1]["codec"]["can_decode"] is False
        status, listed = api.get("/api/workflows")
        assert status == 200
        (item,) = listed["items"]
        assert (item["workflow_id"], item["status"], item["workflow_type"]) == (
            "enc-1",
            "completed",
            None,
        )  # the type is encrypted; status and time are not
        assert item["started_at"] is not None
        status, refused = api.get("/api/workflows/enc-1")
        assert status == 503 and "key" in refused["error"]["message"].lower()
        assert "secret-name" not in str(refused)
