"""grad_compress's tests of its own argument errors run with jaxtyping's checks off (the root
conftest's `shape_checks_off`): with the checks on, jaxtyping rejects these wrong inputs before the
library's check can say what was wrong.

`gpipe` alone is not checked for now: its `entropy_scale: Scalar | None` rejects the Python float
(0.0) its callers pass. The annotation fix belongs in `_pipeline.py`, which another change is
editing; drop the two lines below once `entropy_scale` also accepts a float.
"""

import pytest

from grad_compress import _pipeline

_pipeline.gpipe.__no_type_check__ = True  # read by jaxtyping's wrapper at every call

SHAPE_CHECKS_OFF: set[str] = set()


@pytest.fixture(autouse=True)
def _library_errors_unchecked(request):
    if request.node.originalname in SHAPE_CHECKS_OFF:
        request.getfixturevalue("shape_checks_off")
