"""Messages across a fork: one JSON object per line over a pipe, errors included.

A forked child shares nothing with its parent after the fork, so everything it learns (a PID, a
hostname, a timing, an error) comes back as bytes. JSON lines keep that readable and simple:

* writes of up to ``PIPE_BUF`` (4096) bytes are atomic, so two processes writing small messages
  to the same pipe never interleave; longer writes are looped until complete;
* the reader has a deadline, so a child that hangs turns into a :class:`TimeoutError` in the
  parent instead of a hung demo;
* an exception in the child travels as ``{"kind": "error", "errno": ..., "stage": ...}`` and
  is raised again in the parent as the same :class:`OSError` subclass (``PermissionError``...).
"""

from __future__ import annotations

import json
import os
import select
import time
import traceback
from typing import Any

__all__ = ["LineReader", "RemoteError", "error_message", "raise_remote", "write_line"]


class RemoteError(RuntimeError):
    """A child failed with something other than an :class:`OSError`, or exited too early."""

    stage: str = ""


def write_line(fd: int, message: dict[str, Any]) -> None:
    """Write one message (JSON-serialisable values only)."""
    data = (json.dumps(message) + "\n").encode()
    while data:  # a write larger than PIPE_BUF may be partial
        data = data[os.write(fd, data):]


class LineReader:
    """Reads messages from a pipe, with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.eof = False

    def read(self, deadline: float | None) -> dict[str, Any] | None:
        """Return the next message, or ``None`` at end of file.

        Parameters
        ----------
        deadline:
            A :func:`time.monotonic` value; :class:`TimeoutError` when it passes. ``None`` waits.

        """
        while b"\n" not in self._buffer:
            if self.eof:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                raise TimeoutError("no message before the deadline")
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message


def error_message(exc: BaseException, stage: str) -> dict[str, Any]:
    """Describe an exception (call inside the ``except`` block) as an ``error`` message."""
    message: dict[str, Any] = {"kind": "error", "stage": stage, "type": type(exc).__name__,
                               "message": str(exc), "traceback": traceback.format_exc()}
    if isinstance(exc, OSError) and exc.errno is not None:
        message.update(errno=exc.errno, strerror=exc.strerror, filename=exc.filename)
    return message


def raise_remote(event: dict[str, Any]) -> None:
    """Raise, in the parent, the error a child reported.

    An ``OSError`` comes back as the same subclass with the same ``errno`` and ``filename``, plus
    a ``stage`` attribute and a note naming the step that failed.
    """
    stage = event.get("stage", "?")
    exc: Exception
    if event.get("errno") is not None:
        exc = OSError(event["errno"], event["strerror"], event.get("filename"))
    else:
        exc = RemoteError(f"{event['type']}: {event['message']}")
        exc.add_note(event.get("traceback", "").rstrip())
    setattr(exc, "stage", stage)  # noqa: B010 - OSError has no declared "stage" attribute
    exc.add_note(f"(in the child's '{stage}' step)")
    raise exc
