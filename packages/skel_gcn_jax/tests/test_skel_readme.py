"""The README example runs as written."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    exec(compile(code, str(README), "exec"), {})
    shape, loss = capsys.readouterr().out.strip().rsplit(")", 1)
    assert shape.startswith("(8, 4, 3, 5, 4, 4") and np.isfinite(float(loss))
