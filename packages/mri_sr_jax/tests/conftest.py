"""mri_sr_jax's tests of its own argument errors run with jaxtyping's checks off (the root
conftest's `shape_checks_off`): with the checks on, jaxtyping rejects these wrong inputs
before the library's check can say what was wrong.
"""

import pytest

SHAPE_CHECKS_OFF = {
    "test_bad_inputs_name_the_argument",
    "test_metric_errors_name_the_argument",
}


@pytest.fixture(autouse=True)
def _library_errors_unchecked(request):
    if request.node.originalname in SHAPE_CHECKS_OFF:
        request.getfixturevalue("shape_checks_off")
