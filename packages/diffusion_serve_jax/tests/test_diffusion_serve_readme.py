"""The README's example runs as written (a real HTTP round trip on localhost)."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    status, probs = out.getvalue().split(" ", 1)
    assert status == "200"
    assert abs(sum(float(p) for p in probs.strip("[]\n").split(",")) - 1.0) < 1e-4
