"""The README example runs as written."""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    code, pipeline = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[:2]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    nbytes, seconds = (float(v) for v in out.getvalue().split())
    assert nbytes == 2 * (64 + 96) * 4 + 96 * 4  # rank-2 P and Q plus the bias
    assert seconds > 0
    scope, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(pipeline, str(README), "exec"), scope)
    h = scope["x"]
    for s in range(4):
        h = np.tanh(np.asarray(h) @ np.asarray(scope["w"][s]))
    assert float(out.getvalue()) == pytest.approx(float(np.sum(h**2)), rel=1e-5)
