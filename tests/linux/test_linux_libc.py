"""Tier 1: the ctypes wrappers' error paths, with a fake libc. Runs on any OS, needs no privilege.

The fake behaves like a C function: it sets ``errno`` (ctypes' private copy, the one
``use_errno=True`` maintains) and returns -1. The wrappers must turn that into the right
``OSError`` subclass, with the errno, the system's message, and what the call acted on.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
from typing import Any

import pytest
from linux_helpers import SIM

from virtlab.linux import libc, namespaces
from virtlab.linux.libc import CLONE_NEWNET, CLONE_NEWUSER, CLONE_NEWUTS


class FakeLibc:
    """Each function records its call, sets errno to ``fail_with`` (if any) and returns -1."""

    def __init__(self, fail_with: int | None = None, result: int = 0) -> None:
        self.fail_with = fail_with
        self.result = result
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def function(*args: Any) -> int:
            self.calls.append((name, args))
            if self.fail_with is not None:
                ctypes.set_errno(self.fail_with)
                return -1
            return self.result

        return function


def test_eperm_from_unshare_is_permission_error_naming_the_flags() -> None:
    with pytest.raises(PermissionError) as caught:
        libc.unshare(CLONE_NEWUTS | CLONE_NEWNET, libc=FakeLibc(errno.EPERM))
    assert caught.value.errno == errno.EPERM
    assert caught.value.strerror == os.strerror(errno.EPERM)
    assert caught.value.filename == "CLONE_NEWUTS|CLONE_NEWNET"


def test_einval_stays_a_plain_oserror() -> None:
    with pytest.raises(OSError) as caught:
        libc.unshare(CLONE_NEWUSER, libc=FakeLibc(errno.EINVAL))
    assert type(caught.value) is OSError
    assert caught.value.errno == errno.EINVAL


def test_enospc_reports_the_errno() -> None:
    with pytest.raises(OSError) as caught:
        libc.unshare(CLONE_NEWUSER, libc=FakeLibc(errno.ENOSPC))
    assert caught.value.errno == errno.ENOSPC


def test_setns_bad_fd_names_the_fd() -> None:
    with pytest.raises(OSError) as caught:
        libc.setns(-1, 0, libc=FakeLibc(errno.EBADF))
    assert caught.value.errno == errno.EBADF
    assert "fd -1" in str(caught.value)


def test_sethostname_passes_bytes_and_length() -> None:
    fake = FakeLibc()
    libc.sethostname("tiny-ctr", libc=fake)
    assert fake.calls == [("sethostname", (b"tiny-ctr", 8))]


def test_sethostname_eperm_names_the_host() -> None:
    with pytest.raises(PermissionError, match="tiny-ctr"):
        libc.sethostname("tiny-ctr", libc=FakeLibc(errno.EPERM))


def test_mount_enoent_is_file_not_found_with_the_target() -> None:
    with pytest.raises(FileNotFoundError) as caught:
        libc.mount("proc", "/nonexistent", "proc", libc.MS_NOSUID, libc=FakeLibc(errno.ENOENT))
    assert caught.value.filename == "/nonexistent"


def test_mount_encodes_paths_and_passes_none_as_null() -> None:
    fake = FakeLibc()
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE, libc=fake)
    name, args = fake.calls[0]
    assert name == "mount"
    assert args[:4] == (None, b"/", None, libc.MS_REC | libc.MS_PRIVATE)
    assert args[4] is None


def test_umount2_ebusy() -> None:
    with pytest.raises(OSError) as caught:
        libc.umount2("/proc", libc.MNT_DETACH, libc=FakeLibc(errno.EBUSY))
    assert caught.value.errno == errno.EBUSY


def test_prctl_returns_the_result() -> None:
    assert libc.prctl(libc.PR_GET_DUMPABLE, libc=FakeLibc(result=1)) == 1


def test_success_returns_quietly() -> None:
    fake = FakeLibc()
    libc.unshare(CLONE_NEWUTS, libc=fake)
    assert fake.calls == [("unshare", (CLONE_NEWUTS,))]


def test_flag_names_spell_the_kernel_names() -> None:
    assert libc.flag_names(0) == "0"
    assert libc.flag_names(CLONE_NEWUSER | CLONE_NEWUTS) == "CLONE_NEWUTS|CLONE_NEWUSER"
    assert libc.flag_names(CLONE_NEWNET | 0x1) == "CLONE_NEWNET|0x1"


def test_flags_match_python_312_constants_where_present() -> None:
    for name in ("CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWUSER", "CLONE_NEWPID",
                 "CLONE_NEWNET", "CLONE_NEWCGROUP", "CLONE_NEWTIME"):
        if not hasattr(os, name):
            pytest.skip(reason="os.CLONE_* constants are new in Python 3.12")
        assert getattr(libc, name) == getattr(os, name)


def test_namespaces_unshare_uses_ctypes_with_an_injected_libc() -> None:
    fake = FakeLibc()
    call = namespaces.unshare(CLONE_NEWUTS, libc=fake)
    assert call.startswith("libc.unshare(0x4000000)")
    with pytest.raises(PermissionError):
        namespaces.setns(3, CLONE_NEWUTS, libc=FakeLibc(errno.EPERM))


def test_flags_for_named_kinds() -> None:
    assert namespaces.flags_for(["uts", "net"]) == CLONE_NEWUTS | CLONE_NEWNET


def test_entered_refuses_user_namespaces() -> None:
    with pytest.raises(ValueError, match="cannot be left"), namespaces.entered("/x", "user"):
        pass


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SIM))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_importing_the_package_loads_no_libc() -> None:
    result = _run(
        "import virtlab.linux.commands, virtlab.linux.container, virtlab.linux.calibrate\n"
        "import virtlab.linux.demo_namespaces, virtlab.linux.demo_cgroups\n"
        "from virtlab.linux import libc\n"
        "assert libc._load_libc.cache_info().currsize == 0, 'libc loaded at import'\n"
        "print('ok')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_on_another_os_everything_imports_and_preflight_says_why() -> None:
    # Pretend to be macOS before any of our modules is imported: nothing may touch Linux at
    # import time, and every entry point must end in a PreflightError that names the reason.
    # (ctypes.util is imported first: with sys.platform faked it would look for macOS parts.)
    result = _run(
        "import ctypes.util, sys; sys.platform = 'darwin'\n"
        "import virtlab.linux.commands as commands\n"
        "from virtlab.errors import PreflightError\n"
        "from virtlab.linux import libc, preflight\n"
        "try:\n"
        "    preflight.require_mode('auto')\n"
        "except PreflightError as exc:\n"
        "    print('PREFLIGHT', exc)\n"
        "try:\n"
        "    libc.unshare(0)\n"
        "except OSError as exc:\n"
        "    print('ERRNO', exc.errno)\n"
        "print('DOCTOR', commands.main(['doctor']))\n"
        "print('CHECK', preflight.check().checks[0].ok)\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "PREFLIGHT the real-system demos need Linux" in out
    assert f"ERRNO {errno.ENOSYS}" in out
    assert "DOCTOR 2" in out
    assert "CHECK False" in out
