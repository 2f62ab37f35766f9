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

    __slots__ = ("name", "generator", "_exp", "_uni", "_gamma", "_gamma_shape")

    def __init__(self, name: str, generator: np.random.Generator) -> None:
        self.name = name
        self.generator = generator
        # Blocks are held as Python lists consumed from the end (reversed once per refill):
        # popping a float off a list is several times cheaper than indexing a numpy array.
        self._exp: list[float] = []
        self._uni: list[float] = []
        self._gamma: list[float] = []
        self._gamma_shape = 0.0

    def exponential(self, mean: float) -> float:
        """Draw one exponential variate with the given mean."""
        block = self._exp
        if not block:
            block = self._exp = self.generator.standard_exponential(_BLOCK)[::-1].tolist()
        return block.pop() * mean

    def uniform(self) -> float:
        """Draw one uniform variate on [0, 1)."""
        block = self._uni
        if not block:
            block = self._uni = self.generator.random(_BLOCK)[::-1].tolist()
        return block.pop()

    def gamma(self, mean: float, cv: float) -> float:
        """Draw a gamma variate with the given mean and coefficient of variation (cv > 0).

        Standard gamma variates of one shape are drawn in blocks, like the others; a stream
        asked for another shape drops what is left of its block (numpy draws a block exactly
        as it would draw the same variates one at a time).
        """
        shape = 1.0 / (cv * cv)
        block = self._gamma
        if not block or shape != self._gamma_shape:
            block = self._gamma = self.generator.standard_gamma(shape, _BLOCK)[::-1].tolist()
            self._gamma_shape = shape
        return block.pop() * (mean / shape)


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
