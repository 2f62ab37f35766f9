"""Progress bars for long commands: runs done, runs reused from the store, time left.

Drawn with tqdm on stderr, and only when stderr is a terminal and ``--quiet`` is not given, so
that piped output and test logs stay clean. Runs found in the results store are taken off the
total instead of being counted as done, so the estimate of the time left rests on runs that
were actually computed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "progress_wanted"]


def progress_wanted(quiet: bool) -> bool:
    """Whether to draw progress: not ``--quiet`` and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def _stderr_size() -> tuple[int, int]:
    import os

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return 0, 0
    return size.columns, size.lines


class Progress:
    """A progress bar over runs (a no-op when ``enabled`` is false).

    Invariant: ``done + reused`` counts every run finished so far; ``total`` is the number of
    runs still expected to be computed plus ``done`` (an estimate when the study is a search).
    """

    def __init__(self, total: int | None, desc: str, enabled: bool) -> None:
        self.done = 0
        self.reused = 0
        self.failed = 0
        self._drawn = 0.0
        self._bar: Any = None
        if enabled:
            import tqdm

            # No monitor thread: worker processes are forked, and forking a process that runs
            # threads can deadlock.
            tqdm.tqdm.monitor_interval = 0
            # A terminal that reports no size (a bare pseudo-terminal) gets 80 x 24 rather
            # than a bar tqdm would hide.
            sized = min(_stderr_size()) > 0
            self._bar = tqdm.tqdm(total=total, desc=desc, unit="run", file=sys.stderr,
                                  dynamic_ncols=sized, ncols=None if sized else 80,
                                  nrows=None if sized else 24, mininterval=0.25,
                                  smoothing=0.1, leave=True)

    def computed(self, failed: bool = False) -> None:
        """One run was computed (or failed)."""
        self.done += 1
        self.failed += failed
        if self._bar is not None:
            self._bar.update(1)
            self._postfix()

    def from_store(self) -> None:
        """One run was found in the store: it leaves the total instead of counting as done."""
        self.reused += 1
        if self._bar is not None:
            if self._bar.total:
                self._bar.total -= 1
            now = time.monotonic()
            if now - self._drawn > 0.25:  # store hits come fast: redraw four times a second
                self._drawn = now
                self._postfix()
                self._bar.refresh()

    def skip(self, runs: int) -> None:
        """``runs`` expected runs will not happen (an invalid sweep point)."""
        if self._bar is not None and self._bar.total:
            self._bar.total = max(self._bar.total - runs, self.done)
            self._bar.refresh()

    def expect(self, total: int) -> None:
        """Revise the expected number of runs to compute (searches refine their estimate)."""
        if self._bar is not None:
            self._bar.total = max(total, self.done)
            self._bar.refresh()

    def write(self, message: str) -> None:
        """Print a line on stderr without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        """Remove the bar's refresh; leave the final state on screen."""
        if self._bar is not None:
            self._postfix()
            self._bar.close()
            self._bar = None

    def _postfix(self) -> None:
        parts = {}
        if self.reused:
            parts["from store"] = self.reused
        if self.failed:
            parts["failed"] = self.failed
        if parts:
            self._bar.set_postfix(parts, refresh=False)
