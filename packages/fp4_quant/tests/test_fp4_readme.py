"""The README example runs and shows HCP lowering the GEMM error."""

import pathlib
import re


def test_readme_example_runs(capsys):
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    code = re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    plain, patched = (float(v) for v in capsys.readouterr().out.split())
    assert patched < plain
