"""Task states, as Celery names them."""

PENDING = "PENDING"  # not started yet (waiting out its countdown), or no such task
STARTED = "STARTED"  # an attempt runs
RETRY = "RETRY"  # an attempt failed; the next one waits for its countdown
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"  # revoked (cancelled) or expired before it ran

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, STARTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
ALL_STATES = READY_STATES | UNREADY_STATES
