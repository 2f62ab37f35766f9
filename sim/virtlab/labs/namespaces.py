"""Lab ``namespaces`` (lab 06's generated form): the kernel's rules for namespaces and cgroups.

Lab 06 itself builds a real container; its outputs (PIDs, inode numbers, measured shares)
differ from machine to machine, so they cannot be a generated problem's answers. What can is
everything the kernel computes by fixed rules from the numbers a container's launcher chooses,
and that the real demo then shows:

* ``flags``: the ``unshare(2)`` argument for a set of namespaces, the OR of the ``CLONE_NEW*``
  bits of ``<linux/sched.h>`` (``virtlab.linux.libc``, the constants the demo passes);
* ``last_pid``: PIDs in a new PID namespace are allocated from 1 upwards (``alloc_pid``), so
  the k-th child that the container's init forks is PID k + 1 inside;
* ``host_uid`` / ``seen_uid``: a user namespace's ``uid_map`` line ``inside outside count``
  maps uid u to outside + (u - inside); a host uid outside every range shows up inside as the
  overflow uid, 65534 (``from_kuid_munged``; ``/proc/sys/kernel/overflowuid``);
* ``sched_weight``: a cgroup v2 ``cpu.weight`` w becomes the scheduler weight
  round(w * 1024 / 100) (``sched_weight_from_cgroup``; cgroup v1 writes it as ``cpu.shares``);
* ``cpus_used`` / ``wait_ms``: ``cpu.max`` "Q P" lets a group run Q µs per P µs period in all,
  so n busy threads on n free CPUs use min(Q/P, n) CPUs and, when Q/n < P, each waits P - Q/n
  for the next period;
* ``share_a``: the share of one CPU that weights A:B give two busy groups, computed by the
  model (virtlab's CFS over 0.5 s, as ``labs/06-namespaces/check.py`` runs it).

Every answer but ``share_a`` is exact arithmetic on the problem's numbers; ``share_a`` is a
simulation within 3 %.
"""

from __future__ import annotations

import textwrap

import numpy as np

from virtlab import run
from virtlab.config import scenario_from_dict
from virtlab.labs import Answer, Lab, register
from virtlab.linux import libc

#: Namespace kinds a launcher can ask for, with their unshare(2) flags (<linux/sched.h>).
KINDS: dict[str, int] = {"mnt": libc.CLONE_NEWNS, "uts": libc.CLONE_NEWUTS,
                         "ipc": libc.CLONE_NEWIPC, "net": libc.CLONE_NEWNET,
                         "user": libc.CLONE_NEWUSER, "cgroup": libc.CLONE_NEWCGROUP,
                         "pid": libc.CLONE_NEWPID}
OVERFLOW_UID = 65534          # the kernel's default overflowuid
UID_BASES = (100_000, 165_536, 231_072, 296_608)
UID_COUNT = 65_536
HOST_CORES = 4


def _problem(seed: int) -> tuple[str, dict]:
    rng = np.random.default_rng(seed)
    others = [k for k in KINDS if k != "pid"]
    chosen = sorted(rng.choice(others, size=int(rng.integers(2, len(others) + 1)),
                               replace=False).tolist())
    ctx = {
        "kinds": ["pid", *chosen],
        "children": int(rng.integers(2, 10)),
        "uid_base": int(rng.choice(UID_BASES)),
        "inside_uid": int(rng.choice([0, 33, 1000, 1001])),
        "host_owner": int(rng.choice([0, 1000, 1, 1001])),
        "weight_a": int(rng.choice([50, 100, 200, 300, 900])),
        "weight_b": int(rng.choice([100, 200, 300])),
        "quota_us": int(rng.choice([20_000, 50_000, 150_000, 250_000])),
        "period_us": 100_000,
        "threads": int(rng.integers(1, HOST_CORES + 1)),
    }
    if ctx["host_owner"] in (1, 1001):   # a file the rootless container itself created
        ctx["host_owner"] = ctx["uid_base"] + ctx["host_owner"] - 1
    names = " | ".join(f"CLONE_NEW{'NS' if k == 'mnt' else k.upper()}" for k in ctx["kinds"])
    names = textwrap.fill(names, 88, initial_indent="  ", subsequent_indent="  ")
    text = (
        "A launcher builds a container with unshare(2), asking for these namespaces:\n"
        f"  {', '.join(ctx['kinds'])}, that is\n{names}\n"
        "The container's first process becomes PID 1 and forks "
        f"{ctx['children']} children, one after another.\n\n"
        "A second, rootless container runs in a user namespace whose /proc/PID/uid_map is\n"
        f"  0 {ctx['uid_base']} {UID_COUNT}\n"
        f"A process in it runs as uid {ctx['inside_uid']}. A file on the host is owned by uid "
        f"{ctx['host_owner']}.\n\n"
        "Two CPU-bound containers a and b share one CPU with cpu.weight "
        f"a = {ctx['weight_a']}, b = {ctx['weight_b']}.\n"
        f"A third, q, has cpu.max \"{ctx['quota_us']} {ctx['period_us']}\" and runs "
        f"{ctx['threads']} busy thread(s)\non a host with {HOST_CORES} otherwise idle CPUs.\n\n"
        "Questions:\n"
        "  flags        = the unshare(2) argument, as a decimal integer\n"
        "  last_pid     = the PID the last child sees for itself (getpid() inside)\n"
        f"  host_uid     = the host uid of the process running as uid {ctx['inside_uid']} inside\n"
        "  seen_uid     = the owner uid that `ls -ln` inside the rootless container shows\n"
        "                 for the host file\n"
        "  sched_weight = the scheduler weight of a (cpu.shares on cgroup v1)\n"
        "  share_a      = a's share of the CPU (0..1)\n"
        "  cpus_used    = the CPUs q uses on average\n"
        "  wait_ms      = how long each of q's threads waits for the next period, per\n"
        "                 period (0 if it never does)\n")
    return text, ctx


def shares(weight_a: int, weight_b: int) -> float:
    """Share of one CPU that virtlab's CFS gives *a* against *b* (both busy), over 0.5 s."""
    busy = [{"kind": "cpu", "name": "busy"}]
    data = {"name": "lab06", "duration_us": 600_000.0, "warmup_us": 100_000.0,
            "host": {"cores": 1}, "scheduler": {"host": "cfs", "cgroup": "v2"},
            "guests": [{"name": name, "approach": "container", "sched": {"weight": weight},
                        "workloads": busy}
                       for name, weight in (("a", weight_a), ("b", weight_b))]}
    a, b = run(scenario_from_dict(data), 0).summaries
    return a.guest_cpu_pct / (a.guest_cpu_pct + b.guest_cpu_pct)


def _answers(ctx: dict) -> list[Answer]:
    flags = 0
    for kind in ctx["kinds"]:
        flags |= KINDS[kind]
    host_uid = ctx["uid_base"] + ctx["inside_uid"]
    seen = ctx["host_owner"]
    mapped = ctx["uid_base"] <= seen < ctx["uid_base"] + UID_COUNT
    seen_uid = seen - ctx["uid_base"] if mapped else OVERFLOW_UID
    quota, period, threads = ctx["quota_us"], ctx["period_us"], ctx["threads"]
    running = min(threads, HOST_CORES)
    cpus_used = min(quota / period, running)
    wait_ms = max(0.0, period - quota / running) / 1000.0
    return [
        Answer("flags", flags, "", f"0x{flags:08x}, the OR of the CLONE_NEW* bits",
               tolerance=0.0),
        Answer("last_pid", ctx["children"] + 1, "", "init is 1; children get 2, 3, ... in "
               "order", tolerance=0.0),
        Answer("host_uid", host_uid, "", f"{ctx['uid_base']} + ({ctx['inside_uid']} - 0)",
               tolerance=0.0),
        Answer("seen_uid", seen_uid, "", "mapped back" if mapped else
               f"uid {seen} is outside {ctx['uid_base']}..{ctx['uid_base'] + UID_COUNT - 1}: "
               "the overflow uid", tolerance=0.0),
        Answer("sched_weight", round(ctx["weight_a"] * 1024 / 100), "",
               f"round({ctx['weight_a']} * 1024 / 100)", tolerance=0.0),
        Answer("share_a", shares(ctx["weight_a"], ctx["weight_b"]), "",
               f"virtlab's CFS over 0.5 s (formula {ctx['weight_a']}/"
               f"({ctx['weight_a']}+{ctx['weight_b']}))", tolerance=0.03),
        Answer("cpus_used", cpus_used, "CPUs", f"min({quota}/{period}, {running} threads)"),
        Answer("wait_ms", wait_ms, "ms", f"max(0, {period} - {quota}/{running}) µs"),
    ]


LAB = register(Lab("namespaces", "the kernel's rules for namespaces and cgroups (lab 06)",
                   _problem, _answers, tolerance=0.02))
