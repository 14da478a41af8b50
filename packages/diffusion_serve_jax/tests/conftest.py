"""diffusion_serve_jax's tests of its own argument errors run with jaxtyping's checks off (the root
conftest's `shape_checks_off`): with the checks on, jaxtyping rejects these wrong inputs before the
library's check can say what was wrong.

Ray pickles the zoo's model functions by value, and jaxtyping's wrapper around each holds a weak
reference to itself, which plain pickle refuses; the reducer below pickles that reference as a
reference to the (pickled) wrapper, so the checked functions travel to Ray workers.
"""

import copyreg
import weakref

import pytest


def _reduce_weakref(ref):
    return weakref.ref, (ref(),)


copyreg.pickle(weakref.ReferenceType, _reduce_weakref)

SHAPE_CHECKS_OFF = {
    "test_cache_attention_bad_inputs",
}


@pytest.fixture(autouse=True)
def _library_errors_unchecked(request):
    if request.node.originalname in SHAPE_CHECKS_OFF:
        request.getfixturevalue("shape_checks_off")
