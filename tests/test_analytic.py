"""Analytic validation: the model reduced to a single queue agrees with queueing theory.

Each test simulates R independent replications of Poisson block reads into a disk reduced to
one (or c) servers with every CPU cost zero, so the request latency is the queue's response
time. The analytic value must lie inside the replications' 99.9 % t-confidence interval, and
the same interval must *reject* the analytic value for a service rate 10 % off (a power check:
the tolerance is not vacuous).
"""

from __future__ import annotations

import pytest

from tests.helpers import interface_us, open_loop_disk_scenario
from virtlab import queueing, run
from virtlab.stats import mean_ci

pytestmark = pytest.mark.slow

REPLICATIONS = 8
CONFIDENCE = 0.999
MEAN_ACCESS_US = 10.0
RATE_PER_S = 70_000.0  # rho = 0.7 with a 10 µs service
BLOCK = 512


def _replicate(cv: float, channels: int = 1, rate_per_s: float = RATE_PER_S):
    scenario = open_loop_disk_scenario(rate_per_s, MEAN_ACCESS_US, cv, channels=channels)
    responses, utilisations = [], []
    for replication in range(REPLICATIONS):
        result = run(scenario, seed=11, replication=replication)
        (summary,) = result.summaries
        responses.append(summary.latency_mean_us)
        utilisations.append(result.device_busy_us["disk"] / (channels * result.sim_now_us))
    return mean_ci(responses, CONFIDENCE), mean_ci(utilisations, CONFIDENCE)


def _assert_inside(name: str, analytic: float, mean: float, half: float) -> None:
    assert abs(mean - analytic) <= half, (
        f"{name}: analytic {analytic:.4f} outside simulated {mean:.4f} ± {half:.4f}")


def _assert_rejected(name: str, wrong: float, mean: float, half: float) -> None:
    assert abs(mean - wrong) > half, (
        f"{name}: a 10 % wrong service rate ({wrong:.4f}) is not rejected by "
        f"{mean:.4f} ± {half:.4f}; the test has no power")


def _service_moments(cv: float) -> tuple[float, float]:
    """E[S] and E[S^2] of access (mean a, given cv) plus the constant interface time c."""
    a, c = MEAN_ACCESS_US, interface_us(BLOCK)
    var_a = (cv * a) ** 2
    return a + c, var_a + (a + c) ** 2


def test_mm1_response_time_and_utilisation():
    (w_mean, w_half), (u_mean, u_half) = _replicate(cv=1.0)
    lam = RATE_PER_S / 1e6
    mean_s, _ = _service_moments(1.0)
    analytic = queueing.mm1(lam, 1.0 / mean_s)
    _assert_inside("M/M/1 W", analytic["W"], w_mean, w_half)
    _assert_inside("M/M/1 rho", analytic["rho"], u_mean, u_half)
    _assert_rejected("M/M/1 W", queueing.mm1(lam, 1.1 / mean_s)["W"], w_mean, w_half)
    _assert_rejected("M/M/1 W", queueing.mm1(lam, 0.9 / mean_s)["W"], w_mean, w_half)


def test_md1_response_time():
    (w_mean, w_half), (u_mean, u_half) = _replicate(cv=0.0)
    lam = RATE_PER_S / 1e6
    mean_s, _ = _service_moments(0.0)
    _assert_inside("M/D/1 W", queueing.md1(lam, mean_s)["W"], w_mean, w_half)
    _assert_inside("M/D/1 rho", lam * mean_s, u_mean, u_half)
    _assert_rejected("M/D/1 W", queueing.md1(lam, mean_s / 1.1)["W"], w_mean, w_half)


def test_mg1_pollaczek_khinchine_response_time():
    cv = 0.5  # gamma-distributed access times
    (w_mean, w_half), _ = _replicate(cv=cv)
    lam = RATE_PER_S / 1e6
    mean_s, second = _service_moments(cv)
    _assert_inside("M/G/1 W", queueing.mg1(lam, mean_s, second)["W"], w_mean, w_half)
    wrong_mean = mean_s / 1.1
    wrong_second = second / 1.1**2
    _assert_rejected("M/G/1 W", queueing.mg1(lam, wrong_mean, wrong_second)["W"], w_mean,
                     w_half)


def test_mmc_erlang_c_response_time():
    channels = 4
    rate = 0.75 * channels * 1e6 / MEAN_ACCESS_US
    (w_mean, w_half), (u_mean, u_half) = _replicate(cv=1.0, channels=channels, rate_per_s=rate)
    lam = rate / 1e6
    mean_s, _ = _service_moments(1.0)
    analytic = queueing.mmc(lam, 1.0 / mean_s, channels)
    _assert_inside("M/M/4 W", analytic["W"], w_mean, w_half)
    _assert_inside("M/M/4 rho", analytic["rho"], u_mean, u_half)
    _assert_rejected("M/M/4 W", queueing.mmc(lam, 1.1 / mean_s, channels)["W"], w_mean, w_half)
