"""The README example of the distillation section runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_distill_readme_example_runs(capsys):
    section = README.read_text().split("## 1.5T -> 7T-like SR with progressive distillation")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, str(README), "exec"), {})
    shape, psnr = capsys.readouterr().out.strip().splitlines()[-1].rsplit(" ", 1)
    assert shape == "(1, 32, 32)"
    assert 10.0 < float(psnr) < 40.0
