"""Hostile inputs to every command: one line ``virtlab: error: <field>: ...``, exit 2, nothing run.

The table drives ``virtlab.cli.main(argv)`` in-process (fast); every case must fail *before* any
simulation or real-system work. ``{name}`` in an argument is replaced by the path of a prepared
file. A few behaviours that need a real process (signals, /dev/full, a closed pipe, a FIFO) run
``python -m virtlab`` in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from virtlab import budget
from virtlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
ONE_RUN = ["-r", "1", "--duration", "1ms", "--warmup", "0", "--json"]


# Files ------------------------------------------------------------------------------------------
def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("hostile")
    made: dict[str, Path] = {
        "dir": d / "a-folder",
        "binary": _write(d, "binary.toml", b"\x00\xff\xfe\x01binary"),
        "latin1": _write(d, "latin1.toml", b'name = "caf\xe9"\n'),
        "big": _write(d, "big.toml", "# padding\n" * 110_000),
        "not_toml": _write(d, "bad.toml", "[host\ncores = 4\n"),
        "deep3000": _write(d, "deep3000.toml", "x = " + "[" * 3000 + "]" * 3000 + "\n"),
        "deep40": _write(d, "deep40.toml", "x = " + "[" * 40 + "]" * 40 + "\n"),
        "empty_list_guests": _write(d, "noguests.toml", "guests = []\n"),
        "guests_int": _write(d, "guests5.toml", "guests = 5\n"),
        "guests_item_int": _write(d, "guests-item.toml", "guests = [5]\n"),
        "bad_approach": _write(d, "approach.toml", "[[guests]]\nname='a'\napproach='magic'\n"),
        "dup_guests": _write(d, "dup.toml", "[[guests]]\nname='a'\n[[guests]]\nname='a'\n"),
        "unknown_key": _write(d, "unknown.toml", "speed = 3\n"),
        "neg_duration": _write(d, "negdur.toml", "duration_us = -1.0\n"),
        "str_duration": _write(d, "strdur.toml", "duration_us = 'long'\n"),
        "window": _write(d, "window.toml", "duration_us = 100.0\nwarmup_us = 200.0\n"),
        "cores0": _write(d, "cores0.toml", "[host]\ncores = 0\n"),
        "cores_float": _write(d, "coresf.toml", "[host]\ncores = 1.5\n"),
        "cores_bool": _write(d, "coresb.toml", "[host]\ncores = true\n"),
        "nan": _write(d, "nan.toml", "[nic]\nline_rate_gbps = nan\n"),
        "inf": _write(d, "inf.toml", "[nic]\nline_rate_gbps = inf\n"),
        "ring3": _write(d, "ring3.toml", "[paravirtual]\nring_size = 3\n"),
        "xen_ring": _write(d, "xenring.toml", "[paravirtual]\nxen_net_ring_slots = 32768\n"),
        "xen_blk": _write(d, "xenblk.toml", "[paravirtual]\nxen_blk_ring_page_order = 9\n"),
        "kind": _write(d, "kind.toml", "[[guests]]\nname='a'\n[[guests.workloads]]\nkind='x'\n"),
        "no_workloads": _write(d, "nowl.toml", "[[guests]]\nname='a'\nworkloads = []\n"),
        "dup_workloads": _write(d, "dupwl.toml", "[[guests]]\nname='a'\n[[guests.workloads]]\n"
                                                 "kind='rr'\n[[guests.workloads]]\nkind='rr'\n"),
        "in_flight0": _write(d, "if0.toml", "[[guests]]\nname='a'\n[[guests.workloads]]\n"
                                             "kind='rr'\nin_flight = 0\n"),
        "rate0": _write(d, "rate0.toml", "[[guests]]\nname='a'\n[[guests.workloads]]\n"
                                          "kind='rr'\nloop='open'\nrate_per_s = 0.0\n"),
        "msg0": _write(d, "msg0.toml", "[[guests]]\nname='a'\n[[guests.workloads]]\n"
                                        "kind='stream'\nmessage_bytes = 0\n"),
        "window_huge": _write(d, "winhuge.toml", "[[guests]]\nname='a'\n[[guests.workloads]]\n"
                                                  "kind='stream'\nwindow_bytes = 34359738368\n"),
        "sc_profile_int": _write(d, "scprof5.toml", "profile = 5\n"),
        "sc_profile_empty": _write(d, "scprofempty.toml", "profile = ''\n"),
        "sc_profile_missing": _write(d, "scprofmissing.toml", "profile = 'missing.toml'\n"),
        "host_int": _write(d, "hostint.toml", "host = 5\n"),
        "open_flood": _write(d, "flood.toml", "[[guests]]\nname='a'\n[[guests.workloads]]\n"
                                               "kind='rr'\nloop='open'\nrate_per_s = 1e9\n"),
        "long_run": _write(d, "long.toml", "duration_us = 1e12\n"),
        # Profiles.
        "p_top_int": _write(d, "p-top5.toml", "profile = 5\n"),
        "p_meta_key": _write(d, "p-meta.toml", "[profile]\nname='x'\nprofile = 5\n"),
        "p_top_str": _write(d, "p-topstr.toml", "profile = 'modern'\n"),
        "p_extends_int": _write(d, "p-ext5.toml", "[profile]\nextends = 5\n"),
        "p_extends_empty": _write(d, "p-extempty.toml", "[profile]\nextends = ''\n"),
        "p_extends_missing": _write(d, "p-extmissing.toml", "[profile]\nextends = 'gone.toml'\n"),
        "p_extends_bad_name": _write(d, "p-extbad.toml", "[profile]\nextends = 'ancient'\n"),
        "p_self": _write(d, "p-self.toml", "[profile]\nextends = 'p-self.toml'\n"),
        "p_cycle_a": _write(d, "p-cycle-a.toml", "[profile]\nextends = 'p-cycle-b.toml'\n"),
        "p_cycle_b": _write(d, "p-cycle-b.toml", "[profile]\nextends = 'p-cycle-a.toml'\n"),
        "p_host_int": _write(d, "p-host5.toml", "[profile]\nname='x'\nhost = 5\n"),
        "p_guests": _write(d, "p-guests.toml", "[profile]\nname='x'\n[guests]\nx = 1\n"),
        "p_bad_value": _write(d, "p-badval.toml", "[profile]\nname='x'\n[host]\ncores = -2\n"),
        "p_unknown_field": _write(d, "p-unk.toml", "[profile]\nname='x'\n[host]\nwarp = 9\n"),
        "p_binary": _write(d, "p-bin.toml", b"\xff\xfe\x00"),
    }
    made["dir"].mkdir()
    for i in range(40):  # an extends chain longer than the limit
        _write(d, f"chain/c{i}.toml", f"[profile]\nextends = 'c{i + 1}.toml'\n")
    _write(d, "chain/c40.toml", "[profile]\nname = 'end'\n")
    made["p_chain"] = d / "chain" / "c0.toml"
    made["through_file"] = made["binary"] / "x.toml"
    loop = d / "loop.toml"
    loop.symlink_to(loop)
    made["symlink_loop"] = loop
    made["long_name"] = d / ("n" * 300 + ".toml")
    fifo = d / "fifo.toml"
    os.mkfifo(fifo)
    made["fifo"] = fifo
    return {k: str(v) for k, v in made.items()}


FILE_CASES = [
    # (id, argv, field the one line must start with)
    ("config-missing", ["run", "--config", "/nonexistent/x.toml"], "--config"),
    ("config-empty-path", ["run", "--config", ""], "--config"),
    ("config-dir", ["run", "--config", "{dir}"], "--config"),
    ("config-dot", ["run", "--config", "."], "--config"),
    ("config-binary", ["run", "--config", "{binary}"], "--config"),
    ("config-latin1", ["run", "--config", "{latin1}"], "--config"),
    ("config-too-big", ["run", "--config", "{big}"], "--config"),
    ("config-not-toml", ["run", "--config", "{not_toml}"], "--config"),
    ("config-deep-3000", ["run", "--config", "{deep3000}"], "--config"),
    ("config-deep-40", ["run", "--config", "{deep40}"], "--config"),
    ("config-fifo", ["run", "--config", "{fifo}"], "--config"),
    ("config-dev-zero", ["run", "--config", "/dev/zero"], "--config"),
    ("config-dev-null", ["run", "--config", "/dev/null"], "--config"),
    ("config-dev-urandom", ["compare", "--config", "/dev/urandom"], "--config"),
    ("config-proc-dir", ["run", "--config", "/proc"], "--config"),
    ("config-nul-byte", ["run", "--config", "a\x00b.toml"], "--config"),
    ("config-through-file", ["run", "--config", "{through_file}"], "--config"),
    ("config-symlink-loop", ["run", "--config", "{symlink_loop}"], "--config"),
    ("config-long-name", ["run", "--config", "{long_name}"], "--config"),
    ("sweep-config-dir", ["sweep", "--vary", "host.cores=1,2", "--config", "{dir}"], "--config"),
    ("capacity-config-bin", ["capacity", "--p99-limit", "1ms", "--config", "{binary}"],
     "--config"),
    ("trace-config-fifo", ["trace", "--config", "{fifo}"], "--config"),
    ("guests-empty", ["run", "--config", "{empty_list_guests}"], "guests"),
    ("guests-int", ["run", "--config", "{guests_int}"], "guests"),
    ("guests-item-int", ["run", "--config", "{guests_item_int}"], "guests[0]"),
    ("guest-approach", ["run", "--config", "{bad_approach}"], "guests[0].approach"),
    ("guest-duplicate", ["run", "--config", "{dup_guests}"], "guests"),
    ("unknown-top-key", ["run", "--config", "{unknown_key}"], "speed"),
    ("negative-duration", ["run", "--config", "{neg_duration}"], "duration_us"),
    ("string-duration", ["run", "--config", "{str_duration}"], "duration_us"),
    ("empty-window", ["run", "--config", "{window}"], "warmup_us"),
    ("cores-zero", ["run", "--config", "{cores0}"], "host.cores"),
    ("cores-float", ["run", "--config", "{cores_float}"], "host.cores"),
    ("cores-bool", ["run", "--config", "{cores_bool}"], "host.cores"),
    ("line-rate-nan", ["run", "--config", "{nan}"], "nic.line_rate_gbps"),
    ("line-rate-inf", ["run", "--config", "{inf}"], "nic.line_rate_gbps"),
    ("ring-size-3", ["run", "--config", "{ring3}"], "paravirtual.ring_size"),
    ("xen-ring-32768", ["run", "--config", "{xen_ring}"], "paravirtual.xen_net_ring_slots"),
    ("xen-blk-order-9", ["run", "--config", "{xen_blk}"], "paravirtual.xen_blk_max_segments"),
    ("workload-kind", ["run", "--config", "{kind}"], "guests[0].workloads[0].kind"),
    ("no-workloads", ["run", "--config", "{no_workloads}"], "guests[0].workloads"),
    ("dup-workloads", ["run", "--config", "{dup_workloads}"], "guests[0].name"),
    ("in-flight-0", ["run", "--config", "{in_flight0}"], "guests[0].workloads[0].in_flight"),
    ("rate-0", ["run", "--config", "{rate0}"], "guests[0].workloads[0].rate_per_s"),
    ("message-0", ["run", "--config", "{msg0}"], "guests[0].workloads[0].message_bytes"),
    ("window-too-big", ["run", "--config", "{window_huge}"],
     "guests[0].workloads[0].window_bytes"),
    ("scenario-profile-int", ["run", "--config", "{sc_profile_int}"], "profile"),
    ("scenario-profile-empty", ["run", "--config", "{sc_profile_empty}"], "profile"),
    ("scenario-profile-missing", ["run", "--config", "{sc_profile_missing}"], "profile"),
    ("host-not-a-table", ["run", "--config", "{host_int}"], "host"),
    ("budget-open-flood", ["run", "--config", "{open_flood}"], "budget"),
    ("budget-long-run", ["run", "--config", "{long_run}"], "budget"),
    # --profile
    ("profile-empty", ["compare", "--profile", ""], "--profile"),
    ("profile-blank", ["compare", "--profile", "  "], "--profile"),
    ("profile-unknown", ["compare", "--profile", "no-such-profile"], "profile"),
    ("profile-case", ["compare", "--profile", "MODERN"], "profile"),
    ("profile-dot", ["compare", "--profile", "."], "profile"),
    ("profile-dotdot-name", ["compare", "--profile", "..modern"], "profile"),
    ("profile-nul", ["compare", "--profile", "modern\x00"], "profile"),
    ("profile-dir", ["compare", "--profile", "{dir}"], "profile"),
    ("profile-root-dir", ["compare", "--profile", "/"], "profile"),
    ("profile-missing-file", ["compare", "--profile", "/nonexistent/p.toml"], "profile"),
    ("profile-fifo", ["compare", "--profile", "{fifo}"], "profile"),
    ("profile-dev-zero", ["compare", "--profile", "/dev/zero"], "profile"),
    ("profile-big", ["compare", "--profile", "{big}"], "profile"),
    ("profile-binary", ["compare", "--profile", "{p_binary}"], "profile"),
    ("profile-deep", ["compare", "--profile", "{deep3000}"], "profile"),
    ("profile-top-int", ["compare", "--profile", "{p_top_int}"], "profile.profile"),
    ("profile-top-str", ["compare", "--profile", "{p_top_str}"], "profile.profile"),
    ("profile-meta-key", ["compare", "--profile", "{p_meta_key}"], "profile.profile"),
    ("profile-extends-int", ["compare", "--profile", "{p_extends_int}"], "profile.extends"),
    ("profile-extends-empty", ["compare", "--profile", "{p_extends_empty}"], "profile.extends"),
    ("profile-extends-missing", ["compare", "--profile", "{p_extends_missing}"],
     "profile.extends"),
    ("profile-extends-bad-name", ["compare", "--profile", "{p_extends_bad_name}"],
     "profile.extends"),
    ("profile-extends-self", ["compare", "--profile", "{p_self}"], "profile.extends"),
    ("profile-extends-cycle", ["compare", "--profile", "{p_cycle_a}"], "profile.extends"),
    ("profile-extends-chain", ["compare", "--profile", "{p_chain}"], "profile.extends"),
    ("profile-host-int", ["compare", "--profile", "{p_host_int}"], "profile.host"),
    ("profile-guests-table", ["compare", "--profile", "{p_guests}"], "profile.guests"),
    ("profile-bad-value", ["compare", "--profile", "{p_bad_value}"], "host.cores"),
    ("profile-unknown-field", ["compare", "--profile", "{p_unknown_field}"], "host.warp"),
    ("trace-profile-dir", ["trace", "--profile", "{dir}"], "profile"),
    ("sweep-profile-empty", ["sweep", "--vary", "host.cores=1", "--profile", ""], "--profile"),
    ("capacity-profile-bad", ["capacity", "--p99-limit", "1ms", "--profile", "nope"], "profile"),
]

FLAG_CASES = [
    # Counts and seeds.
    ("seed-negative", ["compare", "--seed", "-1"], "--seed"),
    ("seed-equals-negative", ["compare", "--seed=-1"], "--seed"),
    ("seed-text", ["compare", "--seed", "x"], "-s/--seed"),
    ("seed-huge", ["compare", "--seed", str(2**64)], "--seed"),
    ("seed-short-negative", ["compare", "-s", "-5"], "--seed"),
    ("replications-0", ["compare", "-r", "0"], "--replications"),
    ("replications-negative", ["compare", "-r", "-2"], "--replications"),
    ("replications-text", ["compare", "-r", "many"], "-r/--replications"),
    ("replications-float", ["compare", "-r", "1.5"], "-r/--replications"),
    ("jobs-0", ["compare", "-j", "0"], "--jobs"),
    ("jobs-negative", ["compare", "--jobs", "-3"], "--jobs"),
    ("jobs-text", ["compare", "--jobs", "all"], "-j/--jobs"),
    ("run-seed-negative", ["run", "--config", "examples/netperf-rr.toml", "--seed", "-1"],
     "--seed"),
    ("run-without-config", ["run"], "--config"),
    # Durations.
    ("duration-no-unit", ["compare", "--duration", "5"], "--duration"),
    ("duration-zero", ["compare", "--duration", "0"], "--duration"),
    ("duration-zero-ms", ["compare", "--duration", "0ms"], "--duration"),
    ("duration-negative", ["compare", "--duration", "-5ms"], "--duration"),
    ("duration-hours", ["compare", "--duration", "5h"], "--duration"),
    ("duration-word", ["compare", "--duration", "fast"], "--duration"),
    ("duration-empty", ["compare", "--duration", ""], "--duration"),
    ("duration-inf", ["compare", "--duration", "inf"], "--duration"),
    ("duration-nan", ["compare", "--duration", "nan"], "--duration"),
    ("duration-overflow", ["compare", "--duration", "1e400s"], "--duration"),
    ("duration-beyond-range", ["compare", "--duration", "1e7s"], "duration_us"),
    ("duration-before-warmup", ["compare", "--duration", "1ms"], "--duration"),
    ("duration-missing-value", ["compare", "--duration"], "--duration"),
    ("warmup-negative", ["compare", "--warmup", "-1ms"], "--warmup"),
    ("warmup-no-unit", ["compare", "--warmup", "5"], "--warmup"),
    ("warmup-after-duration", ["compare", "--warmup", "30ms"], "--warmup"),
    ("warmup-word", ["compare", "--warmup", "some"], "--warmup"),
    # Approaches.
    ("approaches-empty", ["compare", "--approaches", "", "--json"], "--approaches"),
    ("approaches-comma", ["compare", "--approaches", ","], "--approaches"),
    ("approaches-blank", ["compare", "--approaches", " , "], "--approaches"),
    ("approaches-gap", ["compare", "--approaches", "native,,emulated"], "--approaches"),
    ("approaches-trailing", ["compare", "--approaches", "native,"], "--approaches"),
    ("approaches-duplicate", ["compare", "--approaches", "native,native"], "--approaches"),
    ("approaches-duplicate-spaced", ["compare", "--approaches", "native, native"],
     "--approaches"),
    ("approaches-unknown", ["compare", "--approaches", "native,magic"], "--approaches"),
    ("approaches-case", ["compare", "--approaches", "Native"], "--approaches"),
    ("capacity-approaches-comma", ["capacity", "--p99-limit", "1ms", "--approaches", ","],
     "--approaches"),
    ("capacity-approaches-empty", ["capacity", "--p99-limit", "1ms", "--approaches", ""],
     "--approaches"),
    ("capacity-approaches-duplicate",
     ["capacity", "--p99-limit", "1ms", "--approaches", "emulated,emulated"], "--approaches"),
    ("sweep-approaches-empty", ["sweep", "--vary", "host.cores=1", "--approaches", ""],
     "--approaches"),
    ("cpu-support-unknown", ["compare", "--cpu-support", "quantum"], "--cpu-support"),
    ("config-missing-value", ["compare", "--config"], "--config"),
    ("unknown-flag", ["compare", "--bogus"], "unrecognized arguments: --bogus"),
    ("unknown-command", ["frobnicate"], "COMMAND"),
    # --set
    ("set-no-equals", ["compare", "--set", "host.cores"], "--set"),
    ("set-empty-key", ["compare", "--set", "=5"], "--set"),
    ("set-extra-brackets", ["compare", "--set", "guests[0]]].vcpus=1"], "guests[0]]].vcpus"),
    ("set-open-bracket", ["compare", "--set", "guests[0.vcpus=1"], "guests[0.vcpus"),
    ("set-leading-dot", ["compare", "--set", ".host.cores=1"], ".host.cores"),
    ("nic-queues-zero", ["compare", "--set", "nic.queues=0"], "nic.queues"),
    ("nic-queues-fraction", ["compare", "--set", "nic.queues=1.5"], "nic.queues"),
    ("nic-queues-too-many", ["compare", "--set", "nic.queues=65"], "nic.queues"),
    ("set-double-dot", ["compare", "--set", "host..cores=1"], "host..cores"),
    ("set-trailing-dot", ["compare", "--set", "host.cores.=1"], "host.cores."),
    ("set-negative-index", ["compare", "--set", "guests[-1].vcpus=1"], "guests[-1].vcpus"),
    ("set-index-range", ["compare", "--set", "guests[99].vcpus=1"], "guests[99].vcpus"),
    ("set-index-word", ["compare", "--set", "guests[x].vcpus=1"], "guests[x].vcpus"),
    ("set-index-huge", ["compare", "--set", "guests[" + "9" * 5000 + "].vcpus=1"], "guests["),
    ("set-space-in-key", ["compare", "--set", "host cores=1"], "host cores"),
    ("set-cores-zero", ["compare", "--set", "host.cores=0"], "host.cores"),
    ("set-cores-text", ["compare", "--set", "host.cores=abc"], "host.cores"),
    ("set-cores-float", ["compare", "--set", "host.cores=1.5"], "host.cores"),
    ("set-cores-bool", ["compare", "--set", "host.cores=true"], "host.cores"),
    ("set-cores-list", ["compare", "--set", "host.cores=[1]"], "host.cores"),
    ("set-two-values", ["compare", "--set", "host.cores=1\nwarp=2"], "--set host.cores"),
    ("set-newline-text", ["compare", "--set", "name=a\nb"], "--set name"),
    ("set-host-int", ["compare", "--set", "host=5"], "host"),
    ("set-unknown-top", ["compare", "--set", "nosuch=1"], "nosuch"),
    ("set-unknown-field", ["compare", "--set", "host.nosuch=1"], "host.nosuch"),
    ("set-guests-int", ["compare", "--set", "guests=5"], "guests"),
    ("set-guest-int", ["compare", "--set", "guests[0]=5"], "guests[0]"),
    ("set-guests-empty", ["compare", "--set", "guests=[]"], "guests"),
    ("set-ring-100", ["compare", "--set", "paravirtual.ring_size=100"], "paravirtual.ring_size"),
    ("set-xen-ring", ["compare", "--set", "paravirtual.backend=xen", "--set",
                      "paravirtual.xen_net_ring_slots=32768"], "paravirtual.xen_net_ring_slots"),
    ("set-xen-ring-16384", ["compare", "--set", "paravirtual.xen_net_ring_slots=16384"],
     "paravirtual.xen_net_ring_slots"),
    ("set-xen-ring-2", ["compare", "--set", "paravirtual.xen_net_ring_slots=2"],
     "paravirtual.xen_net_ring_slots"),
    ("set-xen-ring-stop-free", ["compare", "--set", "paravirtual.backend=xen", "--set",
                                "paravirtual.tx_stop_free=64", "--set",
                                "paravirtual.xen_net_ring_slots=64"],
     "paravirtual.xen_net_ring_slots"),
    ("set-xen-segments", ["compare", "--set", "paravirtual.xen_blk_max_segments=4096"],
     "paravirtual.xen_blk_max_segments"),
    ("set-deep-value", ["compare", "--set", "host.cores=" + "[" * 40 + "]" * 40], "--set"),
    ("set-very-deep-value", ["compare", "--set", "host.cores=" + "[" * 3000 + "]" * 3000],
     "--set"),
    ("set-kind", ["compare", "--set", "guests[0].workloads[0].kind=nope"],
     "guests[0].workloads[0].kind"),
    ("set-approach", ["compare", "--set", "guests[0].approach=magic"], "guests[0].approach"),
    ("set-duration-nan", ["compare", "--set", "duration_us=nan"], "duration_us"),
    ("set-duration-inf", ["compare", "--set", "duration_us=inf"], "duration_us"),
    ("set-warmup-negative", ["compare", "--set", "warmup_us=-1"], "warmup_us"),
    ("set-cpu-support", ["compare", "--set", "hypervisor.cpu_support=x"],
     "hypervisor.cpu_support"),
    ("set-workloads-empty", ["compare", "--set", "guests[0].workloads=[]"],
     "guests[0].workloads"),
    ("set-profile-int", ["compare", "--set", "profile=5"], "profile"),
    ("set-name-int", ["compare", "--set", "name=5"], "name"),
    ("set-in-flight-huge", ["compare", "--set", "guests[0].workloads[0].in_flight=100001"],
     "guests[0].workloads[0].in_flight"),
    ("set-rate-negative", ["compare", "--set", "guests[0].workloads[0].rate_per_s=-1"],
     "guests[0].workloads[0].rate_per_s"),
    ("run-set-bad", ["run", "--config", "examples/netperf-rr.toml", "--set", "host.cores=0"],
     "host.cores"),
    # Budget (refused before any run unless --force).
    ("budget-replications", ["compare", "-r", "1000000000"], "budget"),
    ("budget-duration", ["compare", "--duration", "100000s"], "budget"),
    ("budget-open-rate", ["compare", "--set", "guests[0].workloads[0].loop=open", "--set",
                          "guests[0].workloads[0].rate_per_s=1e9"], "budget"),
    ("budget-sweep-grid", ["sweep", "--vary", "host.cores=1,2,3,4,5,6,7,8", "--vary",
                           "guests[0].vcpus=1,2,3,4,5,6,7,8,9,10", "--vary",
                           "guests[0].workloads[0].in_flight=1,2,3,4,5,6,7,8,9,10", "--vary",
                           "paravirtual.ring_size=2,4,8,16,32,64,128,256"], "budget"),
    ("budget-capacity", ["capacity", "--p99-limit", "1ms", "--max-guests", "1000"], "budget"),
    # trace
    ("trace-seed-negative", ["trace", "--seed=-1"], "--seed"),
    ("trace-seed-negative-spaced", ["trace", "--seed", "-1"], "--seed"),
    ("trace-requests-0", ["trace", "--requests", "0"], "--requests"),
    ("trace-requests-negative", ["trace", "--requests", "-1"], "--requests"),
    ("trace-requests-huge", ["trace", "--requests", "1000000000"], "--requests"),
    ("trace-guest", ["trace", "--guest", "nobody"], "--guest"),
    ("trace-workload", ["trace", "--workload", "nope"], "--workload"),
    ("trace-approach", ["trace", "--approach", "magic"], "--approach"),
    ("trace-set", ["trace", "--set", "host.cores=0"], "host.cores"),
    ("trace-set-malformed", ["trace", "--set", "guests[0]]].vcpus=1"], "guests[0]]].vcpus"),
    # sweep
    ("sweep-no-vary", ["sweep"], "--vary"),
    ("sweep-vary-no-equals", ["sweep", "--vary", "host.cores"], "--vary"),
    ("sweep-vary-empty-key", ["sweep", "--vary", "=1,2"], "--vary"),
    ("sweep-vary-no-values", ["sweep", "--vary", "host.cores="], "--vary"),
    ("sweep-vary-only-commas", ["sweep", "--vary", "host.cores=,,"], "--vary"),
    ("sweep-vary-short-name", ["sweep", "--vary", "in_flight=1,4"], "--vary"),
    ("sweep-vary-unknown", ["sweep", "--vary", "host.nosuch=1,2"], "--vary"),
    ("sweep-vary-malformed", ["sweep", "--vary", "guests[0]]].vcpus=1"], "--vary"),
    ("sweep-vary-index-range", ["sweep", "--vary", "guests[5].vcpus=1,2"], "--vary"),
    ("sweep-vary-twice", ["sweep", "--vary", "host.cores=1", "--vary", "host.cores=2"],
     "--vary"),
    ("sweep-vary-deep-value", ["sweep", "--vary", "host.cores=" + "[" * 40 + "]" * 40],
     "--vary"),
    ("sweep-seed-negative", ["sweep", "--vary", "host.cores=1", "--seed", "-1"], "--seed"),
    ("sweep-set-bad", ["sweep", "--vary", "host.cores=1", "--set", "host.cores=0"],
     "host.cores"),
    # capacity
    ("capacity-no-limit", ["capacity"], "--p99-limit"),
    ("capacity-limit-zero", ["capacity", "--p99-limit", "0"], "--p99-limit"),
    ("capacity-limit-negative", ["capacity", "--p99-limit", "-5us"], "--p99-limit"),
    ("capacity-limit-word", ["capacity", "--p99-limit", "abc"], "--p99-limit"),
    ("capacity-limit-no-unit", ["capacity", "--p99-limit", "250"], "--p99-limit"),
    ("capacity-max-guests-0", ["capacity", "--p99-limit", "1ms", "--max-guests", "0"],
     "--max-guests"),
    ("capacity-max-guests-negative", ["capacity", "--p99-limit", "1ms", "--max-guests", "-1"],
     "--max-guests"),
    ("capacity-max-guests-huge", ["capacity", "--p99-limit", "1ms", "--max-guests", "100000"],
     "--max-guests"),
    ("capacity-replications-0", ["capacity", "--p99-limit", "1ms", "-r", "0"],
     "--replications"),
    # Other commands.
    ("presets-ghz-zero", ["presets", "--cpu-ghz", "0"], "--cpu-ghz"),
    ("presets-ghz-negative", ["presets", "--cpu-ghz", "-1"], "--cpu-ghz"),
    ("presets-ghz-nan", ["presets", "--cpu-ghz", "nan"], "--cpu-ghz"),
    ("presets-ghz-inf", ["presets", "--cpu-ghz", "inf"], "--cpu-ghz"),
    ("presets-ghz-word", ["presets", "--cpu-ghz", "fast"], "--cpu-ghz"),
    ("presets-ghz-too-high", ["presets", "--cpu-ghz", "11"], "--cpu-ghz"),
    ("devices-unknown", ["devices", "virtio9000"], "device"),
    ("devices-empty", ["devices", ""], "device"),
    ("lab-unknown", ["lab", "nosuch"], "lab"),
    ("lab-seed-negative", ["lab", "queues", "-s", "-1"], "--seed"),
    ("lab-seed-word", ["lab", "queues", "-s", "x"], "-s/--seed"),
    ("lab-check-no-equals", ["lab", "queues", "--check", "a"], "--check"),
    ("lab-check-not-number", ["lab", "queues", "--check", "x=abc"], "--check"),
    ("lab-check-unknown", ["lab", "queues", "--check", "nosuch=1"], "--check"),
    ("params-extra", ["params", "--bogus"], "unrecognized arguments: --bogus"),
    ("profiles-extra", ["profiles", "extra"], "unrecognized arguments: extra"),
    ("profiles-extra-two-lines", ["profiles", "a\nb"], "unrecognized arguments: a\\nb"),
    ("set-key-two-lines", ["compare", "--set", "host\n.cores=1"], "host\\n.cores"),
    ("config-name-two-lines", ["run", "--config", "no\nsuch.toml"], "--config"),
    # Real-system commands: option checks that happen before any real work.
    ("demo-unknown", ["demo", "bogus"], "DEMO"),
    ("demo-ns-timeout-zero", ["demo", "namespaces", "--timeout", "0"], "--timeout"),
    ("demo-ns-timeout-high", ["demo", "namespaces", "--timeout", "301"], "--timeout"),
    ("demo-ns-timeout-word", ["demo", "namespaces", "--timeout", "soon"], "--timeout"),
    ("demo-ns-timeout-negative", ["demo", "namespaces", "--timeout", "-5"], "--timeout"),
    ("demo-ns-mode", ["demo", "namespaces", "--mode", "superuser"], "--mode"),
    ("demo-cg-seconds-low", ["demo", "cgroups", "--seconds", "0.1"], "--seconds"),
    ("demo-cg-seconds-high", ["demo", "cgroups", "--seconds", "61"], "--seconds"),
    ("demo-cg-weights-one", ["demo", "cgroups", "--weights", "3"], "--weights"),
    ("demo-cg-weights-zero", ["demo", "cgroups", "--weights", "0:1"], "--weights"),
    ("demo-cg-weights-words", ["demo", "cgroups", "--weights", "a:b"], "--weights"),
    ("demo-cg-quota-one", ["demo", "cgroups", "--quota", "5"], "--quota"),
    ("demo-cg-quota-over", ["demo", "cgroups", "--quota", "200/100"], "--quota"),
    ("demo-cg-quota-words", ["demo", "cgroups", "--quota", "x/y"], "--quota"),
    ("calibrate-rounds-low", ["calibrate", "--rounds", "1"], "--rounds"),
    ("calibrate-rounds-high", ["calibrate", "--rounds", "51"], "--rounds"),
    ("calibrate-rounds-word", ["calibrate", "--rounds", "x"], "--rounds"),
    ("calibrate-mode", ["calibrate", "--mode", "nope"], "--mode"),
]

CASES = FILE_CASES + FLAG_CASES


def test_the_table_is_large_and_its_ids_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 150
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(("argv", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_naming_the_field(argv, field, files, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = [a.format(**files) if "{" in a else a for a in argv]
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, (out[-300:], err)
    assert out == "", "nothing may be printed (or run) before the error"
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"virtlab: error: {field}"), lines[0]


def test_an_unreadable_file_is_one_line(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads any file, so an unreadable file cannot be made here")
    secret = tmp_path / "secret.toml"
    secret.write_text("[host]\ncores = 2\n")
    secret.chmod(0)
    assert main(["run", "--config", str(secret)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtlab: error: --config: ") and "permission denied" in err


# What is accepted now --------------------------------------------------------------------------
def test_relative_extends_resolves_against_the_profile_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "profiles"
    _write(folder, "base.toml", "[profile]\nname = 'base'\n[host]\ncores = 3\n")
    _write(folder, "child.toml", "[profile]\nname = 'child'\nextends = 'base.toml'\n"
                                 "[nic]\nline_rate_gbps = 1.0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write(elsewhere, "base.toml", "[profile]\nname = 'decoy'\n[host]\ncores = 5\n")
    monkeypatch.chdir(elsewhere)
    assert main(["compare", "--profile", str(folder / "child.toml"), "--approaches", "native",
                 *ONE_RUN]) == 0
    doc = capsys.readouterr().out
    assert '"cores": 3' in doc and '"cores": 5' not in doc


def test_a_scenario_profile_path_resolves_against_the_scenario_folder(tmp_path, monkeypatch,
                                                                       capsys):
    _write(tmp_path / "lab", "hw.toml", "[profile]\nname = 'hw'\n[host]\ncores = 3\n")
    config = _write(tmp_path / "lab", "scenario.toml", "profile = 'hw.toml'\n")
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--config", str(config), "--approaches", "native", *ONE_RUN]) == 0
    assert '"cores": 3' in capsys.readouterr().out


def test_warmup_zero_is_accepted_like_warmup_us_zero(capsys):
    assert main(["compare", "--approaches", "native", *ONE_RUN]) == 0
    assert '"warmup_us": 0.0' in capsys.readouterr().out


def test_the_budget_is_a_refusal_that_force_overrides(monkeypatch, capsys):
    monkeypatch.setattr(budget, "EVENT_BUDGET", 10)
    assert main(["compare", "--approaches", "native", *ONE_RUN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtlab: error: budget: ") and "--force" in err
    assert main(["compare", "--approaches", "native", "--force", *ONE_RUN]) == 0
    assert capsys.readouterr().out.startswith("{")


def test_jobs_are_capped_at_the_cpus_and_the_runs_with_a_note(capsys):
    assert main(["compare", "--approaches", "native", "--jobs", "300", *ONE_RUN]) == 0
    err = capsys.readouterr().err
    assert err.startswith("virtlab: note: --jobs 300 capped at 1 ")


def test_a_stream_that_completes_nothing_is_reported_not_silent(capsys):
    status = main(["compare", "--config", str(ROOT / "examples" / "bulk-stream.toml"),
                   "--set", "guests[0].workloads[0].message_bytes=1", "--approaches", "native",
                   "-r", "1", "--duration", "3ms", "--warmup", "1ms", "--json"])
    assert status == 0
    err = capsys.readouterr().err
    assert "virtlab: warning: " in err and "no request completed" in err


def test_the_largest_xen_net_ring_runs_and_the_next_is_refused(capsys):
    argv = ["compare", "--config", str(ROOT / "examples" / "bulk-stream.toml"), "--set",
            "paravirtual.backend=xen", "--approaches", "paravirtual", "-r", "1",
            "--duration", "1ms", "--warmup", "0", "--json"]
    assert main([*argv, "--set", "paravirtual.xen_net_ring_slots=8192"]) == 0
    assert '"error"' not in capsys.readouterr().out
    assert main([*argv, "--set", "paravirtual.xen_net_ring_slots=16384"]) == 2


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import virtlab.cli as cli

    def broken(args):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(cli, "_cmd_profiles", broken)
    assert main(["profiles"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("virtlab: internal error: ZeroDivisionError")
    assert "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["profiles", "--debug"])


# Real processes --------------------------------------------------------------------------------
def _virtlab(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "virtlab", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, **kwargs)


def test_a_fifo_is_refused_at_once_not_waited_on(files):
    proc = _virtlab("run", "--config", files["fifo"])
    assert proc.returncode == 2
    assert proc.stderr.startswith("virtlab: error: --config: ") and "FIFO" in proc.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_failed_write_is_one_line_and_a_nonzero_status():
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "virtlab", "params"], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "virtlab: error: standard output: cannot write the results: No space left on device"]


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "virtlab", "params", "--markdown"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    # The reader goes away before the program writes anything: its first write must fail.
    # (Reading a little first would race on a busy machine: the whole output fits in the
    # pipe's buffer, and a program that wrote it all before the close rightly exits 0.)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    assert err == ""


def _handlers_installed(pid: int, deadline_s: float = 60.0) -> bool:
    """True once the process catches SIGTERM (virtlab's handlers are in place)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        caught = int(next(line.split()[1] for line in status.splitlines()
                          if line.startswith("SigCgt:")), 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return True
        time.sleep(0.005)
    return False


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                members.append(int(entry.name))
    return members


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(("sig", "count", "when"), [
    (signal.SIGINT, 1, "running"), (signal.SIGTERM, 1, "running"),
    (signal.SIGINT, 3, "running"), (signal.SIGTERM, 3, "running"),
    (signal.SIGINT, 1, "starting"), (signal.SIGINT, 2, "starting"),
], ids=["int", "term", "int-x3", "term-x3", "int-at-start", "int-x2-at-start"])
def test_signals_stop_the_run_and_its_workers_in_order(sig, count, when):
    proc = subprocess.Popen([sys.executable, "-m", "virtlab", "compare", "--duration", "5s",
                             "--jobs", "2", "--force", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            start_new_session=True)
    try:
        assert _handlers_installed(proc.pid)
        if when == "running":  # wait until the worker processes exist
            end = time.monotonic() + 60
            while len(_session_members(proc.pid)) < 3 and time.monotonic() < end:
                time.sleep(0.01)
        for _ in range(count):  # to the whole group, as a terminal's Ctrl-C does
            os.killpg(proc.pid, sig)
            time.sleep(0.01)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err.decode()
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"virtlab: interrupted by {signal.Signals(sig).name}; stopped"), lines
    assert out == b""
    end = time.monotonic() + 10
    while _session_members(proc.pid) and time.monotonic() < end:
        time.sleep(0.01)
    assert _session_members(proc.pid) == [], "a worker process outlived the run"
