"""Tiny scenarios and subprocess helpers for the sweep, store, capacity and Dask tests."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from virtlab import GuestSpec, RequestResponse, Scenario

#: A couple of milliseconds of simulated time: each run takes a few ms of wall time.
TINY = dict(duration_us=2_000.0, warmup_us=500.0)

#: CLI flags giving the same tiny runs.
TINY_FLAGS = ["--duration", "2ms", "--warmup", "0.5ms"]


def tiny_scenario(approach: str = "native", in_flight: int = 2) -> Scenario:
    """One guest, one closed-loop request/response workload, 2 ms."""
    return Scenario(**TINY, guests=(GuestSpec(name="g", approach=approach, workloads=(
        RequestResponse(in_flight=in_flight),)),))


def same_summary(a, b) -> bool:
    """Field-by-field equality of two summaries, NaN equal to NaN."""
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


def virtlab_cmd(*args: str) -> list[str]:
    """``python -m virtlab ARGS`` with this interpreter."""
    return [sys.executable, "-m", "virtlab", *args]


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str,
               proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``deadline_s`` seconds."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before: {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s} s waiting for: {what}")


def stored_files(store: Path) -> list[Path]:
    """Every complete result file in a store directory."""
    return sorted(store.glob("v1/*/*.parquet"))


def children_of(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out
