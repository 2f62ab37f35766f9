"""The real-system sub-commands: ``virtlab demo namespaces|cgroups``, ``doctor``, ``calibrate``.

:func:`add_commands` registers them on the main parser's sub-parsers; each leaf sets
``func(args) -> int``. Nothing Linux-specific is imported until a command runs, so ``virtlab
--help`` works on any OS. A machine that cannot run a command raises
:class:`~virtlab.errors.PreflightError`, which the CLI prints as one line with exit status 2.
Ctrl-C (or ``SIGTERM``, ``SIGHUP``) stops a command cleanly: the first signal starts the cleanup,
later ones are ignored until it is done; then the command checks that nothing it created is left,
says so (or says what is left), and exits with 128 + the signal number (130, 143, 129). Each of
these commands first removes cgroups left by earlier runs that were killed, and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import signal
import socket
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_commands", "main"]

_RAW = argparse.RawDescriptionHelpFormatter  # keep the epilogs' layout; descriptions via _wrap


def _wrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), 79)


_MODE_HELP = ("root: create namespaces directly (needs root); rootless: add a user namespace "
              "(works as an ordinary user where the kernel allows it); auto (default): root "
              "mode if you are root, else rootless")

_DEMO_TEXT = """\
Real-system demos: the kernel mechanisms the simulator's container path models, built for
real with ctypes calls into libc (Linux only).
"""
_NAMESPACES_TEXT = """\
Build a tiny container (UTS, PID, mount, network and IPC namespaces; plus a user namespace
in rootless mode) and compare what it sees with the host: hostname, PID 1 and its own /proc,
a network with only lo (down, then up), isolated SysV IPC, and the namespace identities
under /proc/self/ns.
"""
_CGROUPS_TEXT = """\
Run three CPU-bound containers in CPU cgroups: a and b share one CPU with weights 3:1
(expect about 75/25), q has a quota of 20 ms per 100 ms (expect about 20 percent, throttled
every period). Prints the CPU time each really got. Needs root and a cpu controller (cgroup
v1 or v2). With --cases: the scheduling cases, measured here and simulated, side by side.
"""
_DOCTOR_TEXT = """\
Check this machine for everything the real-system demos need, try to build a container in
root and rootless mode, and say in plain words what works, what does not, why, and what to
do.
"""
_CALIBRATE_TEXT = """\
Measure on this machine what the simulator's container path assumes: namespace creation per
kind, container start-up, syscall cost on the host and inside namespaces, TCP over lo in a
network namespace vs the host, and (as root) a veth hop vs lo. Host and container runs are
interleaved; medians are printed with their interquartile range. Writes a profile for
`virtlab compare --profile FILE`.
"""


def _positive(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


def _weights(text: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B, e.g. 300:100, got {text!r}") from None
    if not (1 <= first <= 10000 and 1 <= second <= 10000):
        raise argparse.ArgumentTypeError("weights must be in [1, 10000] (100 is the default)")
    return first, second


def _quota(text: str) -> tuple[float, float]:
    try:
        quota, period = (float(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected QUOTA/PERIOD in ms, got {text!r}") from None
    if not (1 <= period <= 1000 and 0.1 <= quota <= period):
        raise argparse.ArgumentTypeError("period must be 1..1000 ms and quota 0.1 ms..period")
    return quota, period


def _say(text: str) -> None:
    print(f"virtlab: {text}", file=sys.stderr, flush=True)


def _remove_stale_groups() -> None:
    """Remove cgroups left by earlier runs that were killed (SIGKILL); say what was removed."""
    from virtlab.errors import PreflightError
    from virtlab.linux import cgroups

    try:
        layout = cgroups.detect()
        stale = cgroups.stale_groups(layout)
    except (PreflightError, OSError):
        return  # no usable cpu controller (or no access to it): no group of ours can be there
    for path in stale:
        problems = cgroups.remove_tree(path)
        if problems:
            _say(f"found a cgroup left by a run that was killed, and could not remove it: "
                 f"{'; '.join(problems)} (run `virtlab doctor` as root to remove it)")
        else:
            _say(f"removed {path}, a cgroup left by an earlier run that was killed")


def _real(body: Callable[[], int]) -> int:
    """Run a real-Linux command with orderly signal handling and a checked cleanup.

    First, leftovers of killed runs are removed. Then the first ``SIGINT``/``SIGTERM``/``SIGHUP``
    stops the command; further ones are ignored until it has cleaned up, checked that nothing
    it created is left, said so and exited with 128 + the signal number. A signal that comes
    after the work is done interrupts nothing: it is ignored, and the command ends normally.
    """
    from virtlab.linux import cleanup, procs

    cleanup.reset()
    status = 0
    with procs.signals_as_interrupts(keep_ignoring=True) as stop:
        try:
            try:
                _remove_stale_groups()
                status = body()
            finally:
                stop.disarm()  # whatever happens now, the checks below run to the end
        except KeyboardInterrupt:
            if stop.signum is None:  # raised by something other than our handler
                stop.signum = signal.SIGINT
        finally:  # also after an error (which then reaches the user as one line)
            outcome = cleanup.finish()
    if stop.signum is None:
        if outcome.removed:
            _say("internal error: the run left these behind and they were removed at the "
                 "end: " + "; ".join(outcome.removed) + ". Please report it.")
        return status
    more = f" ({stop.ignored} more stop signals ignored while cleaning up)" if stop.ignored else ""
    _say(f"interrupted by {stop.name}{more}.")
    if outcome.left:
        _say("NOT cleaned up, still there after the checks: " + "; ".join(outcome.left))
    else:
        removed = f" (removed after the interruption: {'; '.join(outcome.removed)})" \
            if outcome.removed else ""
        _say("checked after cleaning up: no process, cgroup or network interface this run "
             "created is left; its namespaces and mounts went with its processes" + removed + ".")
    return stop.exit_status


HOST_NAME_MAX = 64  # bytes; sethostname(2) refuses longer names with EINVAL


def _check_hostname(hostname: str) -> None:
    from virtlab.errors import ConfigError

    size = len(hostname.encode("utf-8", errors="surrogateescape"))
    if not 1 <= size <= HOST_NAME_MAX or "\0" in hostname:
        shown = hostname if len(hostname) <= 20 else hostname[:20] + "..."
        raise ConfigError("--hostname", f"{shown!r} is {size} bytes long; a hostname has 1 to "
                                        f"{HOST_NAME_MAX} bytes and no NUL character")


def _demo_namespaces(args: argparse.Namespace) -> int:
    from virtlab.linux import demo_namespaces, preflight

    _check_hostname(args.hostname)  # before anything is created

    def body() -> int:
        mode = preflight.require_mode(args.mode)
        demo_namespaces.run_demo(mode=mode, hostname=args.hostname, timeout_s=args.timeout)
        return 0

    return _real(body)


CGROUP_DEFAULTS = {"seconds": 3.0, "weights": (300, 100), "quota": (20.0, 100.0)}
CASE_SECONDS = 2.0


def cgroup_settings(args: argparse.Namespace) -> tuple[float, tuple[int, int], tuple[float, float]]:
    """The classic cgroups demo's window, weights and quota: given, else the defaults.

    The options default to ``None`` so that ``--cases`` can tell a given ``--weights`` or
    ``--quota`` (which it refuses) from an absent one.
    """
    return (args.seconds or CGROUP_DEFAULTS["seconds"], args.weights or CGROUP_DEFAULTS["weights"],
            args.quota or CGROUP_DEFAULTS["quota"])


def _demo_cgroups(args: argparse.Namespace) -> int:
    from virtlab.linux import cgroups, demo_cgroups, preflight

    if args.cases or args.case:
        from virtlab.errors import ConfigError

        for flag, value in (("--weights", args.weights), ("--quota", args.quota)):
            if value is not None:
                raise ConfigError(flag, "sets the default demo's containers; the --cases have "
                                        "their own settings (see --help), so leave it out")
    preflight.require_root("the cgroups demo")

    def body() -> int:
        cgroups.detect()  # raises PreflightError with the reason if there is no cpu controller
        preflight.require_mode("root")
        if args.cases or args.case:
            from virtlab.linux import demo_cases

            results = demo_cases.run_cases(args.case or None,
                                           seconds=args.seconds or CASE_SECONDS)
            return 1 if any(r.measured and r.measured.leftovers for r in results) else 0
        seconds, weights, (quota_ms, period_ms) = cgroup_settings(args)
        result = demo_cgroups.run_demo(seconds=seconds, weights=weights, quota_ms=quota_ms,
                                       period_ms=period_ms)
        return 1 if result.leftovers else 0

    return _real(body)


def _doctor(args: argparse.Namespace) -> int:
    return _real(_doctor_report)


def _doctor_report() -> int:
    from virtlab.errors import PreflightError
    from virtlab.linux import preflight

    print("virtlab doctor: can this machine run the real-system demos?\n")
    report = preflight.check()
    print(report.render())
    print("\nVerdict:")
    modes = [name for name, why in (("root", report.root_mode), ("rootless", report.rootless_mode))
             if why is None]
    if modes:
        print(f"  virtlab demo namespaces: runs ({' and '.join(modes)} mode)")
        veth = "with" if "root" in modes else "without"
        print(f"  virtlab calibrate:       runs ({veth} the veth measurement)")
    cgroups_ok = report.cgroups is None and "root" in modes
    why_not = report.cgroups or "needs root mode"
    print("  virtlab demo cgroups:    " + ("runs" if cgroups_ok else f"cannot run: {why_not}"))
    if not modes:
        raise PreflightError(f"no container can be built here: {report.root_mode}"
                             + ("" if report.rootless_mode == report.root_mode else
                                f" Rootless mode: {report.rootless_mode}"))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from virtlab.linux import calibrate, preflight, profile

    def body() -> int:
        # The output is checked, and its temporary file created, before anything is measured.
        with profile.ProfileOutput(args.output) as output:
            mode = preflight.require_mode(args.mode)
            plan = calibrate.Plan.quick(veth=not args.no_veth) if args.quick else \
                calibrate.Plan(veth=not args.no_veth)
            if args.rounds:
                plan = dataclasses.replace(plan, rounds=args.rounds)
            calib = calibrate.run_calibration(plan, mode)
            host = socket.gethostname()
            when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            output.commit(profile.render_profile(calib, host, when))
        _report_profile(args.output, calibrate.profile_values(calib))
        return 0

    return _real(body)


def _report_profile(path: Path, values: dict[str, float]) -> None:
    print(f"\nWrote {path}:")
    print(f"  [host]      syscall_us       = {values['syscall_us']:.4f}")
    print(f"  [container] syscall_extra_us = {values['syscall_extra_us']:.4f}"
          + ("  (measured < 0: clamped)" if values["syscall_extra_us_raw"] < 0 else ""))
    if "veth_hop_us" in values:
        print(f"  [container] veth_hop_us      = {values['veth_hop_us']:.4f}"
              + ("  (measured < 0: clamped)" if values["veth_hop_us_raw"] < 0 else ""))
    else:
        print("  [container] veth_hop_us      (not measured; the base profile's value applies)")
    print(f"Use it with: virtlab compare --profile {path}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``demo`` (``namespaces``, ``cgroups``), ``doctor`` and ``calibrate``.

    Parameters
    ----------
    subparsers:
        The main ``virtlab`` parser's sub-parsers; each leaf gets ``func(args) -> int``.

    """
    from virtlab.linux.cases import case_names  # plain data: imports on any OS

    demo = subparsers.add_parser(
        "demo", formatter_class=_RAW, help="build real containers on this Linux machine",
        description=_wrap(_DEMO_TEXT),
        epilog="Run `virtlab doctor` first if you are unsure whether this machine can run "
               "them.\nSee docs/namespaces.md and labs/06-namespaces/.")
    demos = demo.add_subparsers(dest="demo", metavar="DEMO", required=True)

    ns = demos.add_parser(
        "namespaces", formatter_class=_RAW,
        help="a tiny container, host and container side by side",
        description=_wrap(_NAMESPACES_TEXT),
        epilog="How it works:\n"
               "  your shell -> fork: launcher, calls unshare(CLONE_NEW...)\n"
               "             -> fork: PID 1 of the new PID namespace: sethostname, private\n"
               "                mounts, mount /proc, bring lo up, look around, report\n"
               "Your own process never changes namespace; when PID 1 exits the kernel frees\n"
               "every namespace it had. Try: virtlab demo namespaces --mode rootless")
    ns.add_argument("--mode", choices=("auto", "root", "rootless"), default="auto",
                    help=_MODE_HELP)
    ns.add_argument("--hostname", default="tiny-ctr",
                    help="the container's hostname (1 to 64 bytes)")
    ns.add_argument("--timeout", type=_positive(1, 300), default=15.0, metavar="SECONDS",
                    help="give up (and clean up) if a step takes longer (default 15)")
    ns.set_defaults(func=_demo_namespaces)

    cg = demos.add_parser(
        "cgroups", formatter_class=_RAW, help="CPU weights and a CPU quota, measured",
        description=_wrap(_CGROUPS_TEXT),
        epilog="Weights share contention (b alone would get the whole CPU); a quota caps even\n"
               "an idle machine. Groups are named virtlab-<pid>-<random> and always removed.")
    cg.add_argument("--seconds", type=_positive(0.5, 60), default=None,
                    help="measurement window in seconds (default 3; 2 per case with --cases)")
    cg.add_argument("--weights", type=_weights, default=None, metavar="A:B",
                    help="cpu.weight of a and b, v2 units (default 300:100; v1 shares = w*10.24)")
    cg.add_argument("--quota", type=_quota, default=None, metavar="QUOTA/PERIOD",
                    help="q's CPU time per period in ms (default 20/100)")
    cg.add_argument("--cases", action="store_true",
                    help="instead, run the scheduling cases (weights 1:2:5, quotas, a sleeper, "
                         "2:1 on one and two CPUs, 1.5 CPUs) on this kernel and in the "
                         "simulator, side by side (about 3 s each)")
    cg.add_argument("--case", action="append", choices=case_names(), metavar="NAME",
                    help="run only this case (repeatable): " + ", ".join(case_names()))
    cg.set_defaults(func=_demo_cgroups)

    doctor = subparsers.add_parser(
        "doctor", formatter_class=_RAW, help="check whether the real-system demos can run here",
        description=_wrap(_DOCTOR_TEXT),
        epilog="Exit status 0 if a container can be built (in some mode), 2 if not.")
    doctor.set_defaults(func=_doctor)

    cal = subparsers.add_parser(
        "calibrate", formatter_class=_RAW, help="measure container costs; write a profile",
        description=_wrap(_CALIBRATE_TEXT),
        epilog="Profile keys written:\n"
               "  [host] syscall_us             median null-syscall cost\n"
               "  [container] syscall_extra_us  container minus host (>= 0)\n"
               "  [container] veth_hop_us       half the extra round trip over veth (root only)\n"
               "  [measurements]                every median, for the record\n"
               "The defaults take about 10-20 s; --quick about 4 s.")
    cal.add_argument("-o", "--output", type=Path, default=Path("calibrated-profile.toml"),
                     help="profile to write (default: calibrated-profile.toml)")
    cal.add_argument("--quick", action="store_true", help="fewer rounds and smaller transfers")
    cal.add_argument("--rounds", type=int, choices=range(2, 51), metavar="N",
                     help="interleaved rounds for the steady-state and veth experiments")
    cal.add_argument("--no-veth", action="store_true", help="skip the veth measurement")
    cal.add_argument("--mode", choices=("auto", "root", "rootless"), default="auto",
                     help=_MODE_HELP)
    cal.set_defaults(func=_calibrate)


def main(argv: list[str] | None = None) -> int:
    """Run these sub-commands without the rest of the CLI: ``python -m virtlab.linux.commands``.

    Mirrors the contract of ``virtlab.cli.main``: a :class:`~virtlab.errors.PreflightError` or
    :class:`~virtlab.errors.ConfigError` becomes one line on stderr and exit status 2.
    """
    from virtlab.errors import ConfigError, PreflightError

    parser = argparse.ArgumentParser(prog="virtlab", description="virtlab real-system commands")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except (PreflightError, ConfigError) as exc:
        print(f"virtlab: error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
