"""Experiment discovery: a folder under experiments/ with main.py and config.py is registered.

config.py must define `PAPER` (the paper's name and arXiv id) and `get_config(arg)` with the
presets `smoke`, `small` and `full`. `ORDER` (an int, default 100) sorts the report.
"""

import ast
import dataclasses
import pathlib

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    folder: pathlib.Path
    paper: str
    order: int

    @property
    def main(self) -> pathlib.Path:
        return self.folder / "main.py"

    @property
    def config(self) -> pathlib.Path:
        return self.folder / "config.py"


def _module_constants(path: pathlib.Path) -> dict[str, object]:
    """Read top-level literal assignments without importing (importing would pull in jax)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    out[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


def discover(root: pathlib.Path = EXPERIMENTS_DIR) -> list[Experiment]:
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not ((folder / "main.py").is_file() and (folder / "config.py").is_file()):
            continue
        consts = _module_constants(folder / "config.py")
        if "PAPER" not in consts:
            raise ValueError(f"{folder / 'config.py'}: registered experiments must define PAPER")
        found.append(
            Experiment(folder.name, folder, str(consts["PAPER"]), int(consts.get("ORDER", 100)))
        )
    return sorted(found, key=lambda e: (e.order, e.name))
