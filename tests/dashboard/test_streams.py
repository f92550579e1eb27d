"""The dashboard's event streams end cleanly when it stops, however many browsers are still
reading them: each stream's last chunk is sent, so a browser sees the end of the stream, not a
broken connection, and the server does not wait for the browsers to go."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

from ..workerkit import WorkerThread
from .kit import basic, served


def open_stream(base: str, path: str) -> tuple[http.client.HTTPConnection, Any]:
    where = urlsplit(base)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
    conn.request("GET", path, headers={"Authorization": basic()})
    response = conn.getresponse()
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    assert response.readline().startswith(b"event: ")  # the stream is under way
    return conn, response


def test_open_streams_end_cleanly_when_the_dashboard_stops(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def waits(ctx: Any) -> str:
        return str(await ctx.wait_signal("go"))

    with WorkerThread(app):
        waits.start(workflow_id="w-1")
        with served(app) as api:
            paths = ["/api/stream", "/api/workflows/w-1/stream"]
            streams = [open_stream(api.base, path) for path in paths]
        # The dashboard has stopped. Each stream ends with its last chunk: read() raises
        # IncompleteRead on a connection dropped mid-stream.
        try:
            rests = [response.read() for _, response in streams]
        finally:
            for conn, _ in streams:
                conn.close()
        assert [rest.endswith(b"\n\n") for rest in rests] == [True, True]
