"""Which Linux this machine runs, as far as CPU scheduling goes: the fair scheduler and the tick.

Two facts decide what the scheduling cases should show on the real kernel:

* **The fair scheduler.** Linux 2.6.23 to 6.5 ran CFS; Linux 6.6 replaced its task placement
  and picking with EEVDF (``kernel/sched/fair.c``; a waking task is placed by its lag, there is
  no sleeper credit). The release from ``uname -r`` says which one runs here.
* **The tick.** CFS bandwidth control accounts a busy loop's runtime at the timer tick, so a
  quota of a few ms overruns by up to a tick unless the ``HRTICK`` scheduler feature is on (it is
  off by default: ``kernel/sched/features.h``). ``CONFIG_HZ`` is read from the kernel's build
  configuration, ``/boot/config-<release>`` or ``/proc/config.gz``; where neither exists it is
  *unknown*, and said so.

Everything here only parses text, so the tests feed it their own strings.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EEVDF_SINCE", "KernelInfo", "fair_scheduler", "hrtick_feature", "hz_from_config",
           "kernel_info"]

#: First Linux release whose fair scheduler is EEVDF (merged for 6.6).
EEVDF_SINCE = (6, 6)

_RELEASE = re.compile(r"^(\d+)\.(\d+)")
_FEATURES = Path("/sys/kernel/debug/sched/features")


def fair_scheduler(release: str) -> str | None:
    """``"eevdf"`` for Linux 6.6 and later, ``"cfs"`` before; ``None``: unreadable release."""
    match = _RELEASE.match(release)
    if not match:
        return None
    return "eevdf" if (int(match.group(1)), int(match.group(2))) >= EEVDF_SINCE else "cfs"


def hz_from_config(text: str) -> int | None:
    """``CONFIG_HZ`` from the text of a kernel ``.config``, or ``None`` if it is not there."""
    match = re.search(r"^CONFIG_HZ=(\d+)\s*$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def hrtick_feature(text: str) -> bool | None:
    """Whether ``HRTICK`` is on in a ``sched/features`` text (``NO_HRTICK`` when off)."""
    words = text.split()
    if "HRTICK" in words:
        return True
    if "NO_HRTICK" in words:
        return False
    return None


@dataclass(frozen=True)
class KernelInfo:
    """What this machine's kernel is, for the scheduling cases.

    Attributes
    ----------
    release:
        ``uname -r``.
    fair:
        ``"eevdf"`` or ``"cfs"`` (``None``: the release could not be read).
    hz:
        ``CONFIG_HZ``, or ``None`` when no build configuration could be read.
    hz_source:
        The file ``hz`` came from, or why it is unknown.
    hrtick:
        Whether the ``HRTICK`` feature is on; ``None`` when ``sched/features`` is unreadable
        (debugfs not mounted), in which case the kernel's default (off) is assumed and said.

    """

    release: str
    fair: str | None
    hz: int | None
    hz_source: str
    hrtick: bool | None

    def describe(self) -> str:
        """One paragraph for the demo's header."""
        fair = {"eevdf": "EEVDF (Linux 6.6 on)", "cfs": "CFS (Linux 2.6.23 to 6.5)"}.get(
            self.fair or "", "unknown (the release could not be read)")
        hz = f"CONFIG_HZ={self.hz} (from {self.hz_source})" if self.hz else \
            f"CONFIG_HZ unknown ({self.hz_source})"
        hrtick = {True: "HRTICK on", False: "HRTICK off"}.get(
            self.hrtick, "HRTICK not readable (debugfs not mounted), off by default")
        return f"Linux {self.release}: fair scheduler {fair}; {hz}; {hrtick}."


def _read_config(release: str) -> tuple[str | None, str]:
    boot = Path(f"/boot/config-{release}")
    try:
        return boot.read_text(encoding="utf-8", errors="replace"), str(boot)
    except OSError:
        pass
    try:
        with gzip.open("/proc/config.gz", "rt", encoding="utf-8", errors="replace") as handle:
            return handle.read(), "/proc/config.gz"
    except OSError:
        return None, f"neither {boot} nor /proc/config.gz exists"


def kernel_info() -> KernelInfo:
    """Read the running kernel's release, build configuration and scheduler features."""
    release = os.uname().release
    config, source = _read_config(release)
    hz = hz_from_config(config) if config is not None else None
    if config is not None and hz is None:
        source = f"{source} has no CONFIG_HZ line"
    try:
        hrtick = hrtick_feature(_FEATURES.read_text(encoding="ascii", errors="replace"))
    except OSError:
        hrtick = None
    return KernelInfo(release=release, fair=fair_scheduler(release), hz=hz, hz_source=source,
                      hrtick=hrtick)
