"""The KGS-GCN experiment's robustness sets degrade the X-Sub test sequences themselves
(`Data.degraded_xsub_test`, session 10): every level of a curve is the same sequences, with
the same labels, degraded more. A fresh draw of test sequences per level (the bug it fixed)
would fail every check below."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
KGS = EXPERIMENTS / "kgs_gcn"


@pytest.fixture(scope="module")
def data():
    sys.path[:0] = [str(KGS), str(EXPERIMENTS)]
    try:
        mods = {}
        for name in ("config", "train"):  # unique names: other experiments have these files
            spec = importlib.util.spec_from_file_location(f"kgs_gcn_{name}", KGS / f"{name}.py")
            mods[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mods[name])
        return mods["train"].Data(mods["config"].get_config("smoke"))
    finally:
        del sys.path[:2]


def test_clean_level_is_the_xsub_test_set(data):
    x0, y0 = data.degraded_xsub_test("noise", 0.0)
    te = data.splits["xsub"][1]
    np.testing.assert_array_equal(x0, te.x)
    np.testing.assert_array_equal(y0, te.label)
    np.testing.assert_allclose(data._centre(data.raw_xsub_test), te.x, atol=1e-6)


def _offset(x, clean):
    """Per sequence, the translation between a degraded copy and its clean sequence (centring
    subtracts the first observed spine joint, which a degradation may move): the median of
    their differences over the entries both observe."""
    both = (np.abs(x).sum(1, keepdims=True) > 0) & (np.abs(clean).sum(1, keepdims=True) > 0)
    diff = np.where(both, x - clean, np.nan)
    return np.nanmedian(diff.reshape(len(x), 3, -1), -1)[:, :, None, None, None]


def test_dropout_levels_zero_nested_entries_of_the_same_sequences(data):
    """Every kept (frame, joint) is the clean one, moved by one translation per sequence, and
    the entries dropped at 0.2 are also dropped at 0.4: one key, the same sequences."""
    clean, labels = data.degraded_xsub_test("dropout", 0.0)
    dropped = []
    for level in (0.2, 0.4):
        x, y = data.degraded_xsub_test("dropout", level)
        np.testing.assert_array_equal(y, labels)
        kept = np.abs(x).sum(1, keepdims=True) > 0
        moved = np.broadcast_to(clean + _offset(x, clean), x.shape)
        np.testing.assert_allclose(
            x[np.broadcast_to(kept, x.shape)], moved[np.broadcast_to(kept, x.shape)], atol=1e-5
        )
        dropped.append(~kept & (np.abs(clean).sum(1, keepdims=True) > 0))
    assert 0.1 < dropped[0].mean() < dropped[1].mean()
    assert not (dropped[0] & ~dropped[1]).any()


def test_sparsity_levels_hold_earlier_frames_of_the_same_sequences(data):
    """A lost frame repeats an earlier frame of the same clean sequence (sample-and-hold);
    the frames lost at 0.5 are also lost at 0.75."""
    clean, labels = data.degraded_xsub_test("sparsity", 0.0)
    lost = []
    for level in (0.5, 0.75):
        x, y = data.degraded_xsub_test("sparsity", level)
        np.testing.assert_array_equal(y, labels)
        t = clean.shape[2]  # frame 0 is always kept: the centring origin does not move
        # err[n, t, s]: how far degraded frame t is from clean frame s of the same sequence
        err = np.abs(x[:, :, :, None] - clean[:, :, None]).max((1, 4, 5))
        source = err.argmin(-1)
        assert (err.min(-1) < 1e-4).all() and (source <= np.arange(t)).all()
        lost.append(source != np.arange(t))
    assert 0.2 < lost[0].mean() < lost[1].mean()
    assert not (lost[0] & ~lost[1]).any()


def test_noise_levels_scale_one_draw(data):
    """One key per kind: the added noise at 0.08 m is exactly twice that at 0.04 m."""
    clean = data.degraded_xsub_test("noise", 0.0)[0]
    d1 = data.degraded_xsub_test("noise", 0.04)[0] - clean
    d2 = data.degraded_xsub_test("noise", 0.08)[0] - clean
    assert np.abs(d1).mean() > 0.01
    np.testing.assert_allclose(d2, 2 * d1, atol=1e-4)
