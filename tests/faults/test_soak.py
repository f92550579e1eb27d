"""The soak variant: many more workflows, several faults in a row. Not part of `make test`.

Run it with ``make test ARGS="--soak tests/faults/test_soak.py"`` (``DF_SOAK_WORKFLOWS``,
default 1000, sets the batch size; ``DF_SOAK_ROUNDS``, default 6, the number of kills).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import OrderBatch

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]


def test_soak_workers_killed_round_after_round(
    tmp_path: Path, nats_url: str, namespace: str
) -> None:
    count = int(os.environ.get("DF_SOAK_WORKFLOWS", "1000"))
    rounds = int(os.environ.get("DF_SOAK_ROUNDS", "6"))
    run = OrderBatch(f"soak: {rounds} worker kills", tmp_path, nats_url, namespace, count=count)
    try:
        live = {"workflows-0": "--workflows-only", "activities-0": "--activities-only"}
        for name, role in live.items():
            run.spawn(name, role)
        run.start()
        for i in range(1, rounds + 1):
            run.wait_for_progress(low=(i - 1) / rounds, high=i / rounds)
            victim = run.random.choice(sorted(live))
            role = live.pop(victim)
            run.kill(victim)
            live[f"{victim.split('-')[0]}-{i}"] = role
            run.spawn(f"{victim.split('-')[0]}-{i}", role)
        run.check(run.finish(timeout=600))
    finally:
        run.stop()
