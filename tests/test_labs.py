"""Labs: problems and answers agree; answers are checkable; -c transcripts are stable.

The golden transcripts in tests/golden are regression tests (they pin the output format and
the generated problems), not validation; the queueing lab's answers are validated against
simulation in test_queues_lab_agrees_with_simulation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from virtlab.cli import main
from virtlab.labs import LABS, _load_builtin_labs

GOLDEN = Path(__file__).resolve().parent / "golden"
_load_builtin_labs()


@pytest.mark.parametrize("name", ["queues"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lab_transcript_matches_golden(name, seed, capsys):
    assert main(["lab", name, "-s", str(seed), "-c"]) == 0
    out = capsys.readouterr().out
    golden = GOLDEN / f"lab-{name}-s{seed}.txt"
    if not golden.exists():
        golden.write_text(out, encoding="utf-8")
        pytest.fail(f"{golden.name} did not exist and was written; review and commit it")
    assert out == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(LABS))
def test_check_accepts_the_computed_answers_and_rejects_wrong_ones(name, capsys):
    lab = LABS[name]
    _, context = lab.problem(5)
    answers = lab.answers(context)
    right = ",".join(f"{a.name}={a.value}" for a in answers)
    wrong = ",".join(f"{a.name}={a.value * 1.5 + 1}" for a in answers)
    assert main(["lab", name, "-s", "5", "--check", right]) == 0
    assert main(["lab", name, "-s", "5", "--check", wrong]) == 1
    capsys.readouterr()


def test_unknown_lab_is_one_line_status_2(capsys):
    assert main(["lab", "nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("virtlab: error: lab: must be one of")


@pytest.mark.slow
def test_queues_lab_agrees_with_simulation():
    from virtlab.labs.queues import LAB, simulate
    from virtlab.stats import mean_ci  # noqa: F401

    _, context = LAB.problem(1)
    w = {a.name: a.value for a in LAB.answers(context)}["W"]
    mean, half = simulate(context, seed=3)
    assert abs(mean - w) <= 3 * half, (mean, half, w)


@pytest.mark.parametrize("folder", sorted((Path(__file__).resolve().parents[1] / "labs")
                                          .glob("0*")), ids=lambda p: p.name)
def test_every_lab_folder_has_a_readme_and_a_check_script(folder):
    assert (folder / "README.md").is_file()
    assert (folder / "check.py").is_file()


@pytest.mark.parametrize("folder, name", [("01-queues", "queues"), ("02-exits", "exits"),
                                          ("04-rings", "rings")])
def test_folder_names_are_aliases_of_the_lab_names(folder, name, capsys):
    assert main(["lab", name, "-s", "1", "-c"]) == 0
    by_name = capsys.readouterr().out
    assert main(["lab", folder, "-s", "1", "-c"]) == 0
    assert capsys.readouterr().out == by_name


def _run_check(lab: str, *args: str) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[1] / "labs" / lab / "check.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=300)


def test_lab02_check_agrees_with_the_tables_and_grades_answers():
    from virtlab.labs.exits import LAB

    _, context = LAB.problem(2)
    answers = {a.name: a.value for a in LAB.answers(context)}
    right = _run_check("02-exits", "-s", "2", "--exits", str(answers["exits"]),
                       "--exit-us", str(answers["exit_us"]))
    assert right.returncode == 0, right.stdout + right.stderr
    assert "model and access tables agree" in right.stdout
    wrong = _run_check("02-exits", "-s", "2", "--exits", str(answers["exits"] + 3))
    assert wrong.returncode == 1
    assert "your exits" in wrong.stdout and "wrong" in wrong.stdout


def test_lab06_check_simulated_shares_follow_the_formula_and_grade_predictions():
    right = _run_check("06-namespaces", "--weights", "900:100", "--share-a", "0.9",
                       "--quota", "5/10", "--share-q", "0.5")
    assert right.returncode == 0, right.stdout + right.stderr
    wrong = _run_check("06-namespaces", "--weights", "900:100", "--share-a", "0.5")
    assert wrong.returncode == 1
    assert "your share_a = 0.5: wrong" in wrong.stdout


def test_lab06_simulated_shares_reject_a_wrong_weight():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "labs" / "06-namespaces" / "check.py"
    spec = importlib.util.spec_from_file_location("lab06_check", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    share_a, share_q = module.simulated_shares(300, 100, 20, 100)
    assert abs(share_a - 0.75) <= module.TOLERANCE and abs(share_q - 0.2) <= module.TOLERANCE
    share_a, _ = module.simulated_shares(100, 100, 20, 100)
    assert abs(share_a - 0.75) > module.TOLERANCE   # equal weights are not 3:1


@pytest.mark.parametrize("seed", range(6))
def test_scheduling_lab_shares_agree_with_the_formula(seed):
    from virtlab.labs.scheduling import LAB

    _, ctx = LAB.problem(seed)
    shares = {a.name: a.value for a in LAB.answers(ctx)}
    fair_b = ctx["weight_b"] / (ctx["weight_a"] + ctx["weight_b"])
    formula_b = min(fair_b, ctx["quota_pct"] / 100) if ctx["quota_pct"] else fair_b
    assert abs(shares["share_b"] - formula_b) <= 0.01, (ctx, shares)
    assert abs(shares["share_a"] - (1 - formula_b)) <= 0.01, (ctx, shares)


@pytest.mark.parametrize("seed", range(6))
def test_emulation_lab_answers_match_the_bill_from_the_access_tables(seed):
    from virtlab.labs.emulation import LAB, NICS, scenario
    from virtlab.paths.emulation.analytic import disk_read_bill, transaction_bill

    _, ctx = LAB.problem(seed)
    answers = {a.name: a.value for a in LAB.answers(ctx)}
    s = scenario(ctx)
    bill = transaction_bill(s) if ctx["device"] in NICS else disk_read_bill(s)
    assert answers["exits"] == sum(bill.exits.values())
    assert answers["user_exits"] == bill.user_exits
    assert answers["latency_us"] == pytest.approx(bill.latency_us, rel=1e-9)


# The CLONE_NEW* values of <linux/sched.h>, written out here rather than taken from virtlab.
_SCHED_H = {"mnt": 0x00020000, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
            "user": 0x10000000, "pid": 0x20000000, "net": 0x40000000}


@pytest.mark.parametrize("seed", range(8))
def test_namespaces_lab_answers_follow_the_kernel_rules(seed):
    from virtlab.labs.namespaces import LAB

    _, ctx = LAB.problem(seed)
    got = {a.name: a.value for a in LAB.answers(ctx)}
    flags = 0
    for kind in ctx["kinds"]:
        flags |= _SCHED_H[kind]
    assert got["flags"] == flags
    assert got["last_pid"] == ctx["children"] + 1
    assert got["host_uid"] == 0 + ctx["uid_base"] + ctx["inside_uid"]
    owner = ctx["host_owner"]
    inside = owner - ctx["uid_base"] if 0 <= owner - ctx["uid_base"] < 65536 else 65534
    assert got["seen_uid"] == inside
    assert got["sched_weight"] == round(ctx["weight_a"] * 10.24)
    n = ctx["threads"]                    # the host has 4 idle CPUs, n <= 4
    assert got["cpus_used"] == pytest.approx(min(ctx["quota_us"] / ctx["period_us"], n))
    assert got["wait_ms"] == pytest.approx(max(0, ctx["period_us"] - ctx["quota_us"] / n) / 1e3)
    formula = ctx["weight_a"] / (ctx["weight_a"] + ctx["weight_b"])
    assert abs(got["share_a"] - formula) <= 0.03 * formula, (ctx, got)


def test_namespaces_lab_generates_both_owner_cases_and_is_the_06_folder(capsys):
    from virtlab.labs.namespaces import LAB

    seen = {LAB.answers(LAB.problem(s)[1])[3].value == 65534 for s in range(12)}
    assert seen == {True, False}          # host files both unmapped and mapped back
    assert main(["lab", "06-namespaces", "-s", "4", "-c"]) == 0
    by_folder = capsys.readouterr().out
    assert main(["lab", "namespaces", "-s", "4", "-c"]) == 0
    assert capsys.readouterr().out == by_folder and "flags = " in by_folder
    _, ctx = LAB.problem(4)
    off_by_one = LAB.answers(ctx)[0].value + 1       # exact answers allow no tolerance
    assert main(["lab", "namespaces", "-s", "4", "--check", f"flags={off_by_one}"]) == 1
    assert "exactly this value expected" in capsys.readouterr().out


@pytest.mark.linux
@pytest.mark.parametrize("seed", [0, 1])
def test_namespaces_lab_flags_and_pids_on_this_kernel(seed):
    """The lab's flags create exactly its namespaces, and its PID rule holds, for real."""
    import os

    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("needs Linux and root (unshare of every namespace kind)")
    from virtlab.labs.namespaces import LAB
    from virtlab.linux import libc, procs

    _, ctx = LAB.problem(seed)
    answers = {a.name: a.value for a in LAB.answers(ctx)}
    files = {"mnt": "mnt", "uts": "uts", "ipc": "ipc", "net": "net", "user": "user",
             "cgroup": "cgroup", "pid": "pid_for_children"}

    def work():
        before = {k: os.readlink(f"/proc/self/ns/{f}") for k, f in files.items()}
        libc.unshare(int(answers["flags"]))
        read_fd, write_fd = os.pipe()
        go_read, go_write = os.pipe()
        init = os.fork()
        if init == 0:                                 # PID 1 of the new namespace
            os.read(go_read, 1)       # stays alive until the parent has looked at its links
            for _ in range(ctx["children"]):
                child = os.fork()
                if child == 0:
                    os.write(write_fd, f"{os.getpid()} ".encode())
                    os._exit(0)
                os.waitpid(child, 0)
            os.write(write_fd, f"init:{os.getpid()}".encode())
            os._exit(0)
        # pid_for_children reads as ENOENT until the new namespace has its init.
        after = {k: os.readlink(f"/proc/self/ns/{f}") for k, f in files.items()}
        os.write(go_write, b"x")
        os.close(write_fd)
        os.waitpid(init, 0)
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
        return {"new": sorted(k for k in files if before[k] != after[k]),
                "pids": b"".join(chunks).decode().split()}

    try:
        result = procs.run_forked(work, timeout_s=30)
    except (OSError, PermissionError) as err:
        pytest.skip(f"this kernel refused the namespaces: {err}")
    assert result["new"] == sorted(ctx["kinds"])
    pids = [int(p) for p in result["pids"][:-1]]
    assert result["pids"][-1] == "init:1"
    assert pids == list(range(2, ctx["children"] + 2))
    assert pids[-1] == answers["last_pid"]
