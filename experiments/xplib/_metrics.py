"""Metrics as JSON lines: one object per logged step, readable by pandas or `jq`."""

import json
import math
import pathlib
import time
from typing import Any


def _plain(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else str(f)


class MetricLogger:
    """Appends `{"step": s, "time": t, **metrics}` to `<workdir>/metrics.jsonl`.

    Appending (not truncating) keeps the history of a run that resumed from a checkpoint.
    """

    def __init__(self, workdir: str | pathlib.Path, filename: str = "metrics.jsonl"):
        self.path = pathlib.Path(workdir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.time()

    def log(self, step: int, **metrics: Any) -> None:
        row = {"step": int(step), "time": round(time.time() - self._t0, 3)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
