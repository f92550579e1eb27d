"""What the server's absence raises: kombu reconnects on these, the backend retries them."""

from __future__ import annotations

import nats.errors
import nats.js.errors

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,  # the server is back, its streams not yet
    TimeoutError,
    ConnectionError,
    OSError,
)

PULL_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)
