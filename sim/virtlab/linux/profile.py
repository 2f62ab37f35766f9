"""The calibrated profile: a TOML file that ``virtlab compare --profile FILE`` loads.

Layout (the simulator's loader rejects any other table or key, except inside
``[measurements]``, which is free-form and informational)::

    [profile]       name, extends, description
    [host]          syscall_us
    [container]     syscall_extra_us, veth_hop_us (left out when not measured)
    [measurements]  every median we measured, scalars only

Every value gets a comment line saying where it came from, with its spread, so the file
explains itself when a student opens it. Values are formatted by ``tomli_w`` (so strings are
quoted correctly) and the finished text is parsed back with :mod:`tomllib` and checked against the
allowed keys before it is written. :class:`ProfileOutput` writes it: checked before measuring,
never through a symlink, atomically.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import secrets
import signal
import stat
import tomllib
from pathlib import Path
from typing import Any

from virtlab.errors import ConfigError
from virtlab.linux.calibrate import Calibration, profile_values

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

__all__ = ["ALLOWED_KEYS", "ProfileOutput", "render_profile", "validate_profile",
           "write_profile"]

ALLOWED_KEYS: dict[str, set[str] | None] = {
    "profile": {"name", "extends", "description"},
    "host": {"syscall_us"},
    "container": {"syscall_extra_us", "veth_hop_us"},
    "measurements": None,  # free-form scalars
}
_REQUIRED = {"profile": {"name", "extends"}}


def _line(key: str, value: Any) -> str:
    import tomli_w  # a dependency of virtlab, imported late like everything here

    if isinstance(value, float):
        value = round(value, 4)
    return tomli_w.dumps({key: value}).strip()


def _comment(text: str) -> list[str]:
    return [f"# {line}" if line else "#" for line in text.splitlines()]


def render_profile(calib: Calibration, hostname: str, when: str) -> str:
    """Build the profile text from a calibration.

    Parameters
    ----------
    calib:
        From :func:`virtlab.linux.calibrate.run_calibration`.
    hostname:
        Goes into the profile's name and description.
    when:
        A timestamp (ISO 8601) for the description.

    """
    spreads = calib.spreads
    derived = profile_values(calib)
    lines = _comment(
        f"Calibrated by `virtlab calibrate` on {hostname} ({platform.system()} "
        f"{platform.release()}, {platform.machine()}, Python {platform.python_version()}),\n"
        f"{when}, {calib.mode} mode, {calib.elapsed_s:.0f} s of measurement.\n"
        "Every figure is a median over interleaved rounds (host and container alternate);\n"
        "'IQR' is the interquartile range, n the number of rounds or samples.\n"
        "Absolute numbers are this machine's: a VM's syscalls and loopback round trips are\n"
        "slower than bare metal's. Compare ratios across machines, not raw values.")
    lines += ["", "[profile]", _line("name", f"calibrated-{hostname}"),
              _line("extends", "modern"),
              _line("description", f"Measured by virtlab calibrate on {hostname} at {when}"),
              "", "[host]"]
    host = spreads["syscall_host_us"]
    lines += _comment(f"Null syscall: os.getpid() per call minus the same loop over gc.isenabled()"
                      f"\n(a builtin without a syscall), in plain forked children; µs,"
                      f" IQR {host.q1:.4f}–{host.q3:.4f}, n={host.n}.")
    lines += [_line("syscall_us", derived["syscall_us"]), "", "[container]"]
    extra = spreads["syscall_extra_us"]
    note = ""
    if derived["syscall_extra_us_raw"] < 0:
        raw = derived["syscall_extra_us_raw"]
        note = (f"\nThe measured difference was negative ({raw:.4f} µs): noise around zero,"
                "\nclamped to 0 because a cost cannot be negative.")
    lines += _comment("Extra cost of the same syscall as PID 1 of a container (UTS, PID, mount, "
                      "net, IPC\nnamespaces) vs a plain child: median over rounds of the paired "
                      f"difference, µs,\nIQR {extra.q1:.4f}–{extra.q3:.4f}, n={extra.n}." + note)
    lines.append(_line("syscall_extra_us", derived["syscall_extra_us"]))
    if "veth_hop_us" in derived:
        rtt = spreads["veth_rtt_extra_us"]
        note = ""
        if derived["veth_hop_us_raw"] < 0:
            note = (f"\nThe median difference was negative ({2 * derived['veth_hop_us_raw']:.2f} µs"
                    " per round trip):\nnoise around zero, clamped to 0.")
        lines += _comment(
            "Extra host-kernel cost per packet of the veth hop: half the median (over rounds) of\n"
            "(round trip host->container over a veth pair) - (round trip host->host over lo),\n"
            "1-byte TCP ping-pong. Each round trip crosses the pair once each way, and the path\n"
            "is serial, so half the difference is what one small packet pays per crossing\n"
            "(per packet, per direction, as the model charges it).\n"
            f"Round-trip difference IQR {rtt.q1:.2f}–{rtt.q3:.2f} µs, n={rtt.n}. The bulk "
            "figure\n(veth_extra_us_per_64KiB below) is per 64 KiB segment and mixes in MTU "
            "effects." + note)
        lines.append(_line("veth_hop_us", derived["veth_hop_us"]))
    else:
        lines += _comment("veth_hop_us is left out: the veth pair was not measured ("
                          + calib.skipped.get("veth", "no measurement") + ").\nThe model keeps "
                          "the value of the profile this one extends.")
    lines += ["", "[measurements]"]
    lines += _comment("Informational: kept here for reference; the model does not read "
                      "them.\nMedians; µs unless the name says otherwise (mib_s = MiB/s).")
    lines.append(_line("mode", calib.mode))
    for key, spread in spreads.items():
        lines.append(_line(key, spread.median) + f"  # IQR {spread.q1:.4g}–{spread.q3:.4g}, "
                     f"n={spread.n}")
    for name, why in calib.skipped.items():
        lines += _comment(f"skipped {name}: {why}")
    text = "\n".join(lines) + "\n"
    problems = validate_profile(tomllib.loads(text))
    if problems:
        raise ValueError("internal error, the profile would be rejected: " + "; ".join(problems))
    return text


def validate_profile(data: dict[str, Any]) -> list[str]:
    """List what the simulator's loader would reject (empty list: fine)."""
    problems = []
    for table_name, content in data.items():
        if table_name not in ALLOWED_KEYS:
            problems.append(f"unknown table [{table_name}]")
            continue
        if not isinstance(content, dict):
            problems.append(f"{table_name} must be a table")
            continue
        allowed = ALLOWED_KEYS[table_name]
        for key, value in content.items():
            if allowed is not None and key not in allowed:
                problems.append(f"unknown key {table_name}.{key}")
            if isinstance(value, dict | list):
                problems.append(f"{table_name}.{key} must be a scalar")
            elif isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{table_name}.{key} is not finite")
            elif table_name in ("host", "container") and not (
                    isinstance(value, int | float) and value >= 0):
                problems.append(f"{table_name}.{key} must be a number >= 0")
    for table_name, keys in _REQUIRED.items():
        missing = keys - set(data.get(table_name, {}))
        problems += [f"missing {table_name}.{key}" for key in sorted(missing)]
    return problems


# Filesystems whose files are kernel interfaces, not storage: never the place for a profile.
_NOT_STORAGE = {"proc", "sysfs", "cgroup", "cgroup2", "devtmpfs", "devpts", "debugfs", "tracefs",
                "securityfs", "bpf", "configfs", "fusectl", "pstore", "efivarfs", "mqueue",
                "binfmt_misc", "hugetlbfs", "autofs", "rpc_pipefs", "nsfs"}


def _filesystem_of(folder: str) -> str:
    """The type of the filesystem ``folder`` (a resolved path) is on, from the mount table."""
    best, fstype = "", "?"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ")
                inside = folder == point or folder.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, right.split()[0]
    except OSError:
        pass
    return fstype


class ProfileOutput:
    """The profile file: checked and opened *before* measuring, written atomically at the end.

    Safe in a folder other users can write to (``/tmp``, a shared lab folder), even as root:

    * the temporary file has a random name and is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``
      in the target folder (opened once, as a directory descriptor, and used for every step), so
      a symlink or file planted under any name is never opened, followed or truncated;
    * an existing target that is not a regular file (a symlink, a directory, a device such as
      ``/dev/full``) is refused; ``rename`` then replaces the directory *entry*, so a symlink
      planted at the target after the check is replaced, never followed;
    * kernel filesystems (``/proc``, ``/sys``, cgroups, ...) are refused;
    * everything is checked when the object is made, before any measurement, and every problem
      is a :class:`~virtlab.errors.ConfigError` naming ``-o`` and the path: one line, exit 2.

    Use as a context manager; :meth:`commit` writes, ``fsync`` s and renames into place; leaving
    the block without committing (an error, Ctrl-C) removes the temporary file.
    """

    def __init__(self, path: Path, option: str = "-o") -> None:
        self.path = path
        self._what = f"{option} {path}"
        name = path.name
        if name in ("", ".", ".."):
            raise ConfigError(self._what, "names a folder; give a file name such as profile.toml")
        folder = str(path.parent)
        try:
            self._dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ConfigError(self._what, f"the folder {folder} does not exist; create it "
                                          "first or write somewhere else") from None
        except NotADirectoryError:
            raise ConfigError(self._what, f"{folder} is not a folder") from None
        except OSError as exc:
            raise ConfigError(self._what, f"cannot open the folder {folder}: "
                                          f"{exc.strerror}") from None
        self._fd = -1
        self._tmp = ""
        try:
            self._check_target(name, folder)
            self._create_temporary(name, folder)
        except BaseException:
            os.close(self._dir_fd)
            raise

    def _check_target(self, name: str, folder: str) -> None:
        fstype = _filesystem_of(os.path.realpath(folder))
        if fstype in _NOT_STORAGE:
            raise ConfigError(self._what, f"{folder} is on a {fstype} filesystem (a kernel "
                                          "interface, not storage); write the profile to an "
                                          "ordinary folder")
        try:
            found = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(self._what, f"cannot check it: {exc.strerror}") from None
        if not stat.S_ISREG(found.st_mode):
            kind = ("a symbolic link (virtlab never writes through a link; give the real path)"
                    if stat.S_ISLNK(found.st_mode) else "a folder" if stat.S_ISDIR(found.st_mode)
                    else "a special file")
            raise ConfigError(self._what, f"exists and is {kind}; give the name of a regular "
                                          "file to create or replace")

    def _create_temporary(self, name: str, folder: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        # Stop signals wait until the name is recorded: an interruption must not leave an
        # unknown temporary file behind (or make us remove a file that is not ours).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for _ in range(100):
                tmp = f".{name}.{secrets.token_hex(6)}.tmp"
                try:
                    self._fd = os.open(tmp, flags, 0o644, dir_fd=self._dir_fd)
                except FileExistsError:
                    continue  # someone made that name (maybe a planted symlink): another one
                except OSError as exc:
                    raise ConfigError(self._what, f"cannot create a file in {folder}: "
                                                  f"{exc.strerror}") from None
                self._tmp = tmp
                return
            raise ConfigError(self._what, f"could not create a temporary file in {folder} "
                                          "(100 names taken)")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def commit(self, text: str) -> None:
        """Write ``text``, flush it to disk, and rename it over the target in one step."""
        data = text.encode("utf-8")
        while data:
            data = data[os.write(self._fd, data):]
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self._tmp, self.path.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._tmp = ""
        with contextlib.suppress(OSError):  # not every filesystem can sync a directory
            os.fsync(self._dir_fd)

    def discard(self) -> None:
        """Remove the temporary file (if still there) and close everything; idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp, dir_fd=self._dir_fd)
            self._tmp = ""
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def __enter__(self) -> ProfileOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


def write_profile(path: Path, text: str) -> None:
    """Write the profile safely and atomically (see :class:`ProfileOutput`)."""
    with ProfileOutput(path) as output:
        output.commit(text)
