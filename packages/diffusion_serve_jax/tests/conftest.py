"""diffusion_serve_jax's tests of its own argument errors run with jaxtyping's checks off (the root
conftest's `shape_checks_off`): with the checks on, jaxtyping rejects these wrong inputs before the
library's check can say what was wrong.

`ServingRuntime.__init__` alone is not checked: `executors: Mapping[str, NodeExecutor]` is what it
says for local executors, but the Ray backend passes `ActorGroup`s, which quack like a
`NodeExecutor` without being one; saying so needs a Protocol both satisfy (not an annotation-only
change, and `_ray_backend` imports `_runtime`, so the union cannot name `ActorGroup`). Nor is
`ddim_sample`, for the same reason: `dit: DiT` is also given a `SequenceParallelDiT`, which
`_diffusion` cannot name (`_seq_parallel` imports it); `guided_eps` likewise.

Ray pickles the zoo's model functions by value, and jaxtyping's wrapper around each holds a weak
reference to itself, which plain pickle refuses; the reducer below pickles that reference as a
reference to the (pickled) wrapper, so the checked functions travel to Ray workers.
"""

import copyreg
import weakref

import pytest

from diffusion_serve_jax import _diffusion, _runtime

for _fn in (_runtime.ServingRuntime.__init__, _diffusion.ddim_sample, _diffusion.guided_eps):
    _fn.__no_type_check__ = True  # read by jaxtyping's wrapper at every call


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
