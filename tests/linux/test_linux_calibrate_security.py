"""Tier 3: ``virtlab calibrate`` is safe to run as root next to other users.

Two attacks from the hardening issue, reproduced:

* **Symlink on the output.** In a folder another user can write to, that user plants symbolic
  links where root's calibrate will write (the old fixed temporary name, a guessed random name,
  the target itself, or the target *after* the checks). A naive writer overwrites the link's
  target (the control below shows the planted link works); ours never opens or follows a link.
* **Strangers on the loopback servers.** While calibrate runs, the test connects to every
  listening socket of its ``virtlab-server`` processes: empty connections, garbage, the quit
  command without the token, a huge bulk request, and an idle connection held open. The
  calibration must still finish and write a valid profile.

The output checks come first: a bad ``-o`` is one line and exit 2 before anything is measured.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from linux_helpers import IS_LINUX, run_cli, skip_unless_root, start_cli

from virtlab.errors import ConfigError
from virtlab.linux import procs, profile

pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not IS_LINUX, reason="needs Linux namespaces")]

NOBODY = 65534
TEXT = "[profile]\nname = \"calibrated-test\"\nextends = \"modern\"\n"
PRECIOUS = "root's precious file\n"


@pytest.mark.parametrize(("output", "says"), [
    ("/nonexistent-virtlab-folder/p.toml", "does not exist"),
    ("/tmp", "is a folder"),
    ("/proc/p.toml", "proc filesystem"),
    ("/sys/p.toml", "sysfs filesystem"),
    ("/dev/null", "filesystem"),  # devtmpfs, or a special file where /dev is a tmpfs
    ("", "names a folder"),
])
def test_a_bad_output_is_refused_before_measuring(output: str, says: str) -> None:
    result = run_cli("calibrate", "--quick", "-o", output)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("virtlab: error: -o ")
    assert says in result.stderr
    assert result.stdout == ""  # not even the title: nothing was measured
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


@pytest.fixture
def victim() -> Iterator[Path]:
    """A root-only file in a root-only folder: what an attacker would like root to overwrite."""
    skip_unless_root()
    folder = Path(tempfile.mkdtemp(prefix="virtlab-victim-"))
    path = folder / "precious"
    path.write_text(PRECIOUS)
    path.chmod(0o600)
    yield path
    shutil.rmtree(folder)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may write to (not sticky: the kernel's symlink protection for
    sticky world-writable folders does not apply, as in a group-shared lab folder)."""
    folder = Path(tempfile.mkdtemp(prefix="virtlab-shared-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def _plant_link(link: Path, target: Path) -> None:
    """Create ``link -> target`` as uid 65534, the other user."""

    def attacker() -> int:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        os.symlink(target, link)
        return 0

    procs.run_forked(attacker, timeout_s=20)
    assert link.is_symlink() and link.lstat().st_uid == NOBODY


def test_the_planted_link_is_a_real_attack_on_a_naive_writer(victim: Path, shared: Path) -> None:
    """Control: the old writer (``write_text`` on ``.NAME.tmp``) overwrites the victim."""
    _plant_link(shared / ".p.toml.tmp", victim)
    (shared / ".p.toml.tmp").write_text(TEXT)  # what the old write_profile did first
    assert victim.read_text() == TEXT  # the attack works against a writer that follows links


def test_a_link_at_the_old_temporary_name_is_not_followed(victim: Path, shared: Path) -> None:
    _plant_link(shared / ".p.toml.tmp", victim)
    profile.write_profile(shared / "p.toml", TEXT)
    assert victim.read_text() == PRECIOUS
    assert (shared / "p.toml").read_text() == TEXT
    assert not (shared / "p.toml").is_symlink()
    assert os.readlink(shared / ".p.toml.tmp") == str(victim)  # left exactly as planted


def test_a_link_at_a_guessed_random_name_is_not_followed(victim: Path, shared: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    names = iter(["guessed", "another"])
    monkeypatch.setattr(profile.secrets, "token_hex", lambda _: next(names))
    _plant_link(shared / ".p.toml.guessed.tmp", victim)
    profile.write_profile(shared / "p.toml", TEXT)
    assert victim.read_text() == PRECIOUS
    assert (shared / "p.toml").read_text() == TEXT


def test_a_link_at_the_target_is_refused_before_measuring(victim: Path, shared: Path) -> None:
    _plant_link(shared / "p.toml", victim)
    result = run_cli("calibrate", "--quick", "-o", str(shared / "p.toml"))
    assert result.returncode == 2
    assert "symbolic link" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert victim.read_text() == PRECIOUS
    assert sorted(path.name for path in shared.iterdir()) == ["p.toml"]  # no temporary left


def test_a_link_planted_at_the_target_after_the_checks_is_replaced(victim: Path,
                                                                   shared: Path) -> None:
    with profile.ProfileOutput(shared / "p.toml") as output:  # checks pass: nothing there yet
        _plant_link(shared / "p.toml", victim)  # ...then the attacker is quick
        output.commit(TEXT)
    assert victim.read_text() == PRECIOUS
    assert not (shared / "p.toml").is_symlink()
    assert (shared / "p.toml").read_text() == TEXT


def test_an_interrupted_write_leaves_no_temporary_file(shared: Path) -> None:
    with pytest.raises(KeyboardInterrupt), profile.ProfileOutput(shared / "p.toml"):
        assert len(list(shared.iterdir())) == 1  # the temporary file, made before measuring
        raise KeyboardInterrupt
    assert list(shared.iterdir()) == []


def test_an_existing_regular_file_is_replaced_atomically(shared: Path) -> None:
    (shared / "p.toml").write_text("old\n")
    inode = (shared / "p.toml").stat().st_ino
    profile.write_profile(shared / "p.toml", TEXT)
    assert (shared / "p.toml").read_text() == TEXT
    assert (shared / "p.toml").stat().st_ino != inode  # a new file renamed over, not rewritten


def test_a_missing_folder_is_a_config_error_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^-o .*missing.*does not exist"):
        profile.ProfileOutput(tmp_path / "missing" / "p.toml")


# -- strangers on the loopback servers -----------------------------------------------------------
def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _listening(pid: int) -> list[tuple[str, int]]:
    """Addresses a process listens on that this test can reach (its netns or a routed one)."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
        same_netns = os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
        with open(f"/proc/{pid}/net/tcp", encoding="ascii") as handle:
            rows = [line.split() for line in handle.readlines()[1:]]
    except OSError:
        return []
    found = []
    for row in rows:
        if row[3] != "0A" or row[9] not in inodes:  # 0A: LISTEN
            continue
        host_hex, port_hex = row[1].split(":")
        address = socket.inet_ntoa(struct.pack("<I", int(host_hex, 16)))
        # Loopback in another network namespace is not reachable from here; connecting to the
        # same port on *our* loopback would bother someone else's server.
        if same_netns or not address.startswith("127."):
            found.append((address, int(port_hex, 16)))
    return found


class Strangers(threading.Thread):
    """Pester every server of one calibrate run until told to stop; count what was done."""

    KINDS = ("empty", "garbage", "quit without token", "huge bulk without token", "held open")

    def __init__(self, session: int) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.done: Counter[str] = Counter()
        self.servers: set[tuple[str, int]] = set()
        self.stop = threading.Event()
        self.held: list[socket.socket] = []

    def _visit(self, address: tuple[str, int]) -> None:
        for kind in self.KINDS:
            try:
                conn = socket.create_connection(address, timeout=1.0)
            except OSError:
                return  # the server is gone already
            if kind == "held open":
                self.held.append(conn)  # never sends a byte; closed when the test ends
            else:
                with conn:
                    try:
                        conn.sendall({"empty": b"", "garbage": os.urandom(64),
                                      "quit without token": b"Q",
                                      "huge bulk without token": b"B" + struct.pack("!Q", 1 << 40)
                                      }[kind])
                    except OSError:
                        pass  # closed on us: fine, that is the point
            self.done[kind] += 1
        self.servers.add(address)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            for pid, name in procs.virtlab_processes():
                if name == "virtlab-server" and _session_of(pid) == self.session:
                    for address in _listening(pid):
                        self._visit(address)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        for conn in self.held:
            conn.close()


def test_strangers_on_the_loopback_servers_do_not_stop_calibration(shared: Path,
                                                                   no_leaks: object) -> None:
    skip_unless_root()  # the veth server is reachable from the host only as root
    output = shared / "p.toml"
    proc = start_cli("calibrate", "--quick", "--rounds", "2", "-o", str(output),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    strangers = Strangers(session=proc.pid)
    strangers.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        strangers.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"Wrote {output}" in out
    data = tomllib.loads(output.read_text())
    assert profile.validate_profile(data) == []
    assert "veth_hop_us" in data["container"]
    # The attack really happened: every kind, more than once, on more than one server.
    assert all(strangers.done[kind] >= 2 for kind in Strangers.KINDS), strangers.done
    assert len(strangers.servers) >= 2, strangers.servers
