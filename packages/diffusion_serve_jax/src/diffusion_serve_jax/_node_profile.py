"""Per-node profiles as a JSON file: what the simulator is calibrated on.

A profile records, for every model, the median seconds of one batch at each bucketed batch
size, the parameter bytes and the load time (orbax restore from local disk, onto the
device), plus the device and JAX version it was measured on. `benchmarks/profile_nodes.py`
writes one on any backend; `load_node_profile` reads it back and checks every field, so
that a simulation calibrated on it cannot silently miss a model or a batch size.

    {"format": "diffusion_serve_jax.node_profile/1", "device_kind": "...", "backend": "gpu",
     "jax_version": "...", "weights": "...", "buckets": [1, 4, 16],
     "models": {"encoder": {"latency_s": {"1": 1e-4, ...}, "param_bytes": 1234,
                            "restore_s": 0.01, "device_put_s": 0.001}, ...}}
"""

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

FORMAT = "diffusion_serve_jax.node_profile/1"


class NodeProfile(NamedTuple):
    latency_s: dict[str, dict[int, float]]  # model -> bucket -> seconds per batch
    param_bytes: dict[str, int]
    load_s: dict[str, float]  # orbax restore onto the device (the simulator's load time)
    device_put_s: dict[str, float]  # host -> device copy of the parameters alone
    meta: dict[str, Any]  # format, device_kind, backend, jax_version, weights, buckets, ...


def node_profile_json(profile: NodeProfile) -> dict:
    """The JSON object of a profile (`save`/`load_node_profile` round-trip it)."""
    models = {
        m: {
            "latency_s": {str(b): float(t) for b, t in sorted(lat.items())},
            "param_bytes": int(profile.param_bytes[m]),
            "restore_s": float(profile.load_s[m]),
            "device_put_s": float(profile.device_put_s[m]),
        }
        for m, lat in sorted(profile.latency_s.items())
    }
    return {**profile.meta, "format": FORMAT, "models": models}


def save_node_profile(path: str, profile: NodeProfile) -> None:
    with open(path, "w") as f:
        json.dump(node_profile_json(profile), f, indent=1, sort_keys=True)


def _number(value, field: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field}: expected a number, got {value!r}")
    if not (value > 0 if positive else value >= 0) or value != value:
        raise ValueError(
            f"{field}: expected a {'positive' if positive else 'non-negative'} "
            f"number, got {value!r}"
        )
    return float(value)


def parse_node_profile(obj: Mapping) -> NodeProfile:
    """Validate a profile's JSON object; errors name the offending field."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"profile: expected a JSON object, got {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        raise ValueError(f"format: expected {FORMAT!r}, got {obj.get('format')!r}")
    for key in ("device_kind", "jax_version", "weights"):
        if not isinstance(obj.get(key), str):
            raise ValueError(f"{key}: expected a string, got {obj.get(key)!r}")
    buckets = obj.get("buckets")
    if (
        not isinstance(buckets, list)
        or not buckets
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in buckets)
    ):
        raise ValueError(f"buckets: expected a non-empty list of positive ints, got {buckets!r}")
    models = obj.get("models")
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models: expected a non-empty object of models, got {models!r}")
    lat, size, load, put = {}, {}, {}, {}
    for m, rec in models.items():
        f = f"models.{m}"
        if not isinstance(rec, Mapping):
            raise ValueError(f"{f}: expected an object, got {rec!r}")
        for key in ("latency_s", "param_bytes", "restore_s", "device_put_s"):
            if key not in rec:
                raise ValueError(f"{f}.{key}: missing")
        ls = rec["latency_s"]
        if not isinstance(ls, Mapping) or sorted(ls) != sorted(str(b) for b in buckets):
            raise ValueError(
                f"{f}.latency_s: expected one entry per bucket {buckets}, got "
                f"{sorted(ls) if isinstance(ls, Mapping) else ls!r}"
            )
        lat[m] = {int(b): _number(t, f"{f}.latency_s.{b}", positive=True) for b, t in ls.items()}
        size[m] = int(_number(rec["param_bytes"], f"{f}.param_bytes", positive=False))
        load[m] = _number(rec["restore_s"], f"{f}.restore_s", positive=True)
        put[m] = _number(rec["device_put_s"], f"{f}.device_put_s", positive=False)
    meta = {k: v for k, v in obj.items() if k != "models"}
    return NodeProfile(lat, size, load, put, meta)


def load_node_profile(path: str) -> NodeProfile:
    """Read and validate a profile file (ValueError naming the field if it is malformed)."""
    with open(path) as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"path: {path!r} is not valid JSON ({e})") from e
    return parse_node_profile(obj)
