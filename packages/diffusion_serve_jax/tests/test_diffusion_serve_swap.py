"""The LoRA hot-swapping monolith: a replica that swaps a variant's adapter weights in gives
the outputs of an executor holding that variant, counts its swaps, never recompiles, and
keeps concurrent replicas' weights apart; micro-serving's stacked-adapter node gives each variant
the same outputs."""

import asyncio

import jax
import numpy as np
import pytest

from diffusion_serve_jax import (
    Catalog,
    ModelSpec,
    NodeExecutor,
    ServingRuntime,
    TensorSpec,
    WorkflowBuilder,
)

RANK = 2


def _setup():
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(4, 4)).astype(np.float32)}
    lora = {
        v: (rng.normal(size=(4, RANK)).astype(np.float32), rng.normal(size=(RANK, 4)))
        for v in ("v1", "v2")
    }
    spec = ModelSpec(
        "lin",
        {"x": TensorSpec((4,))},
        {"y": TensorSpec((4,))},
        lambda p, x: {"y": x["x"] @ p["w"]},
        base,
    )
    cat = Catalog()
    cat.register_model(spec)
    for i in range(3):
        cat.register_workflow(
            WorkflowBuilder(f"w#{i}")
            .input("x", TensorSpec((4,)))
            .node("n", "lin", x="input.x")
            .output("y", "n.y")
            .build()
        )

    def merged(v):  # the base weights with variant v's LoRA merged, on the device
        a, b = lora[v]
        return jax.device_put({"w": (base["w"] + a @ b).astype(np.float32)})

    variants = {"w#1": {"lin": "v1"}, "w#2": {"lin": "v2"}}  # w#0 runs the base weights
    return spec, cat, variants, lambda model, v: merged(v), merged, lora


def test_swap_equals_a_replica_holding_the_variant():
    spec, cat, variants, loader, merged, _ = _setup()
    ex = NodeExecutor(spec, buckets=(1, 4))
    holding = {"w#0": spec.params, "w#1": merged("v1"), "w#2": merged("v2")}
    x = np.arange(4, dtype=np.float32)[None] / 4

    def expect(w):
        direct = NodeExecutor(spec, buckets=(1,))
        direct.set_params(holding[w])
        return direct.run({"x": x})["y"][0]

    def swapping_runtime(num_workers):
        return ServingRuntime(
            cat,
            mode="monolithic",
            num_workers=num_workers,
            executors={"lin": ex},
            variants=variants,
            variant_loader=loader,
        )

    async def main():
        rt = swapping_runtime(1)
        await rt.start()
        for w in ("w#1", "w#2", "w#0", "w#1", "w#1"):
            got = await rt.submit(w, {"x": x[0]}).future
            np.testing.assert_allclose(got["y"], expect(w), rtol=1e-5, atol=1e-5)
        assert rt.stats.swaps == 4, rt.stats.swaps  # the repeated w#1 needs no swap
        assert "diffusion_swaps_total 4" in rt.metrics_text()
        # a burst over two replicas: each keeps its own weights while the other swaps
        rt2 = swapping_runtime(2)
        await rt2.start()
        names = [f"w#{i % 3}" for i in range(24)]
        outs = await asyncio.gather(*(rt2.submit(w, {"x": x[0]}).future for w in names))
        for w, got in zip(names, outs, strict=True):
            np.testing.assert_allclose(got["y"], expect(w), rtol=1e-5, atol=1e-5)
        assert rt2.stats.swaps >= 2
        assert rt2.memory_bytes() == 2 * spec.param_bytes
        await rt.stop()
        await rt2.stop()

    asyncio.run(main())
    assert ex.traces <= 2  # one compile per bucket: swaps and replicas never recompile


def test_swap_arguments_are_checked():
    _, cat, variants, loader, _, _ = _setup()
    with pytest.raises(ValueError, match="variants"):
        ServingRuntime(cat, mode="micro", variants=variants, variant_loader=loader)
    with pytest.raises(ValueError, match="variant_loader"):
        ServingRuntime(cat, mode="monolithic", num_workers=3, variants=variants)
    with pytest.raises(ValueError, match="unknown workflows"):
        ServingRuntime(cat, mode="monolithic", variants={"nope": {}}, variant_loader=loader)
    with pytest.raises(ValueError, match="not nodes"):
        ServingRuntime(
            cat, mode="monolithic", variants={"w#1": {"enc": "v1"}}, variant_loader=loader
        )


def test_stacked_adapter_micro_node_equals_the_hot_swap_monolith():
    """Micro-serving's multi-adapter node (base weights + a stack of LoRAs, each request
    naming its adapter by index, each row of a mixed batch computed with its own adapter)
    gives every variant the hot-swap monolith's outputs for that variant."""
    spec, cat, variants, loader, _, lora = _setup()
    zero = (np.zeros((4, RANK)), np.zeros((RANK, 4)))  # adapter 0: the base weights (w#0)
    pairs = [zero, lora["v1"], lora["v2"]]
    stack = {
        "w": spec.params["w"],
        "a": np.stack([a for a, _ in pairs]).astype(np.float32),
        "b": np.stack([b for _, b in pairs]).astype(np.float32),
    }

    def per_row(p, x):
        def one(xi, i):
            return xi @ (p["w"] + p["a"][i] @ p["b"][i])

        return {"y": jax.vmap(one)(x["x"], x["lora"])}

    mcat = Catalog()
    mcat.register_model(
        ModelSpec(
            "lin",
            {"x": TensorSpec((4,)), "lora": TensorSpec((), "int32")},
            {"y": TensorSpec((4,))},
            per_row,
            stack,
        )
    )
    for i in range(3):
        mcat.register_workflow(
            WorkflowBuilder(f"w#{i}")
            .input("x", TensorSpec((4,)))
            .input("lora", TensorSpec((), "int32"))
            .node("n", "lin", x="input.x", lora="input.lora")
            .output("y", "n.y")
            .build()
        )
    xs = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    names = [f"w#{i % 3}" for i in range(12)]

    async def serve(micro):
        if micro:
            rt = ServingRuntime(mcat, mode="micro", num_workers=1, max_batch=4)
        else:
            rt = ServingRuntime(
                cat, mode="monolithic", num_workers=1, variants=variants, variant_loader=loader
            )
        await rt.start()
        reqs = [
            rt.submit(w, {"x": x} | ({"lora": int(w[-1])} if micro else {}))
            for w, x in zip(names, xs, strict=True)
        ]
        outs = [(await r.future)["y"] for r in reqs]
        batches = sum(rt.stats.batches.values())
        await rt.stop()
        return np.stack(outs), batches

    micro, batches = asyncio.run(serve(True))
    swap, _ = asyncio.run(serve(False))
    np.testing.assert_allclose(micro, swap, rtol=1e-5, atol=1e-5)
    assert batches < len(names)  # rows of different adapters really shared batches
    assert np.abs(micro[1] - xs[1] @ spec.params["w"]).max() > 1e-3  # the adapters matter
