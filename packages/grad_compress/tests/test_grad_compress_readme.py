"""The README example runs as written."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    nbytes, seconds = (float(v) for v in out.getvalue().split())
    assert nbytes == 2 * (64 + 96) * 4 + 96 * 4  # rank-2 P and Q plus the bias
    assert seconds > 0
