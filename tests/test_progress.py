"""Progress bars appear on a terminal's stderr, and not with --quiet or when piped."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios

from tests.study_support import TINY_FLAGS, virtlab_cmd

SWEEP = ["sweep", "--vary", "host.cores=1,2,3", "--approaches", "native", "-r", "1", "-j", "1",
         *TINY_FLAGS, "--no-store"]


def _stderr_on_a_terminal(*extra: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; return its status and what it drew."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(virtlab_cmd(*SWEEP, *extra), stdout=subprocess.DEVNULL,
                            stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    status = proc.wait(timeout=120)
    os.close(leader)
    return status, b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_a_progress_bar_with_the_time_left():
    status, drawn = _stderr_on_a_terminal()
    assert status == 0
    assert "sweep" in drawn and "3/3" in drawn and "run/s" in drawn
    assert "<" in drawn  # tqdm's "elapsed<remaining"


def test_quiet_draws_nothing():
    status, drawn = _stderr_on_a_terminal("--quiet")
    assert status == 0 and "run/s" not in drawn


def test_a_pipe_gets_no_progress_bar():
    done = subprocess.run(virtlab_cmd(*SWEEP), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "run/s" not in done.stderr and "%|" not in done.stderr
