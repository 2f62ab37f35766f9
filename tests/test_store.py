"""The results store: round trip, keys, atomic files, and rejection of a different run."""

from __future__ import annotations

import shutil
import warnings

import pytest

from tests.study_support import same_summary, stored_files, tiny_scenario
from virtlab.executors import Task, execute
from virtlab.model import run
from virtlab.store import ResultStore, StoreWarning, default_store_dir, run_key
from virtlab.sweep import sweep


def test_a_stored_run_reads_back_identical(tmp_path):
    scenario = tiny_scenario()
    outcome = execute(Task(scenario, 3, 1))
    store = ResultStore(tmp_path)
    store.put(scenario, 3, 1, outcome.summaries, outcome.resources)
    got = store.get(scenario, 3, 1)
    assert got is not None and store.hits == 1
    fresh = run(scenario, 3, replication=1).summaries
    assert len(got.summaries) == len(fresh)
    assert all(same_summary(a, b) for a, b in zip(got.summaries, fresh, strict=True))
    assert got.resources.keys() == outcome.resources.keys()


def test_keys_separate_scenario_seed_and_replication():
    a, b = tiny_scenario(in_flight=1), tiny_scenario(in_flight=2)
    keys = {run_key(a, 0, 0), run_key(b, 0, 0), run_key(a, 1, 0), run_key(a, 0, 1)}
    assert len(keys) == 4
    assert run_key(a, 0, 0) == run_key(tiny_scenario(in_flight=1), 0, 0)


def test_the_store_rejects_a_point_computed_by_a_different_scenario(tmp_path):
    asked, other = tiny_scenario(in_flight=1), tiny_scenario(in_flight=8)
    store = ResultStore(tmp_path)
    outcome = execute(Task(other, 0, 0))
    written = store.put(other, 0, 0, outcome.summaries, outcome.resources)
    # The other scenario's file sits where the asked-for run belongs (a collision, a copied
    # store, a hand-edited file): it must not be taken for it.
    target = store.path_of(run_key(asked, 0, 0))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(written, target)
    with pytest.warns(StoreWarning, match="different run.*scenario"):
        assert store.get(asked, 0, 0) is None
    assert store.rejected == 1
    # A sweep through that store recomputes the point and overwrites the wrong file.
    factors = {"guests[0].workloads[0].in_flight": [1]}
    with pytest.warns(StoreWarning):
        through_store = sweep(tiny_scenario(), factors, replications=1, jobs=1, store=store)
    clean = sweep(tiny_scenario(), factors, replications=1, jobs=1)
    assert through_store.to_frame().equals(clean.to_frame())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.get(asked, 0, 0) is not None


def test_a_truncated_file_is_rejected_and_a_temp_file_ignored(tmp_path):
    scenario = tiny_scenario()
    store = ResultStore(tmp_path)
    outcome = execute(Task(scenario, 0, 0))
    path = store.put(scenario, 0, 0, outcome.summaries, outcome.resources)
    (path.parent / ".leftover.tmp").write_bytes(b"half a file")
    assert stored_files(tmp_path) == [path]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(StoreWarning, match="unreadable"):
        assert store.get(scenario, 0, 0) is None


def test_writes_leave_no_temporary_files(tmp_path):
    scenario = tiny_scenario()
    store = ResultStore(tmp_path)
    outcome = execute(Task(scenario, 0, 0))
    for replication in range(3):
        store.put(scenario, 0, replication, outcome.summaries, outcome.resources)
    assert len(stored_files(tmp_path)) == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_changed_summary_layout_is_recomputed_not_misread(tmp_path):
    scenario = tiny_scenario()
    store = ResultStore(tmp_path)
    outcome = execute(Task(scenario, 0, 0))
    import pyarrow.parquet as pq

    path = store.put(scenario, 0, 0, outcome.summaries, outcome.resources)
    table = pq.read_table(path)
    pq.write_table(table.drop(["requests"]).replace_schema_metadata(table.schema.metadata), path)
    with pytest.warns(StoreWarning, match="do not match"):
        assert store.get(scenario, 0, 0) is None


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIRTLAB_STORE", str(tmp_path / "s"))
    assert default_store_dir() == tmp_path / "s"
    monkeypatch.delenv("VIRTLAB_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert default_store_dir() == tmp_path / "c" / "virtlab" / "store"


def test_a_failed_run_is_not_stored_and_is_retried_on_resume(tmp_path, monkeypatch):
    import virtlab.model

    real_run = virtlab.model.run

    def flaky(scenario, seed=0, **kw):
        if scenario.host.cores == 2:
            raise RuntimeError("simulated crash")
        return real_run(scenario, seed, **kw)

    monkeypatch.setattr(virtlab.model, "run", flaky)
    store = ResultStore(tmp_path)
    first = sweep(tiny_scenario(), {"host.cores": [1, 2]}, replications=1, jobs=1, store=store)
    assert first.failed == 1 and store.writes == 1
    assert "simulated crash" in first.to_frame().set_index("point").loc[1, "error"]
    monkeypatch.setattr(virtlab.model, "run", real_run)
    store = ResultStore(tmp_path)
    second = sweep(tiny_scenario(), {"host.cores": [1, 2]}, replications=1, jobs=1, store=store)
    assert not second.failed and (store.hits, store.writes) == (1, 1)
