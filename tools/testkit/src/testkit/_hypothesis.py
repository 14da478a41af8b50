"""The derandomised hypothesis profile every package's property tests run under.

JAX recompiles for each new shape, so property tests draw values, not shapes, from a small
fixed set of shapes; few examples and no deadline keep the suite fast and repeatable.
"""

from hypothesis import HealthCheck, settings

CI_PROFILE = "jax-ci"

settings.register_profile(
    CI_PROFILE,
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "jax-dev",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
