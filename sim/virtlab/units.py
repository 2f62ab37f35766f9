"""Units used throughout virtlab.

Simulated time is a ``float`` in **microseconds (µs)**. Every quantity carries its unit in its
name (``exit_cost_us``, ``line_rate_gbps``, ``rate_per_s``); the helpers here are the only place
where units are converted, so a reader can check each conversion once.
"""

from __future__ import annotations

__all__ = [
    "US_PER_MS",
    "US_PER_S",
    "bytes_per_us_from_gbps",
    "bytes_per_us_from_gbytes_per_s",
    "bytes_per_us_from_mbytes_per_s",
    "cycles_to_us",
    "per_us_from_per_s",
]

US_PER_MS = 1_000.0
US_PER_S = 1_000_000.0


def cycles_to_us(cycles: float, cpu_ghz: float) -> float:
    """Convert CPU cycles to µs at a clock of ``cpu_ghz`` (1 GHz = 1,000 cycles per µs)."""
    return cycles / (cpu_ghz * 1_000.0)


def bytes_per_us_from_gbps(gbps: float) -> float:
    """Convert a line rate in Gbit/s to bytes per µs (10 Gbit/s = 1,250 bytes/µs)."""
    return gbps * 1e9 / 8.0 / US_PER_S


def bytes_per_us_from_gbytes_per_s(gbytes_per_s: float) -> float:
    """Convert GB/s (10^9 bytes/s) to bytes per µs (1 GB/s = 1,000 bytes/µs)."""
    return gbytes_per_s * 1_000.0


def bytes_per_us_from_mbytes_per_s(mbytes_per_s: float) -> float:
    """Convert MB/s (10^6 bytes/s) to bytes per µs (1 MB/s = 1 byte/µs)."""
    return mbytes_per_s * 1e6 / US_PER_S


def per_us_from_per_s(rate_per_s: float) -> float:
    """Convert a rate per second to a rate per µs."""
    return rate_per_s / US_PER_S
