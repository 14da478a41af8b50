"""GP engine, BERT guides, training, checkpoints and the estimator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import symreg_jax as sr
from testkit import assert_trees_close

PSET = sr.PrimitiveSet(operators=("add", "sub", "mul", "sin"), n_vars=1, max_len=16)
CFG = sr.GPConfig(
    population_size=32,
    elitism=1,
    const_every=2,
    const_top_k=2,
    const_steps=3,
    buffer_capacity=64,
    init_max_depth=3,
    mutation_max_nodes=7,
)
X = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
Y = (X[:, 0] ** 2 + X[:, 0]).astype(np.float32)
Y_HARD = (np.sin(3 * X[:, 0]) * X[:, 0] ** 3 + np.sin(X[:, 0] ** 2)).astype(np.float32)


def _key(seed):
    return jax.random.key(seed)


@pytest.fixture(scope="module")
def models():
    mm = sr.MutationModel(PSET, dim=16, depth=1, heads=2, rngs=nnx.Rngs(0))
    cm = sr.CrossoverModel(PSET, dim=16, depth=1, heads=2, rngs=nnx.Rngs(1))
    return mm, cm


@pytest.fixture(scope="module")
def guided(models):
    mm, cm = models
    (mgd, mst), (cgd, cst) = nnx.split(mm), nnx.split(cm)
    eng = sr.make_engine(PSET, CFG, mgd, cgd)
    # The run-time switch is on: the guided tests below run the models through `lax.cond`.
    return jax.jit(eng.init), jax.jit(eng.run), (mst, cst, True)


def test_guided_run_keeps_population_valid_and_improves(guided):
    init, run, guide = guided
    s0 = init(X, Y_HARD, key=_key(0))
    s1 = run(s0, X, Y_HARD, guide, 6)
    s2 = run(s0, X, Y_HARD, guide, 6)
    assert_trees_close(jax.tree.map(np.asarray, s1.tokens), np.asarray(s2.tokens))  # deterministic
    assert int(s1.generation) >= 1
    assert float(s1.best_nmse) <= float(s0.best_nmse)
    toks = np.asarray(s1.tokens)
    assert all(sr.is_valid_reference(t, PSET) for t in toks)
    # Stored fitness is the fitness of the stored programs (elites and optimised constants too).
    pred = sr.evaluate_population(s1.tokens, s1.consts, X, PSET)
    nmse = np.asarray(sr.normalized_mse(pred, jnp.asarray(Y_HARD)))
    np.testing.assert_allclose(np.asarray(s1.nmse), nmse, rtol=1e-4, atol=1e-6)
    # Evaluations: the initial population, edited children, constant-optimisation steps.
    gens = int(s1.generation)
    n_new = round(0.5 * 32) + 2 * round(0.2 * 32)  # crossover + subtree + point slots
    assert int(s1.evaluations) == 32 + gens * n_new + (gens // 2) * 2 * 4
    # Recorded edits are improving point mutations: the target has the masked gene's arity.
    n_mut = min(int(s1.buffer.mut_count), 64)
    ar, cls = PSET.arities(), PSET.token_classes()
    for t, p, y in zip(
        np.asarray(s1.buffer.mut_tokens)[:n_mut],
        np.asarray(s1.buffer.mut_point)[:n_mut],
        np.asarray(s1.buffer.mut_target)[:n_mut],
        strict=True,
    ):
        assert t[p] == PSET.mask_token and cls[y] >= 0
        assert sr.is_valid_reference(np.where(np.arange(16) == p, y, t), PSET)
    del ar


def test_guides_switched_off_is_exactly_plain_gp(guided):
    """One compiled engine serves both methods: switched off, it is the plain-GP engine."""
    init, run, (mst, cst, _) = guided
    plain = sr.make_engine(PSET, CFG)
    s0 = init(X, Y_HARD, key=_key(5))
    off = run(s0, X, Y_HARD, (mst, cst, False), 4)
    ref = jax.jit(plain.run)(s0, X, Y_HARD, None, 4)
    off, ref = (
        jax.tree.map(np.asarray, s._replace(key=jax.random.key_data(s.key))) for s in (off, ref)
    )
    assert_trees_close(off, ref)
    on = run(s0, X, Y_HARD, (mst, cst, True), 4)
    assert not np.array_equal(np.asarray(on.tokens), off.tokens)


def test_public_api_takes_standard_and_legacy_keys(guided):
    init, _, _ = guided
    for key in (jax.random.key(7), jax.random.PRNGKey(7)):
        s = init(X, Y, key=key)
        assert all(sr.is_valid_reference(t, PSET) for t in np.asarray(s.tokens))
    a, b = init(X, Y, key=jax.random.key(7)), init(X, Y, key=jax.random.key(8))
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


def test_early_stopping_on_target(guided):
    init, run, guide = guided
    s = run(init(X, Y, key=_key(1)), X, Y, guide, 60)
    if float(s.best_nmse) <= CFG.target_nmse:
        assert int(s.solved_at) > 0
    else:
        assert int(s.generation) == 60 and int(s.solved_at) == -1
    s2 = run(s, X, Y, guide, 5)
    if float(s.best_nmse) <= CFG.target_nmse:
        assert int(s2.generation) == int(s.generation)  # a solved run does not continue


def test_models_train_on_recorded_edits_and_checkpoint_roundtrip(guided, models, tmp_path):
    init, run, guide = guided
    s = run(init(X, Y_HARD, key=_key(2)), X, Y_HARD, guide, 10)
    mm, cm = models
    n_mut = min(int(s.buffer.mut_count), 64)
    n_xo = min(int(s.buffer.xo_count), 64)
    assert n_mut > 0 and n_xo > 0
    res = sr.train_model(
        mm,
        sr.mutation_loss,
        sr.mutation_data(s.buffer),
        PSET,
        key=_key(3),
        steps=10,
        n_valid=n_mut,
    )
    assert res.losses[-5:].mean() < res.losses[:5].mean()
    res_x = sr.train_model(
        cm,
        sr.crossover_loss,
        sr.crossover_data(s.buffer),
        PSET,
        key=_key(3),
        steps=10,
        n_valid=n_xo,
    )
    assert np.all(np.isfinite(res_x.losses))
    # Save -> restore -> identical predictions and identical continued training.
    sr.save_model(tmp_path / "mut", res.model)
    restored = sr.load_model(
        tmp_path / "mut", sr.MutationModel(PSET, dim=16, depth=1, heads=2, rngs=nnx.Rngs(9))
    )
    toks = s.tokens
    assert_trees_close(np.asarray(restored(toks)), np.asarray(res.model(toks)))
    # Restored onto the template's device, not the one the file was saved from.
    other = jax.devices()[-1]
    template = sr.MutationModel(PSET, dim=16, depth=1, heads=2, rngs=nnx.Rngs(9))
    nnx.update(template, jax.device_put(nnx.state(template), other))
    moved = sr.load_model(tmp_path / "mut", template)
    assert {d for x in jax.tree.leaves(nnx.state(moved)) for d in x.devices()} == {other}
    assert_trees_close(jax.device_get(nnx.state(moved)), jax.device_get(nnx.state(res.model)))
    kw = dict(key=_key(4), steps=10, n_valid=n_mut)
    a = sr.train_model(res.model, sr.mutation_loss, sr.mutation_data(s.buffer), PSET, **kw)
    b = sr.train_model(restored, sr.mutation_loss, sr.mutation_data(s.buffer), PSET, **kw)
    assert_trees_close(nnx.state(a.model), nnx.state(b.model))
    with pytest.raises(ValueError, match="n_valid"):
        sr.train_model(
            mm, sr.mutation_loss, sr.mutation_data(s.buffer), PSET, key=_key(0), n_valid=0
        )


def test_gradient_of_mutation_loss_is_finite(models):
    mm, _ = models
    graphdef, params = nnx.split(mm)
    toks = (
        jnp.full((4, 16), 0, jnp.int32)
        .at[:, 0]
        .set(PSET.mask_token)
        .at[:, 1]
        .set(PSET.var_offset)
        .at[:, 2]
        .set(PSET.var_offset)
    )
    batch = {
        "mut_tokens": toks,
        "mut_point": jnp.zeros(4, jnp.int32),
        "mut_target": jnp.full((4,), 1, jnp.int32),
    }
    g = jax.jit(jax.grad(lambda p: sr.mutation_loss(nnx.merge(graphdef, p), batch, PSET)))(params)
    leaves = jax.tree.leaves(g)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    assert any(np.abs(np.asarray(x)).max() > 0 for x in leaves)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="population_size"):
        sr.GPConfig(population_size=2)
    with pytest.raises(ValueError, match="tournament_size"):
        sr.GPConfig(population_size=8, tournament_size=9)
    with pytest.raises(ValueError, match="p_"):
        sr.GPConfig(p_crossover=0.9, p_subtree_mutation=0.2)
    with pytest.raises(ValueError, match="elitism"):
        sr.GPConfig(population_size=8, elitism=8)
    with pytest.raises(ValueError, match="record"):
        sr.GPConfig(record="worst")
    with pytest.raises(ValueError, match="guide_rate"):
        sr.GPConfig(guide_rate=1.5)


def test_record_all_edits_with_gains_and_guide_rate_zero_is_plain_gp(models, guided):
    """record="all" keeps every finite edit with its gain; guide_rate=0 sends every guided
    slot to the uniform choice, so the guided engine evolves exactly like plain GP (here: the
    fixture's engine, which records only improving edits, with its guides switched off)."""
    import dataclasses

    init, run, (mst, cst, _) = guided
    mm, cm = models
    cfg = dataclasses.replace(CFG, record="all", guide_rate=0.0)
    eng = sr.make_engine(PSET, cfg, nnx.split(mm)[0], nnx.split(cm)[0])
    s0 = init(X, Y_HARD, key=_key(11))
    s = jax.jit(eng.run)(s0, X, Y_HARD, (mst, cst, True), 4)
    ref = run(s0, X, Y_HARD, (mst, cst, False), 4)
    assert_trees_close(np.asarray(s.tokens), np.asarray(ref.tokens))
    assert_trees_close(np.asarray(s.fitness), np.asarray(ref.fitness))
    n_pm = round(0.2 * 32)
    n_all = int(s.buffer.mut_count)
    assert 0 < n_all <= 4 * n_pm
    gain = np.asarray(s.buffer.mut_gain)[:n_all]
    assert np.all(np.isfinite(gain)) and np.any(gain < 0)  # worsening edits are kept too
    n_imp = int(ref.buffer.mut_count)
    assert n_imp == int(np.sum(gain > 0))  # the improving buffer is the gain > 0 subset
    np.testing.assert_array_equal(
        np.asarray(ref.buffer.mut_target)[:n_imp], np.asarray(s.buffer.mut_target)[:n_all][gain > 0]
    )
    assert np.all(np.asarray(ref.buffer.mut_gain)[:n_imp] > 0)


@settings(deadline=None)
@given(
    gain=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=8, max_size=8
    ),
    sharpness=st.floats(0.0, 8.0),
)
def test_edit_weights_are_positive_mean_one_and_monotone_in_gain(gain, sharpness):
    g = np.asarray(gain)
    w = sr.edit_weights(g, sharpness)
    assert np.all(w > 0) and abs(float(w.mean()) - 1) < 1e-4
    order = np.argsort(g, kind="stable")
    assert np.all(np.diff(w[order]) >= -1e-6)  # a larger gain never gets a smaller weight
    same = g[:, None] == g[None, :]
    assert np.allclose(w[:, None] * same, w[None, :] * same)  # ties share their weight
    if sharpness == 0.0:
        np.testing.assert_allclose(w, 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="gain"):
        sr.edit_weights(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="sharpness"):
        sr.edit_weights(g, -1.0)


def test_weighted_loss_is_the_weighted_mean_of_row_losses(models):
    mm, cm = models
    rng = np.random.default_rng(0)
    toks = np.asarray(sr.random_trees(_key(3), PSET, 4, max_depth=3, full=True)[0])
    batch = {
        "mut_tokens": toks.copy(),
        "mut_point": np.zeros(4, np.int32),
        "mut_target": toks[:, 0],
        "xo_parent": toks,
        "xo_donor": toks[::-1],
        "xo_point": np.zeros(4, np.int32),
        "xo_donor_point": np.ones(4, np.int32),
    }
    batch["mut_tokens"][:, 0] = PSET.mask_token
    for loss in (sr.mutation_loss, sr.crossover_loss):
        model = mm if loss is sr.mutation_loss else cm
        name = "mut_weight" if loss is sr.mutation_loss else "xo_weight"
        # Row i's loss: the unweighted loss of four copies of row i (one shape, one compile).
        rows = [
            float(loss(model, {k: np.repeat(v[i : i + 1], 4, 0) for k, v in batch.items()}, PSET))
            for i in range(4)
        ]
        w = rng.uniform(0.1, 2.0, 4).astype(np.float32)
        got = float(loss(model, batch | {name: w}, PSET))
        np.testing.assert_allclose(got, np.sum(w * rows) / np.sum(w), rtol=1e-5)
        np.testing.assert_allclose(float(loss(model, batch, PSET)), np.mean(rows), rtol=1e-5)


def test_value_losses_and_edit_scores_agree(models):
    """Value losses are the BCE of the scores against "gain > 0"; a policy score is the
    negative policy loss of that row plus log(choices), i.e. a likelihood ratio."""
    mm, cm = models
    toks = np.asarray(sr.random_trees(_key(4), PSET, 4, max_depth=3, full=True)[0])
    masked = toks.copy()
    masked[:, 1] = PSET.mask_token
    gain = np.array([1.0, -1.0, 0.0, 2.0], np.float32)
    batch = {"mut_tokens": masked, "mut_point": np.ones(4, np.int32), "mut_target": toks[:, 1]}
    batch |= {"xo_parent": toks, "xo_donor": toks[::-1], "xo_point": np.zeros(4, np.int32)}
    batch |= {"xo_donor_point": np.ones(4, np.int32), "mut_gain": gain, "xo_gain": gain}
    label = (gain > 0).astype(np.float32)
    for value_loss, scores, model in (
        (sr.mutation_value_loss, sr.mutation_edit_scores, mm),
        (sr.crossover_value_loss, sr.crossover_edit_scores, cm),
    ):
        z = np.asarray(scores(model, batch, PSET, kind="value"), np.float64)
        bce = np.mean(np.logaddexp(0, z) - label * z)
        np.testing.assert_allclose(float(value_loss(model, batch, PSET)), bce, rtol=1e-4)
    cls = PSET.token_classes()
    n_choices = np.sum(cls[None, :] == cls[toks[:, 1]][:, None], axis=1)
    one = {k: v[:1].repeat(4, 0) for k, v in batch.items()}
    pol = float(sr.mutation_edit_scores(mm, one, PSET, kind="policy")[0])
    np.testing.assert_allclose(
        pol, -float(sr.mutation_loss(mm, one, PSET)) + np.log(n_choices[0]), rtol=1e-4
    )
    with pytest.raises(ValueError, match="kind"):
        sr.crossover_edit_scores(cm, batch, PSET, kind="greedy")


def test_screen_builds_the_best_scored_candidate_and_switches_off_to_plain_gp(models, guided):
    """With `screen=K`, only the best-scored of K candidate edits is built and evaluated: a
    value model whose head says "a new constant never improves" (every other gene scores 0)
    builds a constant only when all K candidates put one in; one uniform candidate does so
    whenever it hits a variable gene. Switched off, the screened engine is
    exactly plain GP, and evaluations are counted as without screening."""
    import dataclasses

    init, run, (mst, cst, _) = guided
    mm, cm = models
    value = nnx.clone(mm)
    value.head.kernel[...] = jnp.zeros_like(value.head.kernel[...])
    bias = np.zeros(value.head.bias[...].shape, np.float32)
    bias[PSET.const_token] = -100.0
    value.head.bias[...] = jnp.asarray(bias)
    mgd, mst_v = nnx.split(value)
    cfg = dataclasses.replace(CFG, record="all", screen=8, guide_kind="value")
    eng = sr.make_engine(PSET, cfg, mgd, nnx.split(cm)[0])
    run_v = jax.jit(eng.run)
    s0 = init(X, Y_HARD, key=_key(12))
    on = run_v(s0, X, Y_HARD, (mst_v, cst, True), 3)
    off = run_v(s0, X, Y_HARD, (mst_v, cst, False), 3)
    ref = run(s0, X, Y_HARD, (mst, cst, False), 3)
    assert_trees_close(np.asarray(off.tokens), np.asarray(ref.tokens))
    assert_trees_close(np.asarray(off.fitness), np.asarray(ref.fitness))
    assert int(on.evaluations) == int(off.evaluations)
    assert all(sr.is_valid_reference(t, PSET) for t in np.asarray(on.tokens))
    n_on, n_off = int(on.buffer.mut_count), int(off.buffer.mut_count)
    frac_on = np.mean(np.asarray(on.buffer.mut_target)[:n_on] == PSET.const_token)
    frac_off = np.mean(np.asarray(off.buffer.mut_target)[:n_off] == PSET.const_token)
    assert frac_on <= 0.1 and frac_off >= 0.3, (frac_on, frac_off)
    with pytest.raises(ValueError, match="screen"):
        sr.GPConfig(screen=0)
    with pytest.raises(ValueError, match="guide_kind"):
        sr.GPConfig(guide_kind="value")
