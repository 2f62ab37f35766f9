"""The results store: one Parquet file per completed run, so that studies resume.

A *run* is ``(scenario, seed, replication)``; its result is a pure function of those and of
virtlab's code. The store keeps each run's per-workload summaries under a key::

    key = sha256(canonical JSON of {"scenario": scenario.to_dict(), "seed", "replication",
                                    "virtlab_version", "code"})

where ``code`` fingerprints virtlab's own source files (so editing the model in a development
checkout never reuses stale results). Layout (docs/results.md)::

    <store>/v1/<key[:2]>/<key>.parquet

one row per workload summary (the :class:`~virtlab.stats.WorkloadSummary` fields), with the
run's identity in the file's key-value metadata (``virtlab.scenario`` as canonical JSON,
``virtlab.seed``, ``virtlab.replication``, ``virtlab.version``, ``virtlab.code``) and the
resource utilisations of the run (``virtlab.resources``, JSON).

Invariants:

* Writes are atomic: a file is written to a temporary name in the same directory, then
  renamed over its final name (``os.replace``). A process killed mid-write leaves at most a
  ``*.tmp`` file, never a truncated ``.parquet``; a file that cannot be read anyway (a power
  loss before the data reached the disk) is rejected and recomputed.
* A file is used only if its metadata names exactly the requested run. A file holding another
  scenario, seed, replication or code (or that cannot be read) is rejected with a warning and
  the run is recomputed; the new result replaces it.
* Failed runs are not stored: a rerun retries them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from virtlab.config import Scenario
from virtlab.stats import WorkloadSummary

__all__ = ["ResultStore", "StoreWarning", "default_store_dir", "run_key", "code_fingerprint",
           "canonical_json", "LAYOUT"]

#: Layout version: the directory below the store root. Bump when the file format changes.
LAYOUT = "v1"

#: Environment variable that overrides the default store directory.
STORE_ENV = "VIRTLAB_STORE"


class StoreWarning(UserWarning):
    """A stored file was rejected (different run, unreadable); the run is recomputed."""


def default_store_dir() -> Path:
    """``$VIRTLAB_STORE``, else ``$XDG_CACHE_HOME/virtlab/store``, else ``~/.cache/virtlab/store``.

    A cache directory rather than the working directory: results are reproducible from their
    key, so losing them costs only time, and studies never litter a source tree.
    """
    explicit = os.environ.get(STORE_ENV)
    if explicit:
        return Path(explicit)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "virtlab" / "store"


def canonical_json(value: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal data gives equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True,
                      ensure_ascii=True)


@cache
def code_fingerprint() -> str:
    """SHA-256 over virtlab's Python sources and built-in profiles (names and contents)."""
    digest = hashlib.sha256()
    root = resources.files("virtlab")
    files: list[tuple[str, bytes]] = []

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, name + "/")
            elif child.name.endswith((".py", ".toml")):
                files.append((name, child.read_bytes()))

    walk(root, "")
    for name, data in sorted(files):
        digest.update(name.encode())
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def _identity(scenario: Scenario, seed: int, replication: int) -> dict[str, Any]:
    from virtlab import __version__

    return {"scenario": scenario.to_dict(), "seed": seed, "replication": replication,
            "virtlab_version": __version__, "code": code_fingerprint()}


def run_key(scenario: Scenario, seed: int, replication: int) -> str:
    """The store key of one run (hex SHA-256)."""
    return hashlib.sha256(canonical_json(_identity(scenario, seed, replication)).encode()
                          ).hexdigest()


@dataclass(frozen=True)
class StoredRun:
    """What the store holds for one run."""

    summaries: tuple[WorkloadSummary, ...]
    resources: dict[str, float]


_SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(WorkloadSummary))


class ResultStore:
    """A directory of per-run Parquet files (see the module docstring for the format).

    ``warn`` receives one line per rejected file (default: :func:`warnings.warn` with
    :class:`StoreWarning`). Counters ``hits``, ``writes`` and ``rejected`` say what happened.
    """

    def __init__(self, root: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.base = self.root / LAYOUT
        self.warn = warn or (lambda message: warnings.warn(message, StoreWarning, stacklevel=3))
        self.hits = 0
        self.writes = 0
        self.rejected = 0

    def path_of(self, key: str) -> Path:
        """Where the run with ``key`` is (or would be) stored."""
        return self.base / key[:2] / f"{key}.parquet"

    def get(self, scenario: Scenario, seed: int, replication: int) -> StoredRun | None:
        """The stored result of this run, or None (absent or rejected)."""
        import pyarrow.parquet as pq

        identity = _identity(scenario, seed, replication)
        key = hashlib.sha256(canonical_json(identity).encode()).hexdigest()
        path = self.path_of(key)
        if not path.exists():
            return None
        try:
            # ParquetFile.read without threads: a third of read_table's time on such small
            # files, which matters when a rerun reads thousands of them.
            table = pq.ParquetFile(path).read(use_threads=False)
            meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            stored = {"scenario": meta["virtlab.scenario"], "seed": int(meta["virtlab.seed"]),
                      "replication": int(meta["virtlab.replication"]),
                      "virtlab_version": meta["virtlab.version"], "code": meta["virtlab.code"]}
            resources_used = json.loads(meta.get("virtlab.resources", "{}"))
            rows = table.to_pylist()
        except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed
            self.rejected += 1
            self.warn(f"store: {path}: unreadable ({type(err).__name__}: {err}); recomputing")
            return None
        wanted = {**identity, "scenario": canonical_json(identity["scenario"])}
        if stored != wanted:
            self.rejected += 1
            differs = [k for k in wanted if stored[k] != wanted[k]]
            self.warn(f"store: {path}: holds a different run than requested ({', '.join(differs)}"
                      f" differ); ignoring it and recomputing")
            return None
        try:
            summaries = tuple(WorkloadSummary(**{k: row[k] for k in _SUMMARY_FIELDS if k in row})
                              for row in rows)
        except TypeError as err:
            self.rejected += 1
            self.warn(f"store: {path}: rows do not match this version's summaries ({err}); "
                      "recomputing")
            return None
        self.hits += 1
        return StoredRun(summaries, {k: float(v) for k, v in resources_used.items()})

    def put(self, scenario: Scenario, seed: int, replication: int,
            summaries: tuple[WorkloadSummary, ...] | list[WorkloadSummary],
            resources_used: dict[str, float]) -> Path:
        """Store one run's result atomically; return its path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        identity = _identity(scenario, seed, replication)
        key = hashlib.sha256(canonical_json(identity).encode()).hexdigest()
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = {name: [getattr(s, name) for s in summaries] for name in _SUMMARY_FIELDS}
        arrays = {name: pa.array(values, type=_arrow_type(name))
                  for name, values in columns.items()}
        table = pa.table(arrays)
        table = table.replace_schema_metadata({
            "virtlab.key": key,
            "virtlab.scenario": canonical_json(identity["scenario"]),
            "virtlab.seed": str(seed), "virtlab.replication": str(replication),
            "virtlab.version": identity["virtlab_version"], "virtlab.code": identity["code"],
            "virtlab.resources": canonical_json(resources_used)})
        # Ctrl-C and SIGTERM wait until the file is complete and renamed: a stop requested
        # mid-write (which raises KeyboardInterrupt wherever the main thread is, even between
        # creating the temporary file and the ``try`` that removes it) then leaves no
        # temporary file behind. The write takes milliseconds; the signal is delivered after.
        stops = {signal.SIGINT, signal.SIGTERM}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            handle, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp",
                                           dir=path.parent)
            try:
                # No fsync: the rename is atomic against a killed process, which is what
                # resuming needs; after a power loss a file that lost its data fails to read
                # and is recomputed (see get), so durability is not worth an fsync per run.
                with os.fdopen(handle, "wb") as out:
                    pq.write_table(table, out)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self.writes += 1  # counted before a pending stop is delivered: messages stay true
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return path

    def keys(self) -> list[str]:
        """Keys of every stored run (for inspection and tests)."""
        if not self.base.exists():
            return []
        return sorted(p.stem for p in self.base.glob("*/*.parquet"))


def _arrow_type(name: str) -> Any:
    """The Arrow type of a summary field, from its annotation (pyarrow infers anything else)."""
    import pyarrow as pa

    annotation = str(_FIELD_TYPES[name])
    return {"str": pa.string(), "int": pa.int64(), "float": pa.float64(),
            "bool": pa.bool_()}.get(annotation)


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(WorkloadSummary)}
