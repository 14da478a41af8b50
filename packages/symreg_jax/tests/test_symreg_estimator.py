"""The scikit-learn style estimator and the README example."""

import pathlib
import re

import numpy as np
import pytest

import symreg_jax as sr

# The same settings as the README example, so both share one compilation.
KW = dict(
    population_size=32,
    generations=6,
    max_length=16,
    operators=("add", "sub", "mul", "sin"),
    online_every=3,
    online_steps=10,
    model_dim=16,
    model_depth=1,
)


def test_fit_predict_score_export_save_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (20, 1)).astype(np.float32)
    y = np.stack([x[:, 0] ** 2 + x[:, 0], np.sin(x[:, 0]) * 2], axis=1)
    est = sr.GESRRegressor(**KW, random_state=3).fit(x, y)
    pred = est.predict(x)
    assert pred.shape == (20, 2)
    np.testing.assert_allclose(pred[:, 1], est.predict_reference(x, 1), rtol=1e-4, atol=1e-5)
    assert est.score(x, y) > -1e3
    assert est.latex(0) and est.sympy(1) is not None
    front = est.pareto_front(0)
    assert [p["length"] for p in front] == sorted(p["length"] for p in front)
    assert all(a["nmse"] > b["nmse"] for a, b in zip(front, front[1:], strict=False))
    again = sr.GESRRegressor(**KW, random_state=3).fit(x, y)  # deterministic seeding
    np.testing.assert_array_equal(again.predict(x), pred)
    est.save(tmp_path / "model")
    loaded = sr.GESRRegressor.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(x), pred)
    assert loaded.get_params()["population_size"] == 32
    assert est.set_params(generations=2).generations == 2


def test_bad_inputs_raise():
    est = sr.GESRRegressor(**KW)
    x = np.zeros((8, 1), np.float32)
    with pytest.raises(ValueError, match="X: contains NaN"):
        est.fit(np.full((8, 1), np.nan), np.zeros(8))
    with pytest.raises(ValueError, match="y: expected"):
        est.fit(x, np.zeros(7))
    with pytest.raises(ValueError, match="not fitted"):
        est.predict(x)
    with pytest.raises(ValueError, match="unknown parameter"):
        est.set_params(depth=3)
    with pytest.raises(ValueError, match="operators"):
        sr.GESRRegressor(**{**KW, "operators": ("add", "tanh")}).fit(x, np.zeros(8))


def test_readme_example_runs():
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    code = re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)
    exec(compile(code, str(readme), "exec"), {})
