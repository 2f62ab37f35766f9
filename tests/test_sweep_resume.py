"""A sweep killed halfway resumes from the store and ends with every point exactly once.

The tests run the real command line in a subprocess: one is stopped with SIGINT (Ctrl-C) or
SIGTERM and rerun; in the other a worker process of the local pool is killed with SIGKILL mid-sweep.
Each compares the final result with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pandas as pd
import pytest

from tests.study_support import children_of, stored_files, virtlab_cmd, wait_until

POINTS = 24
SWEEP = ["sweep", "--vary", "host.cores=" + ",".join(str(c) for c in range(1, 13)),
         "--vary", "guests[0].workloads[0].in_flight=1,4", "--approaches", "native",
         "-r", "1", "-j", "2", "--duration", "10ms", "--warmup", "0.5ms"]


def _sweep(tmp, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(virtlab_cmd(*SWEEP, "--csv", str(tmp / f"{name}.csv"), *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, deadline_s: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=deadline_s)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same sweep, uninterrupted and without a store."""
    tmp = tmp_path_factory.mktemp("reference")
    status, _out, err = _finish(_sweep(tmp, "ref", "--no-store"))
    assert status == 0, err
    return pd.read_csv(tmp / "ref.csv")


def _check_complete(tmp, name: str, store, reference) -> None:
    frame = pd.read_csv(tmp / f"{name}.csv")
    pd.testing.assert_frame_equal(frame, reference)
    assert sorted(frame["point"].unique()) == list(range(POINTS))
    files = stored_files(store)
    assert len(files) == POINTS == len({f.stem for f in files})
    assert not list(store.rglob("*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_sweep_resumes_without_recomputing(tmp_path, reference, signum):
    store = tmp_path / "store"
    proc = _sweep(tmp_path, "first", "--store", str(store))
    wait_until(lambda: len(stored_files(store)) >= 4, 120, "4 runs stored", proc)
    proc.send_signal(signum)
    status, out, err = _finish(proc)
    assert status == 130, err
    assert "interrupted" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    kept = len(stored_files(store))
    assert 4 <= kept < POINTS, "the sweep must have been stopped halfway"

    status, out, err = _finish(_sweep(tmp_path, "second", "--store", str(store)))
    assert status == 0, err
    assert f"{kept} run(s) reused, {POINTS - kept} computed" in err
    _check_complete(tmp_path, "second", store, reference)


def test_a_killed_worker_costs_only_its_runs(tmp_path, reference):
    store = tmp_path / "store"
    proc = _sweep(tmp_path, "killed", "--store", str(store))
    wait_until(lambda: len(stored_files(store)) >= 3, 120, "3 runs stored", proc)
    parent_cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read()

    def workers() -> list[int]:
        found = []
        for pid in children_of(proc.pid):
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read() == parent_cmdline:
                    found.append(pid)
            except OSError:
                continue
        return found

    wait_until(lambda: bool(workers()), 60, "a pool worker process", proc)
    victim = workers()[0]
    os.kill(victim, signal.SIGKILL)
    status, out, err = _finish(proc)
    assert status == 0, err
    assert "a worker process died" in err
    assert "Traceback" not in err
    _check_complete(tmp_path, "killed", store, reference)
    # Nothing left to compute: a rerun is served by the store alone.
    status, out, err = _finish(_sweep(tmp_path, "again", "--store", str(store)))
    assert status == 0 and f"{POINTS} run(s) reused, 0 computed" in err
