"""The results.json schema: what an experiment hands to the report.

An experiment ends with `write_results(workdir, ...)`. `reproduce` reads every results.json and
renders one report section from it, so the schema is the contract between the two:

- `claims`: the headline comparisons, each our method beside its baseline (same run, medians
  over seeds) and the paper's number quoted as text, never replaced by ours;
- `tables`: any further tables (ablations, sweeps);
- `figures`: PNG file names inside the workdir.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import platform
from typing import Any


@dataclasses.dataclass(frozen=True)
class Claim:
    """One headline comparison: `ours` vs `baseline` on `metric`, beside the paper's `paper`."""

    claim: str
    metric: str
    ours: float | str
    baseline: float | str
    paper: str
    baseline_name: str = "baseline"
    better: str = "higher"  # or "lower": which direction of `metric` is better


@dataclasses.dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


def machine_info() -> dict[str, Any]:
    """CPU model and core count, so every number names the machine that produced it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
    }


def write_results(
    workdir: str | pathlib.Path,
    *,
    experiment: str,
    paper: str,
    preset: str,
    claims: list[Claim],
    tables: list[Table] = (),
    figures: list[str] = (),
    notes: str = "",
    extra: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Write `<workdir>/results.json`; returns its path."""
    if not claims:
        raise ValueError("claims: an experiment must report at least one comparison")
    for fig in figures:
        if not (pathlib.Path(workdir) / fig).is_file():
            raise ValueError(f"figures: {fig!r} is not a file in {workdir}")
    payload = {
        "experiment": experiment,
        "paper": paper,
        "preset": preset,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "claims": [dataclasses.asdict(c) for c in claims],
        "tables": [dataclasses.asdict(t) for t in tables],
        "figures": list(figures),
        "notes": notes,
        "extra": extra or {},
    }
    path = pathlib.Path(workdir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
