"""Per-request records: kept only on request, and the same requests the summaries counted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from virtlab import default_scenario, run
from virtlab.cli import main


def test_a_run_keeps_no_records_unless_asked_and_says_so():
    scenario = default_scenario().with_approach("native")
    plain = run(scenario, 0)
    assert plain.records == []
    with pytest.raises(ValueError, match="records=True"):
        plain.to_frame()
    kept = run(scenario, 0, records=True)
    assert len(kept.to_frame()) == sum(kept.completed.values())
    assert plain.summaries == kept.summaries


def test_records_flag_writes_the_requests_the_table_summarised(tmp_path, capsys):
    target = tmp_path / "records.csv"
    argv = ["compare", "--approaches", "native,paravirtual", "-r", "1", "--duration", "4ms",
            "--warmup", "1ms", "--json", "--records", str(target), "-j", "1", "-q"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    frame = pd.read_csv(target)
    assert set(frame["path"]) == {"native", "paravirtual"}
    for entry in document["entries"]:
        rows = frame[(frame["path"] == entry["approach"])
                     & (frame["guest"] == entry["guest"])
                     & (frame["workload"] == entry["workload"])]
        in_window = rows[(rows["done_us"] >= 1000.0) & (rows["done_us"] <= 4000.0)]
        assert len(in_window) == entry["requests_per_replication"]
        latency = (in_window["done_us"] - in_window["arrival_us"]).mean()
        assert latency == pytest.approx(entry["latency_us"]["mean"], rel=1e-12)


def test_records_flag_refuses_an_unknown_format_before_running(tmp_path, capsys):
    assert main(["compare", "--records", str(tmp_path / "r.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("virtlab: error: --records:")
