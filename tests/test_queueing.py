"""The analytic formulas agree with each other and with textbook values."""

import math

import pytest

from virtlab import queueing


def test_mm1_textbook_values():
    result = queueing.mm1(lam=0.5, mu=1.0)
    assert result["rho"] == 0.5
    assert result["W"] == pytest.approx(2.0)
    assert result["L"] == pytest.approx(1.0)


def test_md1_waits_half_as_long_as_mm1():
    lam, mu = 0.7, 1.0
    assert queueing.md1(lam, 1 / mu)["Wq"] == pytest.approx(queueing.mm1(lam, mu)["Wq"] / 2)


def test_mg1_with_exponential_moments_is_mm1():
    lam, mean = 0.6, 1.0
    assert queueing.mg1(lam, mean, 2 * mean**2)["W"] == pytest.approx(queueing.mm1(lam, 1)["W"])


def test_mmc_with_one_server_is_mm1_and_erlang_c_is_rho():
    assert queueing.erlang_c(1, 0.4) == pytest.approx(0.4)
    assert queueing.mmc(0.4, 1.0, 1)["W"] == pytest.approx(queueing.mm1(0.4, 1.0)["W"])


def test_erlang_c_known_value():
    # c = 2 servers, offered load a = 1 Erlang: C = 1/3 (standard table value).
    assert queueing.erlang_c(2, 1.0) == pytest.approx(1 / 3)


def test_unstable_queue_is_rejected():
    with pytest.raises(ValueError, match="unstable"):
        queueing.mm1(1.0, 1.0)


def test_littles_law():
    assert queueing.littles_law_n(2.0, 3.0) == 6.0
    with pytest.raises(ValueError):
        queueing.littles_law_n(1.0, math.nan)
