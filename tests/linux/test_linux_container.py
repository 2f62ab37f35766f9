"""Tiers 2 and 3: real containers, in root and rootless mode, and nothing left behind.

Each test forks a real container (``mode`` fixture: root and rootless, skipped with the
preflight's explanation where the machine does not allow it) and checks one isolation property
from both sides. The ``no_leaks`` fixture then checks the host: no ``virtlab-*`` process, the
same mount table, no new cgroup, interface or SysV segment.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from typing import Any

import pytest
from linux_helpers import (
    IS_LINUX,
    assert_namespaces_gone,
    run_cli,
    skip_on_namespace_error,
    skip_unless_root,
)

from virtlab.linux import libc, namespaces, netdev, preflight, procs
from virtlab.linux.container import Container, ContainerError, ContainerSpec, Inside, run_container

pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not IS_LINUX, reason="needs Linux namespaces")]

CONTAINER_KINDS = ("uts", "pid", "mnt", "net", "ipc")


def _spec(mode: str, **changes: Any) -> ContainerSpec:
    return ContainerSpec(rootless=mode == "rootless", **changes)


def _new_namespaces(seen: dict[str, str]) -> list[str]:
    host = namespaces.identities()
    return [link for kind, link in seen.items() if host.get(kind) != link]


def test_hostname_is_isolated(mode: str, no_leaks: object) -> None:
    host_before = socket.gethostname()
    inside = run_container(_spec(mode, hostname="tiny-test"),
                           lambda _: {"hostname": socket.gethostname(),
                                      "uts": namespaces.identities()["uts"]})
    assert inside["hostname"] == "tiny-test"
    assert socket.gethostname() == host_before
    assert inside["uts"] != namespaces.identities()["uts"]


def test_pid_1_sees_only_its_own_processes(mode: str, no_leaks: object) -> None:
    def payload(_: Inside) -> dict[str, Any]:
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(write_fd)
            procs.child_main(lambda: len(os.read(read_fd, 1)), name="virtlab-sleeper")
        os.close(read_fd)
        listed = sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
        os.close(write_fd)
        os.waitpid(child, 0)
        return {"pid": os.getpid(), "ppid": os.getppid(), "proc": listed, "child": child}

    seen = run_container(_spec(mode), payload)
    assert (seen["pid"], seen["ppid"]) == (1, 0)
    assert seen["proc"] == [1, seen["child"]] == [1, 2]


def test_new_network_namespace_has_only_lo_down_then_up(mode: str, no_leaks: object) -> None:
    def payload(_: Inside) -> dict[str, Any]:
        before = [(link.index, link.name, link.up) for link in netdev.links()]
        netdev.set_link_up("lo")
        after = [(link.index, link.name, link.up) for link in netdev.links()]
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=2) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"hi")
                    echoed = conn.recv(2)
        return {"before": before, "after": after, "echo": echoed.decode()}

    seen = run_container(_spec(mode, loopback_up=False), payload)
    assert seen["before"] == [[1, "lo", False]]
    assert seen["after"] == [[1, "lo", True]]
    assert seen["echo"] == "hi"
    assert socket.if_nameindex() != [(1, "lo")]  # the host still has its own interfaces


def test_namespace_identities_differ_and_die_with_the_container(mode: str,
                                                                no_leaks: object) -> None:
    seen = run_container(_spec(mode), lambda _: namespaces.identities())
    host = namespaces.identities()
    for kind in CONTAINER_KINDS:
        assert seen[kind] != host[kind], kind
    assert (seen["user"] != host["user"]) == (mode == "rootless")
    assert seen["cgroup"] == host["cgroup"]  # not asked for
    assert_namespaces_gone(_new_namespaces(seen))


def test_sysv_ipc_is_isolated(mode: str, no_leaks: object) -> None:
    key = 0x7669_7465  # "vite": made up for this test
    shmid = libc.shmget(key, 4096, libc.IPC_CREAT | 0o600)
    try:
        def payload(_: Inside) -> list[int]:
            with open("/proc/sysvipc/shm", encoding="ascii") as handle:
                return [int(line.split()[0]) for line in handle.readlines()[1:] if line.strip()]

        inside = run_container(_spec(mode), payload)
    finally:
        libc.shmctl(shmid, libc.IPC_RMID)
    assert key not in inside


def test_proc_mount_does_not_reach_the_host(mode: str, no_leaks: object) -> None:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        host_mounts = handle.read()

    def payload(inside: Inside) -> int:
        inside.send("mounted")
        inside.recv(timeout_s=5)
        return 0

    with Container(_spec(mode), payload) as ctr:
        ctr.wait_for("mounted")
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            during = handle.read()
        ctr.send(go=True)
        ctr.result()
    assert during == host_mounts


def test_setns_round_trip_restores_the_uts_namespace(no_leaks: object) -> None:
    skip_unless_root()  # back into the host's UTS namespace needs CAP_SYS_ADMIN there

    def payload(inside: Inside) -> int:
        inside.recv(timeout_s=5)
        return 0

    with Container(ContainerSpec(hostname="joined"), payload) as ctr:
        ctr.wait_for("ready")
        target = f"/proc/{ctr.pid1}/ns/uts"

        def work() -> dict[str, str]:
            before = os.readlink("/proc/self/ns/uts")
            with namespaces.entered(target, "uts"):
                during = (os.readlink("/proc/self/ns/uts"), socket.gethostname())
            return {"before": before, "during": during[0], "name": during[1],
                    "after": os.readlink("/proc/self/ns/uts"), "target": os.readlink(target)}

        seen = procs.run_forked(work)
        ctr.send(go=True)
        ctr.result()
    assert seen["during"] == seen["target"] != seen["before"]
    assert seen["name"] == "joined"
    assert seen["after"] == seen["before"]


def test_pid_namespace_pitfalls() -> None:
    """CLONE_NEWPID moves only children; a second one is EINVAL; after PID 1 dies, ENOMEM."""
    skip_unless_root()

    def work() -> dict[str, Any]:
        seen: dict[str, Any] = {"pid_before": os.getpid()}
        libc.unshare(libc.CLONE_NEWPID)
        seen["pid_after"] = os.getpid()
        seen["for_children"] = _readlink_errno("/proc/self/ns/pid_for_children")
        try:
            libc.unshare(libc.CLONE_NEWPID)
            seen["second"] = 0
        except OSError as exc:
            seen["second"] = exc.errno
        child = os.fork()
        if child == 0:
            os._exit(os.getpid())  # exit status = the PID it saw
        seen["child_saw"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        try:
            os.fork()
            seen["fork_after_init_died"] = 0
        except OSError as exc:
            seen["fork_after_init_died"] = exc.errno
        return seen

    seen = procs.run_forked(work)
    assert seen["pid_after"] == seen["pid_before"]
    assert seen["for_children"] == errno.ENOENT
    assert seen["second"] == errno.EINVAL
    assert seen["child_saw"] == 1
    assert seen["fork_after_init_died"] == errno.ENOMEM


def _readlink_errno(path: str) -> int:
    try:
        os.readlink(path)
        return 0
    except OSError as exc:
        return exc.errno or -1


def test_clone_newuser_with_two_threads_is_einval_and_explained() -> None:
    def work() -> dict[str, Any]:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            libc.unshare(libc.CLONE_NEWUSER)
            return {"errno": 0}
        except OSError as exc:
            return {"errno": exc.errno,
                    "why": preflight.explain(exc, libc.CLONE_NEWUSER, "unshare")}
        finally:
            stop.set()
            thread.join()

    seen = procs.run_forked(work)
    if seen["errno"] not in (errno.EINVAL,):
        skip_on_namespace_error(OSError(seen["errno"] or errno.EPERM, "unexpected"),
                                "user namespaces unavailable")
    assert "single-threaded" in seen["why"]


def test_a_failing_setup_step_is_reported_and_cleaned_up(no_leaks: object) -> None:
    with pytest.raises(OSError) as caught:
        run_container(ContainerSpec(hostname="x" * 100), lambda _: 0)  # longer than 64
    if caught.value.errno == errno.EPERM:
        pytest.skip(reason=f"cannot create namespaces here: {caught.value}")
    assert caught.value.errno == errno.EINVAL
    assert caught.value.stage == "sethostname"  # type: ignore[attr-defined]


def test_a_failing_payload_is_reported_and_cleaned_up(mode: str, no_leaks: object) -> None:
    def payload(_: Inside) -> int:
        raise RuntimeError("payload went wrong")

    with pytest.raises(ContainerError, match="payload went wrong"):
        run_container(_spec(mode), payload)


def test_a_timeout_kills_everything(mode: str, no_leaks: object) -> None:
    seen: dict[str, Any] = {}

    def payload(inside: Inside) -> int:
        inside.send("up", ns=namespaces.identities())
        time.sleep(60)
        return 0

    start = time.monotonic()
    with pytest.raises(TimeoutError), Container(_spec(mode), payload, timeout_s=1.0) as ctr:
        seen.update(ctr.wait_for("up")["ns"])
        ctr.result()
    assert time.monotonic() - start < 30  # 1 s timeout + kill and reap, on a loaded machine
    assert_namespaces_gone(_new_namespaces(seen))


def test_ctrl_c_while_waiting_kills_everything(mode: str, no_leaks: object) -> None:
    def payload(inside: Inside) -> int:
        inside.send("up")
        time.sleep(60)
        return 0

    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), Container(_spec(mode), payload) as ctr:
            ctr.wait_for("up")
            signal.setitimer(signal.ITIMER_REAL, 0.3)  # a "Ctrl-C" while we wait
            ctr.result()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_sigkill_of_the_launcher_takes_pid_1_with_it(no_leaks: object) -> None:
    """PR_SET_PDEATHSIG: even if the launcher dies without cleanup, PID 1 does not survive."""
    def payload(inside: Inside) -> int:
        inside.recv(timeout_s=30)
        return 0

    ctr = Container(ContainerSpec(hostname="orphan", flags=0), payload).start()
    try:
        ctr.wait_for("ready")
        os.kill(ctr.launcher_pid, signal.SIGKILL)
        os.waitpid(ctr.launcher_pid, 0)
        deadline = time.monotonic() + 10  # the kernel delivers PDEATHSIG; slow when loaded
        while time.monotonic() < deadline and any(pid == ctr.pid1 for pid, _ in
                                                  procs.virtlab_processes()):
            time.sleep(0.02)
        assert all(pid != ctr.pid1 for pid, _ in procs.virtlab_processes())
    finally:
        ctr._exited = True  # already reaped above
        ctr.close()


def test_demo_namespaces_cli(no_leaks: object) -> None:
    result = run_cli("demo", "namespaces", "--hostname", "cli-ctr")
    if result.returncode == 2:
        pytest.skip(reason=f"cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("cli-ctr", "lo DOWN -> lo UP", "[1, 2]", "Network is unreachable",
                     "unchanged", "hostname seen after setns: cli-ctr", "NEW"):
        assert expected in out, expected


def test_doctor_cli() -> None:
    result = run_cli("doctor")
    assert result.returncode in (0, 2), result.stderr
    assert "Verdict" in result.stdout
    assert ("runs" in result.stdout) == (result.returncode == 0)
