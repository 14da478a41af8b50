"""The HTTP API (aiohttp) over a `ServingRuntime`.

    POST /v1/requests            {"workflow", "inputs", "priority"?, "slo_ms"?, "wait"?}
                                 -> 202 {"id", "status"}; with "wait": true -> 200 with outputs
    GET  /v1/requests/{id}       -> status, and outputs once done (poll)
    GET  /v1/requests/{id}/stream -> NDJSON events: accepted, then done/failed (stream)
    GET  /v1/workflows, /v1/models, /healthz, /metrics (Prometheus text)

With an `EditService` (InstGenIE editing):
    POST /v1/edits               {"template", "mask" (HxW of 0/1), "label" | "prompt", "seed"?,
                                  "wait"?} -> 202 {"id", "status"}; "wait": true -> 200 + image
    GET  /v1/edits/{id}          -> status, and the edited image once done (poll)
    GET  /v1/templates           -> template ids and the weights version of their caches

Bad requests get 400/404 with a message; overload gets 429 with `Retry-After`; a stopping
server answers 503; an accepted request that fails returns 500 with the error. Nothing that
was accepted disappears without an answer.
"""

import asyncio
import json
import math

import numpy as np
from aiohttp import web

from ._edit_service import EditJob, EditService
from ._requests import Overloaded, Request, ShuttingDown
from ._runtime import ServingRuntime
from ._step_batching import EditRequest

RUNTIME_KEY = web.AppKey("runtime", ServingRuntime)
EDITOR_KEY = web.AppKey("editor", EditService)
PROMPTS = {
    w: i
    for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    )
}


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _encode(outputs: dict[str, np.ndarray]) -> dict:
    return {k: np.asarray(v).tolist() for k, v in outputs.items()}


def _describe(req: Request, *, with_outputs: bool) -> dict:
    body = {"id": req.id, "workflow": req.workflow.name, "status": req.status}
    if req.latency is not None:
        body["latency_ms"] = 1000.0 * req.latency
    if req.error is not None:
        body["error"] = req.error
    if with_outputs and req.outputs is not None:
        body["outputs"] = _encode(req.outputs)
    return body


async def _submit(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "body: expected a JSON object")
    if not isinstance(body, dict):
        return _error(400, f"body: expected a JSON object, got {type(body).__name__}")
    workflow = body.get("workflow")
    if not isinstance(workflow, str):
        return _error(400, "workflow: expected a workflow name (string)")
    slo_ms = body.get("slo_ms")
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        return _error(400, f"priority: expected an integer, got {priority!r}")
    if slo_ms is not None and not (
        isinstance(slo_ms, int | float) and math.isfinite(slo_ms) and slo_ms > 0
    ):
        return _error(400, f"slo_ms: expected a positive number, got {slo_ms!r}")
    return await _accept(
        lambda: rt.submit(
            workflow,
            body.get("inputs"),
            priority=priority,
            slo_s=None if slo_ms is None else slo_ms / 1000.0,
        ),
        wait=body.get("wait", False),
        describe=lambda req, done: _describe(
            req, with_outputs=done and body.get("return_outputs", True)
        ),
    )


async def _accept(submit, *, wait, describe) -> web.Response:
    """Submit a request or edit, map refusals to 4xx/5xx, then answer 202 or wait for it.

    `describe(job, done)` renders the job; `done` is False when it failed or was cut off.
    """
    try:
        job = submit()
    except KeyError as e:
        return _error(404, str(e.args[0]))
    except ValueError as e:
        return _error(400, str(e))
    except Overloaded as e:
        return _error(429, str(e), **{"Retry-After": str(max(1, math.ceil(e.retry_after)))})
    except ShuttingDown as e:
        return _error(503, str(e))
    if not wait:
        return web.json_response({"id": job.id, "status": job.status}, status=202)
    try:
        await asyncio.shield(job.future)
    except ShuttingDown:
        return web.json_response(describe(job, False), status=503)
    except Exception:  # noqa: BLE001 - the failure is in job.error
        return web.json_response(describe(job, False), status=500)
    return web.json_response(describe(job, True))


async def _poll(request: web.Request) -> web.Response:
    req = request.app[RUNTIME_KEY].get(request.match_info["id"])
    if req is None:
        return _error(404, f"id: unknown request {request.match_info['id']!r}")
    return web.json_response(_describe(req, with_outputs=True))


async def _stream(request: web.Request) -> web.StreamResponse:
    req = request.app[RUNTIME_KEY].get(request.match_info["id"])
    if req is None:
        return _error(404, f"id: unknown request {request.match_info['id']!r}")
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    await resp.write((json.dumps({"id": req.id, "status": req.status}) + "\n").encode())
    try:
        await asyncio.shield(req.future)
    except Exception:  # noqa: BLE001, S110 - reported in the final event
        pass
    await resp.write((json.dumps(_describe(req, with_outputs=True)) + "\n").encode())
    await resp.write_eof()
    return resp


async def _workflows(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    out = {}
    for name, cw in rt.catalog.workflows.items():
        wf = cw.workflow
        out[name] = {
            "inputs": {k: s.describe() for k, s in wf.inputs.items()},
            "nodes": [
                {"name": n.name, "model": n.model, "inputs": dict(n.inputs)} for n in wf.nodes
            ],
            "order": list(cw.order),
            "outputs": dict(wf.outputs),
        }
    return web.json_response(out)


async def _models(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    out = {}
    for name, ex in rt.executors.items():
        spec = ex.spec
        users = sorted(
            w
            for w, cw in rt.catalog.workflows.items()
            if any(n.model == name for n in cw.workflow.nodes)
        )
        out[name] = {
            "inputs": {k: s.describe() for k, s in spec.inputs.items()},
            "outputs": {k: s.describe() for k, s in spec.outputs.items()},
            "buckets": list(ex.buckets),
            "workflows": users,
            "param_bytes": spec.param_bytes,
        }
    return web.json_response(out)


async def _healthz(request: web.Request) -> web.Response:
    body: dict = {"status": "ok"}
    if RUNTIME_KEY in request.app:
        rt = request.app[RUNTIME_KEY]
        body.update(mode=rt.mode, queues=rt.queue_depths())
    if EDITOR_KEY in request.app:
        body["edit_queue"] = request.app[EDITOR_KEY].queue_depth()
    return web.json_response(body)


async def _metrics(request: web.Request) -> web.Response:
    text = request.app[RUNTIME_KEY].metrics_text() if RUNTIME_KEY in request.app else ""
    if EDITOR_KEY in request.app:
        ed = request.app[EDITOR_KEY]
        lines = ["# TYPE diffusion_edits_total counter"]
        for status in ("accepted", "rejected", "done", "failed"):
            lines.append(f'diffusion_edits_total{{status="{status}"}} {ed.counts[status]}')
        lines.append("# TYPE diffusion_edit_queue_depth gauge")
        lines.append(f"diffusion_edit_queue_depth {ed.queue_depth()}")
        text += "\n".join(lines) + "\n"
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


# -- editing (InstGenIE) -------------------------------------------------------------------------
def _describe_edit(job: EditJob, *, with_output: bool) -> dict:
    body = {"id": job.id, "template": job.request.template, "status": job.status}
    if job.latency is not None:
        body["latency_ms"] = 1000.0 * job.latency
    if job.error is not None:
        body["error"] = job.error
    if with_output and job.output is not None:
        body["image"] = np.asarray(job.output).tolist()
    return body


def _parse_edit(body) -> EditRequest:
    """The JSON body of POST /v1/edits as an `EditRequest`; ValueError names the bad field."""
    if not isinstance(body, dict):
        raise ValueError(f"body: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - {"template", "mask", "label", "prompt", "seed", "wait"})
    if unknown:
        raise ValueError(f"body: unexpected fields {unknown}")
    template = body.get("template")
    if not isinstance(template, str):
        raise ValueError(f"template: expected a template id (string), got {template!r}")
    if "mask" not in body:
        raise ValueError("mask: required (an HxW array of 0/1)")
    try:
        mask = np.asarray(body["mask"])
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"mask: expected an HxW array of numbers, got a ragged list ({e})") from e
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"mask: expected numbers or booleans, got dtype {mask.dtype}")
    if ("label" in body) == ("prompt" in body):
        raise ValueError("label, prompt: give exactly one (a digit 0-9, or a word 'zero'..'nine')")
    if "prompt" in body:
        prompt = body["prompt"]
        words = prompt.strip().lower().split() if isinstance(prompt, str) else []
        hits = [PROMPTS[w] for w in words if w in PROMPTS]
        if len(hits) != 1:
            raise ValueError(
                f"prompt: expected exactly one digit word of {list(PROMPTS)}, got {prompt!r}"
            )
        label = hits[0]
    else:
        label = body["label"]
        if not isinstance(label, int) or isinstance(label, bool):
            raise ValueError(f"label: expected an integer digit 0-9, got {label!r}")
    seed = body.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return EditRequest(template, mask.astype(np.float32), label, seed)


async def _submit_edit(request: web.Request) -> web.Response:
    ed = request.app[EDITOR_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "body: expected a JSON object")
    return await _accept(
        lambda: ed.submit(_parse_edit(body)),
        wait=isinstance(body, dict) and body.get("wait", False),
        describe=lambda job, done: _describe_edit(job, with_output=done),
    )


async def _poll_edit(request: web.Request) -> web.Response:
    job = request.app[EDITOR_KEY].get(request.match_info["id"])
    if job is None:
        return _error(404, f"id: unknown edit {request.match_info['id']!r}")
    return web.json_response(_describe_edit(job, with_output=True))


async def _templates(request: web.Request) -> web.Response:
    ed = request.app[EDITOR_KEY]
    return web.json_response({"templates": ed.templates, "version": ed.engine.store.version})


def make_app(
    runtime: ServingRuntime | None = None, *, editor: EditService | None = None
) -> web.Application:
    """An aiohttp application serving `runtime` (workflows) and/or `editor` (edits); starts
    and stops them with the app."""
    if runtime is None and editor is None:
        raise ValueError("runtime, editor: give at least one service to serve")
    app = web.Application()

    async def lifecycle(app: web.Application):
        for svc in (runtime, editor):
            if svc is not None:
                await svc.start()
        yield
        for svc in (editor, runtime):
            if svc is not None:
                await svc.stop()

    app.cleanup_ctx.append(lifecycle)
    if runtime is not None:
        app[RUNTIME_KEY] = runtime
        app.router.add_post("/v1/requests", _submit)
        app.router.add_get("/v1/requests/{id}", _poll)
        app.router.add_get("/v1/requests/{id}/stream", _stream)
        app.router.add_get("/v1/workflows", _workflows)
        app.router.add_get("/v1/models", _models)
    if editor is not None:
        app[EDITOR_KEY] = editor
        app.router.add_post("/v1/edits", _submit_edit)
        app.router.add_get("/v1/edits/{id}", _poll_edit)
        app.router.add_get("/v1/templates", _templates)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


class ServerHandle:
    """A running localhost server (for tests, benchmarks and the load experiment)."""

    def __init__(self, runner: web.AppRunner, url: str):
        self.runner, self.url = runner, url

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(
    runtime: ServingRuntime | None = None,
    *,
    editor: EditService | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> ServerHandle:
    """Start the HTTP server in the running event loop; port 0 picks a free port."""
    runner = web.AppRunner(make_app(runtime, editor=editor), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sock = site._server.sockets[0]  # noqa: SLF001 - the bound port when port=0
    return ServerHandle(runner, f"http://{host}:{sock.getsockname()[1]}")
