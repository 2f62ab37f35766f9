"""Shared test configuration.

Hypothesis runs derandomized in CI (``HYPOTHESIS_PROFILE=ci``, set by ``.ci/run``) so that a
run is repeatable; locally the default profile keeps randomised search.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
