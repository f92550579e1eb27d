"""How a worker command sets up its process: the event loop, and the garbage collector."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dfcore.core._config import Settings
from dfcore.core._errors import ConfigurationError


def worker_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's, as ``worker_event_loop`` says."""
    choice = settings.worker_event_loop
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "worker_event_loop is 'uvloop' but uvloop is not installed; "
                "pip install uvloop, or set worker_event_loop to 'auto'"
            ) from None
        return None
    return uvloop.new_event_loop


@contextmanager
def young_collections(threshold: int) -> Iterator[None]:
    """Python's garbage collector with ``threshold`` as its first threshold (the allocations
    that start a collection of the youngest objects), put back as it was afterwards; 0 leaves
    it alone.

    Each task a worker does makes and drops many small objects, few of them in cycles; at
    Python's 700 a worker ran a young collection every few tasks, and paid for it in CPU.
    """
    if not threshold:
        yield
        return
    saved = gc.get_threshold()
    gc.set_threshold(threshold, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
