"""Sweeps and capacity searches give the same results on a real Dask cluster as locally.

The test starts its own scheduler and two single-threaded worker processes (``dask scheduler``
and ``dask worker`` from this environment) on 127.0.0.1 and stops them afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.study_support import TINY_FLAGS, children_of, stored_files, virtlab_cmd, wait_until
from virtlab.cli import main

pytest.importorskip("distributed", reason="dask.distributed is not installed")

DASK = Path(sys.executable).parent / "dask"
SWEEP = ["sweep", "--vary", "host.cores=1,2", "--vary", "guests[0].workloads[0].in_flight=1,4",
         "--approaches", "native,paravirtual", "-r", "2", *TINY_FLAGS, "--no-store"]


_WORKER_PIDS: dict[str, int] = {}


def cluster_pid(address: str) -> int:
    """The pid of the ``dask worker`` process serving the cluster at ``address``."""
    return _WORKER_PIDS[address]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local scheduler and two worker processes; yields the scheduler's address."""
    if not DASK.exists():
        pytest.skip(f"the dask command is not installed next to {sys.executable}")
    tmp = tmp_path_factory.mktemp("dask")
    info = tmp / "scheduler.json"
    log = open(tmp / "dask.log", "w")  # noqa: SIM115 - closed below
    scheduler = subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(info)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    workers = None
    try:
        wait_until(lambda: info.exists() and info.stat().st_size > 0, 120,
                   "the Dask scheduler to start", scheduler)
        workers = subprocess.Popen(
            [str(DASK), "worker", "--scheduler-file", str(info), "--nworkers", "2",
             "--nthreads", "1", "--no-dashboard", "--memory-limit", "0",
             "--local-directory", str(tmp)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        address = json.loads(info.read_text())["address"]
        _WORKER_PIDS[address] = workers.pid
        yield address
    finally:
        for proc in (workers, scheduler):
            if proc is not None:
                _stop(proc)
        log.close()


def _local(tmp_path, jobs: int) -> pd.DataFrame:
    out = tmp_path / f"local{jobs}.csv"
    assert main([*SWEEP, "-j", str(jobs), "--csv", str(out), "--quiet"]) == 0
    return pd.read_csv(out)


def test_results_are_identical_on_one_two_and_dask_workers(cluster, tmp_path):
    out = tmp_path / "dask.csv"
    done = subprocess.run(virtlab_cmd(*SWEEP, "--scheduler", cluster, "--csv", str(out)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    on_dask = pd.read_csv(out)
    one, two = _local(tmp_path, 1), _local(tmp_path, 2)
    pd.testing.assert_frame_equal(one, two)
    pd.testing.assert_frame_equal(one, on_dask)
    assert len(on_dask) == 4 * 2 * 2  # points x approaches x the default's two guests
    assert on_dask["error"].isna().all()


def test_capacity_on_dask_matches_local(cluster, tmp_path):
    argv = ["capacity", "--p99-limit", "150us", "--max-guests", "4", "--approaches", "native",
            "--set", "host.cores=1", *TINY_FLAGS, "--no-store", "--json", "-r", "2",
            "--max-replications", "4"]
    done = subprocess.run(virtlab_cmd(*argv, "--scheduler", cluster), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    local = subprocess.run(virtlab_cmd(*argv, "-j", "1"), capture_output=True, text=True,
                           timeout=300)
    assert json.loads(done.stdout) == json.loads(local.stdout)


def test_an_unreachable_scheduler_is_one_line(capsys):
    status = main([*SWEEP, "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("virtlab: error: --scheduler: cannot reach") and len(
        err.splitlines()) == 1


def test_jobs_and_a_scheduler_together_are_refused(capsys):
    assert main([*SWEEP, "--scheduler", "tcp://127.0.0.1:9", "-j", "2"]) == 2
    assert "virtlab: error: --jobs: cannot be combined with --scheduler" in capsys.readouterr().err


def test_a_malformed_scheduler_address_is_one_line(capsys):
    assert main([*SWEEP, "--scheduler", "localhost:8786"]) == 2
    assert "tcp://host:8786" in capsys.readouterr().err


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        kids = children_of(frontier.pop())
        found += kids
        frontier += kids
    return found


def test_a_lost_dask_worker_costs_only_its_runs(cluster, tmp_path):
    """Run last: it kills one worker process of the shared cluster (its nanny restarts it)."""
    store = tmp_path / "store"
    argv = ["sweep", "--vary", "host.cores=" + ",".join(str(c) for c in range(1, 11)),
            "--approaches", "native", "-r", "1", "--duration", "10ms", "--warmup", "0.5ms"]
    proc = subprocess.Popen(virtlab_cmd(*argv, "--scheduler", cluster, "--store", str(store),
                                        "--csv", str(tmp_path / "dask.csv")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(stored_files(store)) >= 2, 120, "2 runs stored", proc)
    workers = [pid for pid in _descendants(cluster_pid(cluster))
               if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert workers, "the cluster's worker processes are found"
    os.kill(workers[0], signal.SIGKILL)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert len(stored_files(store)) == 10
    local = tmp_path / "local.csv"
    assert main([*argv, "-j", "2", "--no-store", "--csv", str(local), "-q"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dask.csv"), pd.read_csv(local))
