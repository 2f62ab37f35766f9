"""Sweeps and capacity searches give the same results on a real Dask cluster as locally.

The test starts its own scheduler and two single-threaded worker processes (``dask scheduler``
and ``dask worker`` from this environment) on 127.0.0.1 and stops them afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from study_support import TINY_FLAGS, virtlab_cmd, wait_until
from virtlab.cli import main

pytest.importorskip("distributed", reason="dask.distributed is not installed")

DASK = Path(sys.executable).parent / "dask"
SWEEP = ["sweep", "--vary", "host.cores=1,2", "--vary", "guests[0].workloads[0].in_flight=1,4",
         "--approaches", "native,paravirtual", "-r", "2", *TINY_FLAGS, "--no-store"]


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
    assert done.returncode in (0, 1), done.stderr
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
