"""Named, independent random streams derived from one root seed.

There is no global random state in virtlab. A run owns one :class:`Streams`; each stochastic
source asks it for a stream by *name* (``"net.rr.arrivals"``, ``"host.disk.service"``). The
stream's seed is ``SeedSequence(entropy=root_seed, spawn_key=(replication, *crc32(name)))``, so

* the same ``(seed, replication, name)`` always gives the same numbers;
* adding a new source never shifts the numbers of an existing one;
* two runs that differ only in the I/O path see the *same* arrivals and sizes
  (common random numbers), because stream names never mention the path.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["Streams", "Stream"]

_BLOCK = 1024  # variates drawn per refill; drawing in blocks keeps per-event cost low


class Stream:
    """One named stream of variates with buffered draws.

    Buffering changes no values: a block of standard exponentials (or uniforms) is drawn from the
    stream's own generator, and consumed in order.
    """

    __slots__ = ("name", "generator", "_exp", "_exp_i", "_uni", "_uni_i")

    def __init__(self, name: str, generator: np.random.Generator) -> None:
        self.name = name
        self.generator = generator
        self._exp = np.empty(0)
        self._exp_i = 0
        self._uni = np.empty(0)
        self._uni_i = 0

    def exponential(self, mean: float) -> float:
        """Draw one exponential variate with the given mean."""
        if self._exp_i >= len(self._exp):
            self._exp = self.generator.standard_exponential(_BLOCK)
            self._exp_i = 0
        value = self._exp[self._exp_i]
        self._exp_i += 1
        return float(value) * mean

    def uniform(self) -> float:
        """Draw one uniform variate on [0, 1)."""
        if self._uni_i >= len(self._uni):
            self._uni = self.generator.random(_BLOCK)
            self._uni_i = 0
        value = self._uni[self._uni_i]
        self._uni_i += 1
        return float(value)

    def gamma(self, mean: float, cv: float) -> float:
        """Draw a gamma variate with the given mean and coefficient of variation (cv > 0)."""
        shape = 1.0 / (cv * cv)
        return float(self.generator.gamma(shape, mean / shape))


class Streams:
    """Factory of named streams for one run.

    Parameters
    ----------
    seed:
        Root seed of the run (non-negative integer).
    replication:
        Replication index; replication ``r`` of every approach uses the same streams.

    """

    def __init__(self, seed: int, replication: int = 0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed = seed
        self.replication = replication
        self._streams: dict[str, Stream] = {}

    def get(self, name: str) -> Stream:
        """Return the stream called ``name``, creating it on first use."""
        stream = self._streams.get(name)
        if stream is None:
            key = (self.replication, zlib.crc32(name.encode("utf-8")))
            sequence = np.random.SeedSequence(entropy=self.seed, spawn_key=key)
            stream = Stream(name, np.random.Generator(np.random.PCG64(sequence)))
            self._streams[name] = stream
        return stream

    @property
    def names(self) -> list[str]:
        """Names of the streams used so far, sorted."""
        return sorted(self._streams)
