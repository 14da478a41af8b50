"""The scikit-learn style estimator, its guides (shipped, given, none) and the README example."""

import pathlib
import re

import jax
import numpy as np
import pytest

import symreg_jax as sr

# The same settings as the README example, so both share one compilation: the default
# operators and length, so the shipped guides are used, fine-tuned online every 3 generations.
KW = dict(population_size=32, generations=6, online_every=3, online_steps=10)
# A primitive set no guides ship for (plain GP, compiled once for the tests below).
SMALL = dict(
    population_size=16, generations=3, max_length=16, operators=("add", "sub", "mul", "sin")
)


def test_fit_predict_score_export_save_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (20, 1)).astype(np.float32)
    y = np.stack([x[:, 0] ** 2 + x[:, 0], np.sin(x[:, 0]) * 2], axis=1)
    est = sr.GESRRegressor(**KW, random_state=3).fit(x, y)
    assert est.guides_ == "shipped"
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


@pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
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
    with pytest.raises(ValueError, match="both or neither"):
        sr.GESRRegressor(**KW, crossover_model=object()).fit(x, np.arange(8.0))


def _toy(n):
    x = np.random.default_rng(1).uniform(-1, 1, (n, 1)).astype(np.float32)
    return x, x[:, 0] ** 2 + x[:, 0]


def test_without_shipped_guides_warns_and_runs_plain_gp():
    """No guides ship for this primitive set: the fit says so and is exactly plain GP."""
    x, y = _toy(20)
    with pytest.warns(UserWarning, match="no pre-trained guides ship"):
        est = sr.GESRRegressor(**SMALL, random_state=1).fit(x, y)
    assert est.guides_ == "none"
    plain = sr.GESRRegressor(**SMALL, guided=False, random_state=1).fit(x, y)
    np.testing.assert_array_equal(est.predict(x), plain.predict(x))


def test_shipped_guides_match_only_their_primitive_set():
    for nv in (1, 2, 3, 4):
        g = sr.shipped_guides(sr.PrimitiveSet(sr.DEFAULT_OPERATORS, nv, 32))
        assert g is not None and g.info["settings"]["n_vars"] == nv
        assert g.info["rows_crossover"] > 100  # trained, on recorded improving crossovers
    assert sr.shipped_guides(sr.PrimitiveSet(sr.DEFAULT_OPERATORS, 5, 32)) is None
    assert sr.shipped_guides(sr.PrimitiveSet(("add", "mul"), 1, 32)) is None
    assert sr.shipped_guides(sr.PrimitiveSet(sr.DEFAULT_OPERATORS, 1, 16)) is None


def test_pretrain_guides_save_load_and_fit_with_them(tmp_path):
    """The library's offline pre-training: trained on recorded edits, saved and restored with
    orbax, and used by the estimator (the same pair for any problem of the primitive set)."""
    pset = sr.PrimitiveSet(SMALL["operators"], 1, SMALL["max_length"])
    x, y = _toy(20)
    cfg = sr.GPConfig(population_size=16, buffer_capacity=64, record="all")
    g = sr.pretrain_guides(
        pset,
        x,
        key=jax.random.key(0),
        config=cfg,
        problems=2,
        seeds=2,
        generations=3,
        steps=10,
        chunk_steps=10,
        shuffle_seed=0,
    )
    assert g.info["rows_crossover"] >= 8 and len(g.info["loss_crossover"]) == 10
    sr.save_model(tmp_path / "mutation", g.mutation)
    sr.save_model(tmp_path / "crossover", g.crossover)
    mm = sr.load_model(tmp_path / "mutation", g.mutation)
    cm = sr.load_model(tmp_path / "crossover", g.crossover)
    est = sr.GESRRegressor(**SMALL, mutation_model=mm, crossover_model=cm).fit(x, y)
    assert est.guides_ == "given" and np.isfinite(est.score(x, y))


def test_sklearn_clone_and_cross_val_score():
    """A scikit-learn estimator (tags, clone, cross-validation) where scikit-learn is
    installed (the optional extra `symreg-jax[sklearn]`)."""
    base = pytest.importorskip("sklearn.base")
    model_selection = pytest.importorskip("sklearn.model_selection")
    est = sr.GESRRegressor(**SMALL, guided=False, random_state=1)
    twin = base.clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert base.is_regressor(est)
    x, y = _toy(40)
    scores = model_selection.cross_val_score(est, x, y, cv=2)  # 20 training points per fold
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


def test_readme_example_runs():
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    code = re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)
    exec(compile(code, str(readme), "exec"), {})
