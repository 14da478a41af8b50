"""Uploaded template images (InstGenIE editing over HTTP): an edit may carry the template image
itself instead of a template id. Checks that an upload edits exactly like the same image
registered in code, that uploads are content-addressed (a repeated upload reuses the cached
activations, counted), that every bad input gets a 4xx naming the field, and that the template
store keeps its byte bound (and its upload bound) with uploads."""

import asyncio
import contextlib
import threading

import aiohttp
import jax
import numpy as np
import pytest
from flax import nnx

from diffusion_serve_jax import (
    NULL_LABEL,
    DiT,
    EditEngine,
    EditService,
    TemplateStore,
    build_template_cache,
    cached_edit,
    image_template_id,
    make_app,
    make_schedule,
    serve,
    template_builder,
    weights_version,
)
from diffusion_serve_jax._models import ConditionEncoder

SCHED = make_schedule(10)
STEPS = 3


@pytest.fixture(scope="module")
def model():
    rngs = nnx.Rngs(3)
    dit = DiT(width=16, depth=2, heads=2, cond_dim=16, rngs=rngs)
    enc = ConditionEncoder(dim=16, rngs=rngs)
    perturb = jax.jit(  # non-trivial output/modulation layers (they start at zero)
        lambda st_: jax.tree.map(
            lambda a: a + 0.1 * jax.random.normal(jax.random.key(7), a.shape), st_
        )
    )
    nnx.update(dit, perturb(nnx.state(dit)))
    # a smooth non-digit "photo": a diagonal ramp with a bright disc, in [-1, 1]
    yy, xx = np.mgrid[:8, :8] / 7.0
    image = np.clip((xx + yy) - 1.0 + 0.8 * ((xx - 0.6) ** 2 + (yy - 0.3) ** 2 < 0.08), -1, 1)
    return dit, enc, weights_version(nnx.state(dit)), image.astype(np.float32)


def _service(model, *, uploads=True, **kw):
    dit, enc, ver, image = model
    store = TemplateStore(max_bytes=10**8, version=ver)
    # the same image registered in code, as an upload would build it (null label, key 0)
    store.register(
        "mine",
        lambda: build_template_cache(
            dit, enc, SCHED, image, NULL_LABEL, steps=STEPS, key=jax.random.key(0), version=ver
        ),
    )
    eng = EditEngine(
        dit, enc, SCHED, store, steps=STEPS, max_batch=2, batch_buckets=(2,), token_buckets=(16,)
    )
    return EditService(eng, uploads=template_builder(dit, enc, SCHED) if uploads else None, **kw)


def _mask():
    m = np.zeros((8, 8), int)
    m[2:6, 4:8] = 1
    return m


@contextlib.asynccontextmanager
async def _client(svc, **kw):
    h = await serve(editor=svc, **kw)
    try:
        async with aiohttp.ClientSession(base_url=h.url) as client:
            yield client
    finally:
        await h.close()


def test_upload_edits_like_a_code_registered_template_and_reuses_its_cache(model):
    dit, enc, ver, image = model
    svc = _service(model)
    store = svc.engine.store
    tid = image_template_id(image, ver)
    edit = {"mask": _mask().tolist(), "label": 7, "seed": 2, "wait": True}

    async def main():
        async with _client(svc) as client:
            r = await client.post("/v1/edits", json={**edit, "template": "mine"})
            assert r.status == 200, await r.text()
            by_code = await r.json()
            assert (store.misses, store.hits) == (1, 0)
            r = await client.post("/v1/edits", json={**edit, "image": image.tolist()})
            assert r.status == 200, await r.text()
            first = await r.json()
            assert first["template"] == tid and store.misses == 2  # built on first use
            # the same image again (as ints-and-floats JSON): same id, the cache is reused
            r = await client.post("/v1/edits", json={**edit, "image": image.tolist()})
            again = await r.json()
            assert again["template"] == tid and (store.misses, store.hits) == (2, 1)
            assert (svc.counts["uploads_new"], svc.counts["uploads_known"]) == (1, 1)
            # later requests send only the id; the 202 answer names it too
            r = await client.post("/v1/edits", json={**edit, "template": tid, "wait": False})
            assert r.status == 202 and (await r.json())["template"] == tid
            r = await client.post("/v1/edits", json={**edit, "image": image.tolist(), "wait": 0})
            assert r.status == 202 and (await r.json())["template"] == tid
            # explicit registration: 200 for a known image, 201 for a new one
            r = await client.post("/v1/templates", json={"image": image.tolist()})
            assert r.status == 200 and await r.json() == {
                "template": tid,
                "version": ver,
                "new": False,
            }
            other = (-image).tolist()
            r = await client.post("/v1/templates", json={"image": other})
            assert r.status == 201 and (await r.json())["new"] is True
            listed = (await (await client.get("/v1/templates")).json())["templates"]
            assert set(listed) == {"mine", tid, image_template_id(-image, ver)}
            for _ in range(200):  # the two 202 edits finish
                if svc.counts["done"] == 5:
                    break
                await asyncio.sleep(0.01)
            metrics = await (await client.get("/metrics")).text()
            assert 'diffusion_template_uploads_total{outcome="known"} 3' in metrics
            assert 'diffusion_template_cache_total{result="miss"} 2' in metrics
            return by_code, first, again

    by_code, first, again = asyncio.run(main())
    want = cached_edit(dit, enc, SCHED, store.get("mine"), _mask(), 7, 2, steps=STEPS)
    for body in (by_code, first, again):
        np.testing.assert_allclose(np.asarray(body["image"]), want, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(first["image"]), np.asarray(by_code["image"]))
    # outside the mask the edit is the uploaded image itself
    out = np.asarray(first["image"])[_mask() == 0]
    np.testing.assert_allclose(out, image[_mask() == 0], atol=1e-6)


def test_upload_bad_inputs_get_a_4xx_naming_the_field(model):
    image = model[3]
    svc = _service(model)
    ok = {"image": image.tolist(), "mask": _mask().tolist(), "label": 3}
    nan = image.copy()
    nan[0, 0] = np.nan
    bad_edits = [
        ({**ok, "template": "mine"}, 400, "template, image: give exactly one"),
        ({k: v for k, v in ok.items() if k != "image"}, 400, "template, image: give exactly one"),
        ({**ok, "image": np.zeros((4, 4)).tolist()}, 400, "image: expected shape (8, 8)"),
        ({**ok, "image": np.zeros((8, 8, 1)).tolist()}, 400, "image: expected shape"),
        ({**ok, "image": [[0.0] * 8] * 7 + [[0.0] * 3]}, 400, "image: expected"),
        ({**ok, "image": [["a"] * 8] * 8}, 400, "image: expected numbers"),
        ({**ok, "image": [[True] * 8] * 8}, 400, "image: expected numbers"),
        ({**ok, "image": [[None] * 8] * 8}, 400, "image: expected numbers"),
        ({**ok, "image": nan.tolist()}, 400, "image: values must be finite"),
        ({**ok, "image": (2 * image).tolist()}, 400, "image: values must be in [-1, 1]"),
        ({**ok, "image": 0.5}, 400, "image: expected shape"),
        ({**ok, "mask": np.ones((4, 4)).tolist()}, 400, "mask: expected shape"),
        ({**ok, "label": 12}, 400, "label: expected a digit"),
        ({**ok, "template": ""}, 400, "template, image"),
    ]
    bad_uploads = [
        ({}, 400, "image: required"),
        ({"image": image.tolist(), "label": 1}, 400, "body: unexpected fields"),
        ([image.tolist()], 400, "body: expected a JSON object"),
        ({"image": (image + 1.5).tolist()}, 400, "image: values must be in [-1, 1]"),
        ({"image": [[1] * 3]}, 400, "image: expected shape"),
    ]

    async def main():
        async with _client(svc, max_body_bytes=4096) as client:
            for body, status, msg in bad_edits:
                # NaN travels as the JSON extension Python reads (json.dumps writes it)
                r = await client.post("/v1/edits", json=body)
                assert r.status == status, (msg, await r.text())
                assert msg in (await r.json())["error"], (msg, await r.text())
            for body, status, msg in bad_uploads:
                r = await client.post("/v1/templates", json=body)
                assert r.status == status, (msg, await r.text())
                assert msg in (await r.json())["error"], (msg, await r.text())
            # an invalid edit leaves no upload behind; none was accepted
            assert svc.engine.store.uploads == [] and svc.counts["accepted"] == 0
            # body size bound: declared length, and a chunked body with no declared length
            big = {**ok, "image": [[0.123456789] * 8] * 8 * 8}
            for route in ("/v1/edits", "/v1/templates"):
                async with client.post(route, json=big) as r:
                    assert r.status == 413 and "body:" in (await r.json())["error"]

            async def chunks():
                for _ in range(10):
                    yield b" " * 1000

            async with client.post("/v1/edits", data=chunks()) as r:
                assert r.status == 413 and "over the limit of 4096" in (await r.json())["error"]
            r = await client.post("/v1/edits", json=ok)  # a fitting body still works
            assert r.status == 202 and (await r.json())["template"].startswith("img-")

    asyncio.run(main())

    async def closed():
        async with _client(_service(model, uploads=False)) as client:
            r = await client.post("/v1/edits", json=ok)
            assert r.status == 400 and "image: this service takes no uploaded" in await r.text()

    asyncio.run(closed())
    with pytest.raises(ValueError, match="max_body_bytes"):
        make_app(editor=svc, max_body_bytes=0)


def test_image_template_id_is_content_addressed(model):
    image, ver = model[3], model[2]
    tid = image_template_id(image, ver)
    assert tid == image_template_id(image.astype(np.float64), ver)  # float32 bytes decide
    assert tid == image_template_id(image.copy(), ver)
    assert tid != image_template_id(image, "other-weights")
    flipped = image.copy()
    flipped[0, 0] = -flipped[0, 0] - 0.5
    assert tid != image_template_id(flipped, ver)
    assert tid != image_template_id(image.reshape(4, 16), ver)


def test_store_keeps_its_byte_bound_and_upload_bound_with_uploads(model, tmp_path):
    dit, enc, ver, image = model
    cache = build_template_cache(
        dit, enc, SCHED, image, NULL_LABEL, steps=STEPS, key=jax.random.key(0), version=ver
    )
    built = []

    def builder(name):
        built.append(name)
        return cache._replace(xs=cache.xs + len(built))

    store = TemplateStore(
        max_bytes=int(cache.nbytes * 2.5), version=ver, spill_dir=tmp_path, max_uploads=3
    )
    store.register("code", lambda: builder("code"))
    store.get("code")
    for i in range(8):
        assert store.register(f"up{i}", lambda i=i: builder(f"up{i}"), upload=True)
        store.get(f"up{i}")
        assert store.nbytes <= store.max_bytes and len(store.uploads) <= 3
    assert store.uploads == ["up5", "up6", "up7"] and store.uploads_forgotten == 5
    assert "code" in store and "up0" not in store
    assert not list(tmp_path.glob("up0-*"))  # a forgotten upload leaves no file behind
    with pytest.raises(KeyError, match="template: unknown 'up0'"):
        store.get("up0")
    store.get("code")  # evicted by the byte bound, spilled, read back: never forgotten
    # a known upload registered again keeps its cache (no rebuild) and becomes the newest
    n = len(built)
    assert not store.register("up5", lambda: builder("again"), upload=True)
    store.get("up5")
    assert len(built) == n and store.uploads == ["up6", "up7", "up5"]
    with pytest.raises(ValueError, match="registered in code"):
        store.register("code", lambda: cache, upload=True)
    with pytest.raises(ValueError, match="max_uploads"):
        TemplateStore(max_bytes=10, version=ver, max_uploads=0)


def test_store_builds_outside_its_lock_and_once_per_template(model):
    """A template's build (seconds on a real model) does not hold the store: while one thread
    is inside a builder, another registers an upload and gets another template; a second
    `get` of the template being built waits for that build instead of starting its own."""
    dit, enc, ver, image = model
    cache = build_template_cache(
        dit, enc, SCHED, image, NULL_LABEL, steps=STEPS, key=jax.random.key(0), version=ver
    )
    inside, release, builds = threading.Event(), threading.Event(), []

    def slow():
        builds.append("slow")
        inside.set()
        assert release.wait(10)
        return cache

    store = TemplateStore(max_bytes=10**8, version=ver)
    store.register("slow", slow)
    store.register("fast", lambda: cache)
    got = []
    threads = [threading.Thread(target=lambda: got.append(store.get("slow"))) for _ in range(2)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    # the store answers while "slow" is being built (a build under the lock would block here)
    answered = []
    other = threading.Thread(
        target=lambda: answered.append(
            (store.register("up", lambda: cache, upload=True), store.get("fast"))
        )
    )
    other.start()
    other.join(10)
    assert answered == [(True, cache)] and "up" in store.uploads
    release.set()
    for t in threads:
        t.join(10)
    assert got == [cache, cache] and builds == ["slow"]
    assert store.misses == 2 and store.hits == 1  # "fast" and "slow" built once, one wait hit
