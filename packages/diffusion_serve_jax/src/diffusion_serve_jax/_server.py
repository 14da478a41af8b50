"""The HTTP API (aiohttp) over a `ServingRuntime`.

    POST /v1/requests            {"workflow", "inputs", "priority"?, "slo_ms"?, "wait"?}
                                 -> 202 {"id", "status"}; with "wait": true -> 200 with outputs
    GET  /v1/requests/{id}       -> status, and outputs once done (poll)
    GET  /v1/requests/{id}/stream -> NDJSON events: accepted, then done/failed (stream)
    GET  /v1/workflows, /v1/models, /healthz, /metrics (Prometheus text)

Bad requests get 400/404 with a message; overload gets 429 with `Retry-After`; a stopping
server answers 503; an accepted request that fails returns 500 with the error. Nothing that
was accepted disappears without an answer.
"""

import asyncio
import json
import math

import numpy as np
from aiohttp import web

from ._runtime import Overloaded, Request, ServingRuntime, ShuttingDown

RUNTIME_KEY = web.AppKey("runtime", ServingRuntime)


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
    try:
        req = rt.submit(
            workflow,
            body.get("inputs"),
            priority=priority,
            slo_s=None if slo_ms is None else slo_ms / 1000.0,
        )
    except KeyError as e:
        return _error(404, str(e.args[0]))
    except ValueError as e:
        return _error(400, str(e))
    except Overloaded as e:
        return _error(429, str(e), **{"Retry-After": str(max(1, math.ceil(e.retry_after)))})
    except ShuttingDown as e:
        return _error(503, str(e))
    if not body.get("wait", False):
        return web.json_response({"id": req.id, "status": req.status}, status=202)
    try:
        await asyncio.shield(req.future)
    except ShuttingDown:
        return web.json_response(_describe(req, with_outputs=False), status=503)
    except Exception:  # noqa: BLE001 - the failure is in req.error
        return web.json_response(_describe(req, with_outputs=False), status=500)
    return web.json_response(_describe(req, with_outputs=body.get("return_outputs", True)))


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
    rt = request.app[RUNTIME_KEY]
    return web.json_response({"status": "ok", "mode": rt.mode, "queues": rt.queue_depths()})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[RUNTIME_KEY].metrics_text(), content_type="text/plain", charset="utf-8"
    )


def make_app(runtime: ServingRuntime) -> web.Application:
    """An aiohttp application serving `runtime`; starts/stops it with the app."""
    app = web.Application()
    app[RUNTIME_KEY] = runtime

    async def lifecycle(app: web.Application):
        await runtime.start()
        yield
        await runtime.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/requests", _submit)
    app.router.add_get("/v1/requests/{id}", _poll)
    app.router.add_get("/v1/requests/{id}/stream", _stream)
    app.router.add_get("/v1/workflows", _workflows)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


class ServerHandle:
    """A running localhost server (for tests, benchmarks and the load experiment)."""

    def __init__(self, runner: web.AppRunner, url: str):
        self.runner, self.url = runner, url

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(runtime: ServingRuntime, *, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """Start the HTTP server in the running event loop; port 0 picks a free port."""
    runner = web.AppRunner(make_app(runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sock = site._server.sockets[0]  # noqa: SLF001 - the bound port when port=0
    return ServerHandle(runner, f"http://{host}:{sock.getsockname()[1]}")
