"""Can this machine run the real-system demos? If not, why, in plain words, and what to do.

Two sources of truth, used together:

* **Facts** read from ``/proc`` (who we are, capabilities, seccomp, the user-namespace sysctls,
  whether ``/proc`` has things mounted over it, ...). They explain a failure, but they cannot
  prove success: an AppArmor policy or a seccomp filter is only seen by trying.
* **A probe**: build a real (trivial) container in a forked child, once in root mode and once in
  rootless mode, exactly as the demo would. Nothing is changed in this process.

:func:`explain` turns an ``OSError`` from a container step into a sentence that names the cause
(not Linux, not root, user namespaces disabled, a seccomp filter, a masked ``/proc``, too many
threads, a namespace limit, ...) and the fix. ``virtlab doctor`` prints the whole :class:`Report`;
the demos call :func:`require_mode`, which raises :class:`~virtlab.errors.PreflightError` (exit
status 2) with that sentence.
"""

from __future__ import annotations

import errno
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field

from virtlab.errors import PreflightError
from virtlab.linux import libc as _c
from virtlab.linux import namespaces

__all__ = ["Check", "Facts", "Report", "check", "explain", "gather_facts", "require_linux",
           "require_mode", "require_root"]

CAP_SYS_ADMIN = 21
# Mounts over /proc that do not make it "too revealing" to mount: binfmt_misc sits on a
# permanently empty directory, which the kernel accepts.
_HARMLESS_PROC_MOUNTS = ("/proc/sys/fs/binfmt_misc",)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


@dataclass
class Facts:
    """What ``/proc`` says about this process and kernel; any field may be unknown (``None``)."""

    euid: int = -1
    cap_sys_admin: bool = False
    seccomp: int = 0
    threads: int = 1
    max_user_namespaces: int | None = None
    unprivileged_userns_clone: int | None = None
    apparmor_restrict_userns: int | None = None
    masked_proc: list[str] = field(default_factory=list)
    chrooted: bool = False
    container_hint: str | None = None
    missing_kinds: list[str] = field(default_factory=list)


def gather_facts() -> Facts:
    """Read the facts (Linux only; cheap; changes nothing)."""
    facts = Facts(euid=os.geteuid(), threads=threading.active_count())
    for line in (_read("/proc/self/status") or "").splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            facts.cap_sys_admin = bool(int(value, 16) >> CAP_SYS_ADMIN & 1)
        elif key == "Seccomp":
            facts.seccomp = int(value)
    for attr, path in (("max_user_namespaces", "/proc/sys/user/max_user_namespaces"),
                       ("unprivileged_userns_clone", "/proc/sys/kernel/unprivileged_userns_clone"),
                       ("apparmor_restrict_userns",
                        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns")):
        text = _read(path)
        setattr(facts, attr, int(text) if text and text.lstrip("-").isdigit() else None)
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        mountpoint = line.split()[4]
        if mountpoint.startswith("/proc/") and mountpoint not in _HARMLESS_PROC_MOUNTS:
            facts.masked_proc.append(mountpoint)
    try:
        facts.chrooted = os.stat("/") != os.stat("/proc/1/root")
    except OSError:
        facts.chrooted = False  # /proc/1/root unreadable (not root): cannot tell
    for hint in ("/.dockerenv", "/run/.containerenv"):
        if os.path.exists(hint):
            facts.container_hint = hint
    facts.missing_kinds = [kind.name for kind in namespaces.KINDS
                           if not os.path.exists(f"/proc/self/ns/{kind.name}")]
    return facts


def explain(exc: OSError, flags: int, stage: str = "unshare", facts: Facts | None = None) -> str:
    """Say in plain words why a container step failed, and what to do about it.

    Parameters
    ----------
    exc:
        The error (its ``errno`` decides the branch).
    flags:
        The ``CLONE_NEW*`` mask that was being used.
    stage:
        The container step that failed (``"unshare"``, ``"uid/gid maps"``, ``"mount /proc"``...).
    facts:
        From :func:`gather_facts` (read if not given).

    """
    facts = facts or gather_facts()
    err = exc.errno
    userns = bool(flags & _c.CLONE_NEWUSER)
    seccomp = ("a seccomp filter is active (Seccomp: 2 in /proc/self/status); inside Docker the "
               "default profile blocks namespace creation. Run the container with --privileged (or "
               "--cap-add SYS_ADMIN --security-opt seccomp=unconfined), or run on a Linux VM")
    if err == errno.EACCES and stage == "uid/gid maps":
        return ("writing /proc/self/uid_map was refused (EACCES): this process changed its uid "
                "with setuid() and is therefore not 'dumpable', so its own /proc files belong to "
                "root. Call prctl(PR_SET_DUMPABLE, 1) after dropping privileges, or drop them "
                "with a tool that execs (setpriv, su, sudo -u).")
    if err == errno.EPERM:
        if stage == "unshare" and not userns:
            if facts.euid != 0:
                return (f"you are not root (euid {facts.euid}), and creating namespaces needs "
                        "CAP_SYS_ADMIN. Use rootless mode (--mode rootless): it adds a user "
                        "namespace, inside which you have that capability; or run with sudo.")
            if facts.seccomp == 2:
                return f"you are root, but {seccomp}."
            if not facts.cap_sys_admin:
                return ("you are root but without CAP_SYS_ADMIN (containers usually drop it). "
                        "Run with that capability (docker run --cap-add SYS_ADMIN), or on a VM.")
        if stage == "unshare" and userns:
            if facts.unprivileged_userns_clone == 0:
                return ("user namespaces are disabled for ordinary users "
                        "(kernel.unprivileged_userns_clone = 0, a Debian/Ubuntu setting). Run as "
                        "root, or enable them: sudo sysctl -w kernel.unprivileged_userns_clone=1.")
            if facts.chrooted:
                return ("this process runs in a chroot, and the kernel refuses to create user "
                        "namespaces from inside one. Run outside the chroot, or as root.")
            if facts.seccomp == 2:
                return f"creating a user namespace was refused: {seccomp}."
            if facts.apparmor_restrict_userns == 1:
                return _APPARMOR
        if stage == "uid/gid maps":
            if facts.apparmor_restrict_userns == 1:
                return _APPARMOR
            return ("the kernel refused the uid/gid map: an ordinary user may map only their own "
                    "uid and gid, once, and must write 'deny' to /proc/self/setgroups before "
                    "gid_map. Mapping ranges needs newuidmap/newgidmap or root.")
        if stage == "mount /proc" and userns and facts.masked_proc:
            return ("the kernel refused a fresh /proc inside the user namespace ('mount too "
                    "revealing') because parts of this /proc are hidden under other mounts ("
                    + ", ".join(facts.masked_proc[:4]) + "), as Docker, Podman and Kubernetes do. "
                    "Use root mode, or run where /proc is fully visible (docker: "
                    "--security-opt systempaths=unconfined).")
        return (f"the '{stage}' step was refused (EPERM: {exc}). "
                + (f"Note: {seccomp}." if facts.seccomp == 2 else
                   "Try root mode (sudo), or see `virtlab doctor`."))
    if err == errno.ENOSPC:
        limits = []
        for kind in namespaces.KINDS:
            if flags & kind.flag:
                value = _read(f"/proc/sys/user/max_{kind.name}_namespaces")
                if value is not None:
                    limits.append(f"user.max_{kind.name}_namespaces = {value}")
        return ("a namespace limit is reached or set to 0 (" + ", ".join(limits) + "). "
                "Raise it, e.g. sudo sysctl -w user.max_user_namespaces=15000.")
    if err == errno.EINVAL:
        if userns and facts.threads > 1:
            return (f"CLONE_NEWUSER requires a single-threaded process (this one has "
                    f"{facts.threads} threads). Fork first and unshare in the child, as virtlab's "
                    "launcher does.")
        wanted = [kind.name for kind in namespaces.KINDS if flags & kind.flag]
        missing = [name for name in wanted if name in facts.missing_kinds]
        if missing:
            return (f"this kernel was built without {', '.join(missing)} namespaces "
                    "(CONFIG_*_NS). Use a kernel that has them, or leave those out.")
        return (f"the kernel rejected {_c.flag_names(flags)} (EINVAL): for example a second "
                "CLONE_NEWPID in the same process, or a flag this kernel does not know.")
    if err == errno.ENOSYS:
        return ("the kernel says it has no such system call (ENOSYS); a seccomp filter may be "
                "faking that. Run on a Linux host or VM with namespaces enabled.")
    return f"the '{stage}' step failed: {exc}."


_APPARMOR = ("an AppArmor policy restricts unprivileged user namespaces "
             "(kernel.apparmor_restrict_unprivileged_userns = 1, the default since Ubuntu 24.04). "
             "Run as root, or allow them: sudo sysctl -w "
             "kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile with "
             "'userns').")


def _not_linux() -> str:
    return (f"the real-system demos need Linux (namespaces and cgroups are Linux kernel "
            f"features); this is {platform.system() or sys.platform}. Run them in a Linux VM, "
            "or use the simulator (virtlab compare), which works everywhere.")


def require_linux() -> None:
    """Raise :class:`PreflightError` unless this is Linux."""
    if not sys.platform.startswith("linux"):
        raise PreflightError(_not_linux())


def require_root(what: str) -> None:
    """Raise :class:`PreflightError` unless running as root."""
    require_linux()
    if os.geteuid() != 0:
        raise PreflightError(f"{what} needs root (writing cgroup files and moving the other end "
                             f"of a veth pair need privilege on the host); you are euid "
                             f"{os.geteuid()}. Run it with sudo.")


def probe(rootless: bool, timeout_s: float = 5.0) -> tuple[bool, str, float]:
    """Build a trivial container in root or rootless mode.

    Returns
    -------
    tuple
        ``(works, explanation, start-up milliseconds)``.

    """
    from virtlab.linux.container import CONTAINER_FLAGS, ContainerSpec, run_container

    spec = ContainerSpec(rootless=rootless)
    start = time.perf_counter()
    try:
        pid = run_container(spec, lambda inside: os.getpid(), timeout_s=timeout_s)
    except OSError as exc:
        flags = CONTAINER_FLAGS | (_c.CLONE_NEWUSER if rootless else 0)
        return False, explain(exc, flags, getattr(exc, "stage", "unshare")), 0.0
    elapsed_ms = (time.perf_counter() - start) * 1e3
    if pid != 1:
        return False, f"the container's first process saw PID {pid}, not 1", elapsed_ms
    return True, "works", elapsed_ms


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report; ``ok`` is ``None`` for plain information."""

    label: str
    ok: bool | None
    detail: str


@dataclass
class Report:
    """Everything :func:`check` found."""

    checks: list[Check]
    root_mode: str | None = None  # None = works, else the reason it does not
    rootless_mode: str | None = None
    cgroups: str | None = None  # None = usable, else the reason

    def render(self) -> str:
        """Format the report as text, one check per line."""
        marks = {True: "ok  ", False: "FAIL", None: "info"}
        return "\n".join(f"  [{marks[c.ok]}] {c.label}: {c.detail}" for c in self.checks)


def check(run_probes: bool = True) -> Report:
    """Gather the facts, probe both modes, and look for a CPU cgroup controller."""
    if not sys.platform.startswith("linux"):
        reason = _not_linux()
        return Report([Check("platform", False, reason)], reason, reason, reason)
    from virtlab.linux import cgroups

    facts = gather_facts()
    checks = [
        Check("platform", True, f"Linux {platform.release()} {platform.machine()}, "
              f"Python {platform.python_version()}"),
        # Not root is information (rootless mode may work); root without CAP_SYS_ADMIN fails.
        Check("privilege", (facts.cap_sys_admin if facts.euid == 0 else None),
              f"euid {facts.euid}, CAP_SYS_ADMIN {'yes' if facts.cap_sys_admin else 'no'}"),
        Check("seccomp", facts.seccomp != 2 or None,
              "no filter" if facts.seccomp != 2 else "a filter is active (may block unshare)"),
        Check("user namespaces", facts.max_user_namespaces != 0 and
              facts.unprivileged_userns_clone != 0 and facts.apparmor_restrict_userns != 1,
              f"max_user_namespaces={facts.max_user_namespaces}, unprivileged_userns_clone="
              f"{_unknown(facts.unprivileged_userns_clone)}, apparmor_restrict_unprivileged_userns="
              f"{_unknown(facts.apparmor_restrict_userns)}"),
        Check("/proc fully visible", not facts.masked_proc,
              "nothing mounted over it" if not facts.masked_proc else
              "masked: " + ", ".join(facts.masked_proc[:4]) + " (rootless /proc will fail)"),
        Check("Python namespace API", None,
              "os.unshare/os.setns present; shown beside the ctypes calls"
              if namespaces.os_api_available() else
              f"os.unshare/os.setns absent in Python {platform.python_version()} (new in 3.12); "
              "ctypes calls libc directly"),
    ]
    if facts.container_hint:
        checks.append(Check("inside a container", None, f"{facts.container_hint} exists"))
    report = Report(checks)
    if run_probes:
        for rootless in (False, True):
            works, why, elapsed_ms = probe(rootless)
            label = "rootless container" if rootless else "root container"
            detail = f"started and stopped in {elapsed_ms:.1f} ms" if works else why
            checks.append(Check(label, works, detail))
            if rootless:
                report.rootless_mode = None if works else why
            else:
                report.root_mode = None if works else why
    try:
        layout = cgroups.detect()
        if facts.euid != 0:
            raise PreflightError(f"found {layout.describe()}, but writing to it needs root")
        checks.append(Check("cpu cgroups", True, layout.describe()))
    except PreflightError as exc:
        report.cgroups = str(exc)
        checks.append(Check("cpu cgroups", False, str(exc)))
    return report


def _unknown(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def require_mode(requested: str = "auto") -> str:
    """Choose ``"root"`` or ``"rootless"`` after a probe, or raise :class:`PreflightError`.

    Parameters
    ----------
    requested:
        ``"auto"`` (root mode when euid is 0, otherwise rootless), ``"root"`` or ``"rootless"``.

    """
    require_linux()
    if requested == "auto":
        requested = "root" if os.geteuid() == 0 else "rootless"
    works, why, _ = probe(rootless=requested == "rootless")
    if works:
        return requested
    if requested == "root" and os.geteuid() != 0:
        other_works, _, _ = probe(rootless=True)
        if other_works:
            why += " (rootless mode works here: use --mode rootless)"
    raise PreflightError(f"cannot build a container in {requested} mode: {why}")
