"""``virtlab demo namespaces``: build a tiny container for real and compare it with the host.

The container gets new UTS, PID, mount, network and IPC namespaces (plus a user namespace in
rootless mode). Its PID 1 looks around and reports back; the host looks at the same things; the
demo prints both side by side. Along the way a helper process *joins* the container's UTS
namespace with ``setns`` (what ``nsenter`` and ``docker exec`` do) and comes back.

Everything happens in forked children (see :mod:`virtlab.linux.container`); this process's own
namespaces never change, and when the demo ends, fails, times out or is interrupted, killing
PID 1 frees every namespace it made.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from virtlab.linux import libc as _c
from virtlab.linux import namespaces, netdev, procs
from virtlab.linux.container import Container, ContainerSpec, Inside
from virtlab.linux.text import Teller, table

__all__ = ["SHM_KEY", "host_view", "run_demo"]

SHM_KEY = 0x76690000  # "vi" + 0000: a SysV key made up for the demo


def _proc_pids() -> list[int]:
    return sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())


def _shm_keys() -> list[int]:
    """SysV shared-memory keys visible in the reader's IPC namespace."""
    with open("/proc/sysvipc/shm", encoding="ascii") as handle:
        return [int(line.split()[0]) for line in handle.readlines()[1:] if line.strip()]


def _tcp_echo() -> str:
    """Try a TCP round trip over 127.0.0.1 in the current network namespace."""
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=1.0) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"ping")
                    conn.sendall(conn.recv(4))
                    reply = client.recv(4)
        return f"works (sent b'ping', got {reply!r})"
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "?")
        return f"fails: {exc.strerror} ({name})"


def host_view() -> dict[str, Any]:
    """Look around from the host (this process): the left column of the comparison."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        mountinfo = handle.read()
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "ppid": os.getppid(),
            "proc_pids": _proc_pids(), "links": [str(link) for link in netdev.links()],
            "shm_keys": _shm_keys(), "ns": namespaces.identities(), "uid": os.getuid(),
            "tcp": _tcp_echo(), "mountinfo": mountinfo}


def _payload(inside: Inside) -> dict[str, Any]:
    """Run as PID 1 of the container: look around, change things, report."""
    seen: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid(),
                            "ppid": os.getppid(), "uid": os.getuid()}
    # A second process, so that /proc shows more than PID 1 (and only the container's PIDs).
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(write_fd)

        def sleep_until_closed() -> int:
            os.read(read_fd, 1)  # returns when PID 1 closes the other end
            return 0

        procs.child_main(sleep_until_closed, name="virtlab-sleeper")
    os.close(read_fd)
    seen["proc_pids"] = _proc_pids()
    with open("/proc/1/cmdline", "rb") as handle:
        seen["pid1_cmdline"] = " ".join(handle.read().decode(errors="replace").split())[:50]
    os.close(write_fd)
    os.waitpid(child, 0)  # PID 1 must reap its children: nobody else will

    seen["links_before"] = [str(link) for link in netdev.links()]
    seen["tcp_before"] = _tcp_echo()
    netdev.set_link_up("lo")
    seen["links_after"] = [str(link) for link in netdev.links()]
    seen["tcp_after"] = _tcp_echo()
    seen["sys_class_net"] = sorted(os.listdir("/sys/class/net"))

    seen["shm_keys_before"] = _shm_keys()
    shmid = _c.shmget(SHM_KEY, 4096, _c.IPC_CREAT | 0o600)
    seen["shm_keys_after"] = _shm_keys()
    inside.send("ipc", key=SHM_KEY)
    inside.recv(timeout_s=10.0)  # the host looks for the key and peeks in with setns meanwhile
    _c.shmctl(shmid, _c.IPC_RMID)  # would vanish with the IPC namespace anyway

    seen["ns"] = namespaces.identities()
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        seen["proc_mounts"] = sum(1 for line in mountinfo if " - proc " in line)
    _c.umount2("/proc", _c.MNT_DETACH)  # tidy; the mount namespace would free it anyway
    return seen


def _peek_uts(pid1: int, rootless: bool) -> dict[str, str]:
    """In a forked helper, join the container's UTS namespace, read the hostname, come back."""

    def work() -> dict[str, str]:
        found = {}
        if rootless:
            # Rootless: the UTS namespace belongs to the container's user namespace, so join that
            # first. There is no way back into the parent user namespace afterwards.
            for kind in ("user", "uts"):
                fd = os.open(f"/proc/{pid1}/ns/{kind}", os.O_RDONLY)
                try:
                    namespaces.setns(fd, namespaces.flags_for([kind]))
                finally:
                    os.close(fd)
            found["inside"] = socket.gethostname()
        else:
            with namespaces.entered(f"/proc/{pid1}/ns/uts", "uts"):
                found["inside"] = socket.gethostname()
            found["back"] = socket.gethostname()
        return found

    result: dict[str, str] = procs.run_forked(work, timeout_s=5.0, name="virtlab-nsenter")
    return result


def _api_lines(flags: int) -> list[str]:
    ctypes_line = f"libc.unshare({flags:#x})   # {_c.flag_names(flags)}"
    if namespaces.os_api_available():
        names = " | ".join(f"os.{name}" for name in _c.flag_names(flags).split("|"))
        return [ctypes_line, f"os.unshare({names})   # the same call, Python >= 3.12 (used here)"]
    return [ctypes_line, "# os.unshare(...) does the same from Python 3.12 on; this Python has "
            "no os.unshare, so ctypes it is"]


def run_demo(mode: str = "root", hostname: str = "tiny-ctr", timeout_s: float = 15.0,
             out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo and print it; return both views for tests.

    Parameters
    ----------
    mode:
        ``"root"`` or ``"rootless"`` (choose with :func:`virtlab.linux.preflight.require_mode`).
    hostname:
        The container's hostname.
    timeout_s:
        Deadline for each step; the container is killed when it passes.
    out:
        Where the text goes.

    """
    tell = Teller(out)
    rootless = mode == "rootless"
    spec = ContainerSpec(hostname=hostname, rootless=rootless, loopback_up=False)
    tell.title("virtlab demo namespaces: a tiny container from ctypes calls into libc",
               f"Mode: {mode}. " + (
                   "An ordinary user cannot create namespaces, but may create a user namespace, "
                   "inside which they are root with full capabilities over the namespaces it owns."
                   if rootless else "As root we may create every kind of namespace directly."))
    host = host_view()

    tell.step("Fork a launcher process.",
              "unshare() moves the *calling* process into new namespaces. The process running "
              "this demo (your shell, a notebook, pytest) must stay where it is, so a forked "
              "child does the work. A fresh child also has a single thread, which "
              "CLONE_NEWUSER requires.")
    tell.step(f"The launcher calls unshare({_c.flag_names(spec.unshare_flags)}).",
              "Each flag gives it a private copy of one kernel resource: " + "; ".join(
                  f"{kind.name}: {kind.isolates}" for kind in namespaces.KINDS
                  if spec.unshare_flags & kind.flag) + ".")
    tell.code(*_api_lines(spec.unshare_flags))
    if rootless:
        tell.para("   Then it maps root inside to your uid outside: uid_map '0 UID 1', "
                  "'deny' to setgroups (required before gid_map), gid_map '0 GID 1'.")
    tell.step("The launcher forks again; the child is PID 1 of the new PID namespace.",
              "CLONE_NEWPID does not move the caller, only its next child. PID 1 then sets the "
              "hostname, makes every mount private (so nothing it mounts propagates back to the "
              "host) and mounts a fresh /proc that lists only the container's processes.")
    with procs.signals_as_interrupts(), Container(spec, _payload, timeout_s=timeout_s) as ctr:
        launched = ctr.wait_for("launched")
        tell.show("launcher call made", launched["call"])
        tell.show("the launcher's own pid namespace", f"{launched['pid_ns']} (unchanged)")
        tell.show("its pid_for_children", f"{launched['pid_for_children']} (the new one)")
        tell.show("PID 1 in the host's numbering", ctr.pid1)
        ready = ctr.wait_for("ready")
        tell.code(*ready["steps"])
        ctr.wait_for("ipc")
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            mount_leaked = handle.read() != host["mountinfo"]
        host_keys_now = _shm_keys()

        tell.step("Join the running container's UTS namespace from another process (setns).",
                  "This is what nsenter and 'docker exec' do: open /proc/PID/ns/uts of a process "
                  "inside and setns() to it. A forked helper does it, so this process stays put.")
        call = "os.setns(fd, os.CLONE_NEWUTS)" if namespaces.os_api_available() else \
            f"libc.setns(fd, {_c.CLONE_NEWUTS:#x})   # CLONE_NEWUTS; os.setns in Python >= 3.12"
        tell.code(f"fd = os.open('/proc/{ctr.pid1}/ns/uts', os.O_RDONLY)", call)
        peek = _peek_uts(ctr.pid1, rootless)
        tell.show("hostname seen after setns", peek["inside"])
        if "back" in peek:
            tell.show("hostname after setns back to the saved fd", peek["back"])
        ctr.send(go=True)
        inside = ctr.result()

    tell.step("Compare what the host and the container see.",
              "Everything below was read by the container's PID 1 and by this process.")
    rows = [
        ("hostname (UTS)", host["hostname"], inside["hostname"]),
        ("my PID / parent PID", f"{host['pid']} / {host['ppid']}",
         f"{inside['pid']} / {inside['ppid']}  (parent is outside)"),
        ("PIDs in /proc", f"{len(host['proc_pids'])} processes", f"{inside['proc_pids']}"),
        ("/proc/1/cmdline", "(the host's init)", inside["pid1_cmdline"]),
        ("uid", host["uid"], inside["uid"]),
        ("network interfaces", ", ".join(host["links"]),
         f"{', '.join(inside['links_before'])} -> {', '.join(inside['links_after'])}"),
        ("TCP echo on 127.0.0.1", host["tcp"], f"lo down: {inside['tcp_before']}"),
        ("", "", f"lo up: {inside['tcp_after']}"),
        ("SysV shm keys", f"{len(host_keys_now)} segments, {SHM_KEY:#x} absent"
         if SHM_KEY not in host_keys_now else "demo key visible (!)",
         f"{len(inside['shm_keys_before'])} at start; created {SHM_KEY:#x}"),
        ("proc mounts in the host table", "unchanged" if not mount_leaked else "CHANGED (!)",
         f"{inside['proc_mounts']} proc mount(s) (the fresh one on top)"),
    ]
    for kind, link in host["ns"].items():
        theirs = inside["ns"].get(kind, "?")
        rows.append((f"/proc/self/ns/{kind}", link,
                     f"{theirs}  {'same' if theirs == link else 'NEW'}"))
    tell.block(table(("", "host", "container"), rows))
    tell.para("Exercise: /sys/class/net inside listed " + ", ".join(inside["sys_class_net"]) +
              " although the container has only lo. Why? (Hint: which namespace was sysfs "
              "mounted in, and what would remounting it inside change?)")
    tell.step("Clean up.",
              "PID 1 exited, which ends its PID namespace; with their last process gone, the "
              "kernel frees the UTS, mount, network and IPC namespaces, the /proc mount and "
              "the SysV segment. Nothing needs unmounting or deleting by hand.")
    return {"host": host, "inside": inside, "peek": peek, "launched": launched,
            "mount_leaked": mount_leaked, "host_keys": host_keys_now}

