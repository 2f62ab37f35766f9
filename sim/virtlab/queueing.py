"""Analytic queueing results: the single source of formulas for tests and labs.

Notation: arrival rate ``lam`` and service rate ``mu`` in the same time unit (e.g. per µs),
``rho = lam / mu`` (per server), mean response time ``W = Wq + E[S]``.
"""

from __future__ import annotations

import math

__all__ = ["mm1", "md1", "mg1", "mmc", "erlang_c", "littles_law_n"]


def _check_stable(rho: float) -> None:
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"the queue is unstable: utilisation rho = {rho:.4f} must be in [0, 1)")


def mm1(lam: float, mu: float) -> dict[str, float]:
    """M/M/1: utilisation, mean number in system, mean waiting and response time.

    ``W = 1 / (mu - lam)``, ``Wq = rho / (mu - lam)``, ``L = rho / (1 - rho)``.
    """
    rho = lam / mu
    _check_stable(rho)
    w = 1.0 / (mu - lam)
    return {"rho": rho, "W": w, "Wq": w - 1.0 / mu, "L": rho / (1.0 - rho)}


def mg1(lam: float, mean_s: float, second_moment_s: float) -> dict[str, float]:
    """M/G/1 by Pollaczek-Khinchine: ``Wq = lam E[S^2] / (2 (1 - rho))``, ``W = Wq + E[S]``."""
    rho = lam * mean_s
    _check_stable(rho)
    wq = lam * second_moment_s / (2.0 * (1.0 - rho))
    w = wq + mean_s
    return {"rho": rho, "W": w, "Wq": wq, "L": lam * w}


def md1(lam: float, service: float) -> dict[str, float]:
    """M/D/1: Pollaczek-Khinchine with ``E[S^2] = service^2``."""
    return mg1(lam, service, service * service)


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in M/M/c (Erlang C), ``offered_load = lam / mu``."""
    if servers < 1:
        raise ValueError(f"servers must be >= 1, got {servers}")
    rho = offered_load / servers
    _check_stable(rho)
    term = 1.0
    total = 1.0
    for k in range(1, servers):
        term *= offered_load / k
        total += term
    last = term * offered_load / servers / (1.0 - rho)
    return last / (total + last)


def mmc(lam: float, mu: float, servers: int) -> dict[str, float]:
    """M/M/c: ``Wq = C(c, a) / (c mu - lam)`` with Erlang C, ``W = Wq + 1/mu``."""
    a = lam / mu
    pw = erlang_c(servers, a)
    wq = pw / (servers * mu - lam)
    w = wq + 1.0 / mu
    return {"rho": a / servers, "W": w, "Wq": wq, "L": lam * w, "P_wait": pw}


def littles_law_n(lam: float, w: float) -> float:
    """Little's law: mean number in system ``L = lam W``."""
    if lam < 0 or w < 0 or math.isnan(w):
        raise ValueError("lam and W must be non-negative numbers")
    return lam * w
