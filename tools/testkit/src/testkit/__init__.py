"""Helpers shared by every package's tests: pytree comparison and hypothesis settings."""

from ._hypothesis import CI_PROFILE as CI_PROFILE
from ._trees import assert_trees_close as assert_trees_close
