"""Settings of bench/burst.py side by side, their runs interleaved, over many bursts.

    python bench/compare.py [--rounds 10] [--bursts 800,800] SETTING [SETTING ...]

One burst's CPU per workflow varies by 10-15% from the next on a shared machine, and the
machine's speed drifts over minutes; a difference of a few per cent shows only in the means of
many bursts whose settings took turns. Each SETTING is one series: burst.py's options in one
quoted word, with ``NAME=VALUE`` words first for the environment of the client and workers:

    python bench/compare.py "" "--observe otel" "--observe otel --sample 0.1"
    python bench/compare.py "" "DF_WORKER_GC_THRESHOLD=0"

(``""`` is the defaults.) Every round runs each setting once, in turn, as
``burst.py --workers 1 --latency-samples 0 --bursts B``. For each setting it prints the mean
CPU ms per workflow of the workers, the server and the client (with the workers' standard
deviation), workflows/s and the ceiling of acked publishes/s of the same runs with their
ratio, and the workers' CPU against the first setting.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Series:
    """One setting's bursts."""

    label: str
    env: dict[str, str]
    options: list[str]
    cells: list[dict[str, float]] = field(default_factory=list)

    def mean(self, column: str) -> float:
        return statistics.mean(cell[column] for cell in self.cells)


def series(setting: str) -> Series:
    """``setting`` as its environment and burst.py options."""
    env: dict[str, str] = {}
    options: list[str] = []
    for word in shlex.split(setting):
        name, is_variable, value = word.partition("=")
        if is_variable and not word.startswith("-"):
            env[name] = value
        else:
            options.append(word)
    return Series(setting or "(defaults)", env, options)


def cells(output: str) -> list[dict[str, float]]:
    """The cells of burst.py's table: K burst wf/s p50 p99 worker server client ceiling ratio."""
    names = ("wf/s", "worker", "server", "client", "ceiling")
    found = []
    for line in output.splitlines():
        words = line.split()
        if len(words) == 10 and words[0].isdigit():
            values = (words[2], words[5], words[6], words[7], words[8])
            found.append({name: float(value) for name, value in zip(names, values, strict=True)})
    return found


def run(one: Series, bursts: str) -> None:
    command = [sys.executable, str(ROOT / "bench" / "burst.py"), "--workers", "1"]
    command += ["--latency-samples", "0", "--bursts", bursts, *one.options]
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **one.env}, capture_output=True, text=True
    )
    made = cells(done.stdout)
    if done.returncode or not made:
        raise SystemExit(f"{one.label}: burst.py failed\n{done.stdout}\n{done.stderr}")
    one.cells.extend(made)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("settings", nargs="+", metavar="SETTING")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--bursts", default="800,800", help="burst.py --bursts (default 800,800)")
    args = parser.parse_args()
    all_series = [series(setting) for setting in args.settings]
    for _ in range(args.rounds):
        for one in all_series:
            run(one, args.bursts)
    first = all_series[0].mean("worker")
    count = len(all_series[0].cells)
    print(f"CPU ms per workflow, the mean of {count} bursts a setting (--bursts {args.bursts})")
    print(f"{'setting':44} worker (sd)     server client   wf/s  ceiling/s  ratio  vs first")
    for one in all_series:
        worker = one.mean("worker")
        spread = statistics.pstdev(cell["worker"] for cell in one.cells)
        rate, ceiling = one.mean("wf/s"), one.mean("ceiling")
        print(
            f"{one.label[:44]:44} {worker:6.3f} ({spread:.3f}) {one.mean('server'):6.3f} "
            f"{one.mean('client'):6.3f} {rate:6.0f} {ceiling:10.0f} {rate / ceiling:6.4f}"
            f"  {(worker / first - 1) * 100:+6.1f}%"
        )


if __name__ == "__main__":
    main()
