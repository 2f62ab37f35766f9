"""``virtlab plot`` draws sweep and capacity results with titles, units, legends and CIs."""

from __future__ import annotations

import pytest

from tests.study_support import TINY_FLAGS
from virtlab.cli import main


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plot")
    common = [*TINY_FLAGS, "--no-store", "-q"]
    assert main(["sweep", "--vary", "guests[0].workloads[0].in_flight=1,4", "--approaches",
                 "native,paravirtual", "-r", "2", *common, "--csv", str(tmp / "s.csv"),
                 "--parquet", str(tmp / "s.parquet")]) == 0
    assert main(["capacity", "--p99-limit", "200us", "--max-guests", "3", "--approaches",
                 "native", "--set", "host.cores=1", *common, "--csv", str(tmp / "c.csv")]) == 0
    assert main(["compare", "--approaches", "native", "-r", "1", *TINY_FLAGS, "-q",
                 "--csv", str(tmp / "cmp.csv")]) == 0
    return tmp


def test_sweep_svg_has_title_units_legend_and_error_bars(results, capsys):
    out = results / "s.svg"
    assert main(["plot", str(results / "s.parquet"), "-o", str(out)]) == 0
    svg = out.read_text()
    assert "p99 latency vs in_flight" in svg
    assert "p99 latency (µs)" in svg
    assert "native net.rr" in svg and "paravirtual disk.fio" in svg
    # Error bars from the CI columns: a segment collection for each of the 4 lines (2
    # approaches x 2 guests), drawn in the axes and again in its legend entry.
    assert svg.count('id="LineCollection_') == 2 * 4


def test_sweep_png_from_csv_with_another_metric(results):
    out = results / "t.png"
    assert main(["plot", str(results / "s.csv"), "-o", str(out), "--metric",
                 "throughput_per_s", "-q"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capacity_plot_names_the_limit_and_the_answer(results):
    out = results / "c.svg"
    assert main(["plot", str(results / "c.csv"), "-o", str(out), "-q"]) == 0
    svg = out.read_text()
    assert "p99 limit 200 µs" in svg and "worst guest's p99 latency (µs)" in svg
    assert "native:" in svg and "fit" in svg


@pytest.mark.parametrize("args, field", [
    (["{r}/s.csv", "-o", "{r}/x.jpg"], "--output"),
    (["{r}/cmp.csv", "-o", "{r}/x.png"], "RESULT_FILE"),
    (["{r}/missing.csv", "-o", "{r}/x.png"], "RESULT_FILE"),
    (["{r}/s.csv", "-o", "{r}/x.png", "--metric", "nonsense"], "--metric"),
    (["{r}/s.csv", "-o", "{r}/x.png", "--x", "host.cores"], "--x"),
])
def test_plot_bad_input_is_one_line(results, args, field, capsys):
    assert main(["plot", *[a.format(r=results) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"virtlab: error: {field}") and len(err.splitlines()) == 1
