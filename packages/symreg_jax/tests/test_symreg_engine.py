"""GP engine, BERT guides, training, checkpoints and the estimator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

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
