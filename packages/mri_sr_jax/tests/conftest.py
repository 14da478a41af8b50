"""mri_sr_jax's tests of its own argument errors run with jaxtyping's checks off (the root
conftest's `shape_checks_off`): with the checks on, jaxtyping rejects these wrong inputs
before the library's check can say what was wrong.

`sample_sr` and `sample_sr_reference` are not checked for now: their `cond: Channels` says
(batch, height, width, channels), but they are given one slice's (height, width, channels). The
fix belongs in `_distill.py`, which another change is editing; drop the lines below with it.
"""

import pytest

from mri_sr_jax import _distill

for _fn in (_distill.sample_sr, _distill.sample_sr_reference):
    _fn.__no_type_check__ = True  # read by jaxtyping's wrapper at every call

SHAPE_CHECKS_OFF = {
    "test_bad_inputs_name_the_argument",
    "test_metric_errors_name_the_argument",
}


@pytest.fixture(autouse=True)
def _library_errors_unchecked(request):
    if request.node.originalname in SHAPE_CHECKS_OFF:
        request.getfixturevalue("shape_checks_off")
