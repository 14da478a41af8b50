"""Node profile files: round trip, and malformed files rejected naming the field."""

import json

import pytest

import diffusion_serve_jax as ds


def _profile():
    return ds.NodeProfile(
        latency_s={"enc": {1: 1e-4, 4: 2e-4}, "den": {1: 0.02, 4: 0.03}},
        param_bytes={"enc": 100, "den": 4000},
        load_s={"enc": 0.01, "den": 0.05},
        device_put_s={"enc": 0.0, "den": 0.001},
        meta={"device_kind": "cpu", "jax_version": "0", "weights": "fresh", "buckets": [1, 4]},
    )


def test_node_profile_round_trip(tmp_path):
    path = str(tmp_path / "p.json")
    ds.save_node_profile(path, _profile())
    got = ds.load_node_profile(path)
    want = _profile()
    assert got.latency_s == want.latency_s
    assert got.param_bytes == want.param_bytes
    assert got.load_s == want.load_s
    assert got.device_put_s == want.device_put_s
    assert (
        got.meta["device_kind"] == "cpu"
        and got.meta["format"] == ds.node_profile_json(want)["format"]
    )


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda o: o["models"]["den"].pop("restore_s"), "models.den.restore_s"),
        (lambda o: o["models"]["enc"]["latency_s"].pop("4"), "models.enc.latency_s"),
        (lambda o: o["models"]["den"]["latency_s"].update({"1": -1.0}), "models.den.latency_s.1"),
        (lambda o: o["models"]["enc"].update(param_bytes="big"), "models.enc.param_bytes"),
        (lambda o: o.update(buckets=[]), "buckets"),
        (lambda o: o.update(format="other/2"), "format"),
        (lambda o: o.pop("device_kind"), "device_kind"),
        (lambda o: o.update(models={}), "models"),
    ],
)
def test_node_profile_rejects_malformed(tmp_path, edit, field):
    obj = ds.node_profile_json(_profile())
    edit(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=f"^{field.replace('.', '[.]')}:"):
        ds.load_node_profile(str(path))


def test_node_profile_rejects_non_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="^path:"):
        ds.load_node_profile(str(path))
