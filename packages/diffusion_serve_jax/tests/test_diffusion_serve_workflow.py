"""Workflow DAG validation: clear errors at registration, topological order as a property."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffusion_serve_jax import Catalog, ModelSpec, TensorSpec, WorkflowBuilder, WorkflowError


def _ident(p, x):
    return {"y": x["x"]}


@pytest.fixture
def catalog():
    cat = Catalog()
    cat.register_model(ModelSpec("a", {"x": TensorSpec((4,))}, {"y": TensorSpec((4,))}, _ident))
    cat.register_model(ModelSpec("b", {"x": TensorSpec((4,))}, {"y": TensorSpec((4,))}, _ident))
    cat.register_model(ModelSpec("wide", {"x": TensorSpec((8,))}, {"y": TensorSpec((8,))}, _ident))
    return cat


def _base(name="w"):
    return WorkflowBuilder(name).input("x", TensorSpec((4,)))


def test_valid_workflow_is_ordered(catalog):
    wf = (
        _base().node("n2", "b", x="n1.y").node("n1", "a", x="input.x").output("out", "n2.y").build()
    )
    cw = catalog.register_workflow(wf)
    assert cw.order == ("n1", "n2")
    assert cw.deps["n2"] == {"n1"} and cw.children["n1"] == ("n2",)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: _base().node("n", "nope", x="input.x").output("o", "n.y"), "unknown model 'nope'"),
        (lambda: _base().node("n", "a", x="input.z").output("o", "n.y"), "unknown request input"),
        (lambda: _base().node("n", "a", x="m.y").output("o", "n.y"), "unknown node 'm'"),
        (lambda: _base().node("n", "a", x="input.x").output("o", "n.q"), "has no output 'q'"),
        (lambda: _base().node("n", "wide", x="input.x").output("o", "n.y"), "expects float32[8]"),
        (lambda: _base().node("n", "a").output("o", "n.y"), "missing ['x']"),
        (
            lambda: _base().node("n", "a", x="input.x", z="input.x").output("o", "n.y"),
            "unexpected ['z']",
        ),
        (
            lambda: _base().node("n", "a", x="input.x").node("n", "b", x="n.y").output("o", "n.y"),
            "duplicate node names",
        ),
        (
            lambda: _base().node("p", "a", x="q.y").node("q", "b", x="p.y").output("o", "p.y"),
            "cycle among nodes ['p', 'q']",
        ),
        (lambda: _base().node("n", "a", x="input.x"), "declares no outputs"),
        (lambda: _base().node("n", "a", x="inputx").output("o", "n.y"), "source must look like"),
        (lambda: _base(), "has no nodes"),
    ],
)
def test_bad_workflows_raise_clear_errors(catalog, build, message):
    with pytest.raises(WorkflowError, match=None) as info:
        catalog.register_workflow(build().build())
    assert message in str(info.value)


def test_duplicate_registration_errors(catalog):
    with pytest.raises(WorkflowError, match="already registered"):
        catalog.register_model(ModelSpec("a", {}, {"y": TensorSpec(())}, _ident))
    wf = _base().node("n", "a", x="input.x").output("o", "n.y").build()
    catalog.register_workflow(wf)
    with pytest.raises(WorkflowError, match="already registered"):
        catalog.register_workflow(wf)


def test_with_variants_copies_every_workflow_over_the_same_models(catalog):
    catalog.register_workflow(_base("v").node("n", "a", x="input.x").output("o", "n.y").build())
    catalog.register_workflow(_base("u").node("n", "b", x="input.x").output("o", "n.y").build())
    out = catalog.with_variants(3)
    assert sorted(out.workflows) == [f"{w}#{v}" for w in "uv" for v in range(3)]
    assert out.models == catalog.models
    assert out.workflows["v#2"].node("n").model == "a"
    with pytest.raises(ValueError, match="variants"):
        catalog.with_variants(0)


def test_tensor_spec_checks_values():
    spec = TensorSpec((2,), "float32")
    np.testing.assert_array_equal(spec.check("v", [1, 2]), np.array([1, 2], np.float32))
    with pytest.raises(ValueError, match=r"v: expected shape \[2\], got \[3\]"):
        spec.check("v", [1, 2, 3])
    with pytest.raises(ValueError, match="v: contains NaN"):
        spec.check("v", [1.0, float("nan")])
    with pytest.raises(ValueError, match="v: expected float32"):
        spec.check("v", ["a", "b"])


@given(
    st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=6, max_size=6),
    st.permutations(list(range(6))),
)
def test_random_dags_are_topologically_ordered(adj, perm):
    """Property: for any DAG (edges i->j only when i<j in a hidden order), registration
    succeeds and every node comes after all of its inputs."""
    cat = Catalog()
    cat.register_model(ModelSpec("m1", {"x": TensorSpec(())}, {"y": TensorSpec(())}, _ident))
    cat.register_model(
        ModelSpec("m2", {"x": TensorSpec(()), "z": TensorSpec(())}, {"y": TensorSpec(())}, _ident)
    )
    b = WorkflowBuilder("dag").input("x", TensorSpec(()))
    edges = []
    for j in range(6):
        parents = [i for i in range(j) if adj[i][j]][:2]
        srcs = [f"n{perm[i]}.y" for i in parents] + ["input.x"] * (2 - len(parents))
        edges += [(perm[i], perm[j]) for i in parents]
        b.node(f"n{perm[j]}", "m2", x=srcs[0], z=srcs[1])
    cw = cat.register_workflow(b.output("o", f"n{perm[5]}.y").build())
    pos = {n: k for k, n in enumerate(cw.order)}
    for i, j in edges:
        assert pos[f"n{i}"] < pos[f"n{j}"]
