"""The HTTP API (Starlette, an ASGI app; `serve` runs it on uvicorn) over a `ServingRuntime`.

    POST /v1/requests            {"workflow", "inputs", "priority"?, "slo_ms"?, "wait"?}
                                 -> 202 {"id", "status"}; with "wait": true -> 200 with outputs
    GET  /v1/requests/{id}       -> status, and outputs once done (poll)
    GET  /v1/requests/{id}/stream -> NDJSON events: accepted, then done/failed (stream)
    GET  /v1/workflows, /v1/models, /healthz, /metrics (Prometheus text)

With an `EditService` (InstGenIE editing):
    POST /v1/edits               {"template" | "image", "mask" (HxW of 0/1), "label" | "prompt",
                                  "seed"?, "wait"?} -> 202 {"id", "status", "template"};
                                  "wait": true -> 200 + image
    GET  /v1/edits/{id}          -> status, and the edited image once done (poll)
    POST /v1/templates           {"image"} -> 201 {"template", "version", "new": true}
                                  (200 with "new": false when that image is already known)
    GET  /v1/templates           -> template ids and the weights version of their caches

An uploaded template "image" is a JSON nested list, H x W numbers in [-1, 1] (the model's image
shape and value range); its id is the digest of its float32 bytes and the weights version
(`image_template_id`), returned as "template" so later edits can send only the id. Edit and
template bodies larger than `max_body_bytes` get 413.

Bad requests get 400/404/413 with a message; overload gets 429 with `Retry-After`; a stopping
server answers 503; an accepted request that fails returns 500 with the error. Shutdown is
graceful: uvicorn stops accepting connections and lets open ones finish, then the app's
lifespan refuses new requests (503) and drains the accepted ones for up to `drain_s` seconds
before stopping its services; whatever is still unfinished then fails with `ShuttingDown`.
Nothing that was accepted disappears without an answer.
"""

import asyncio
import contextlib
import json
import math
import socket

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ._edit_service import EditJob, EditService
from ._requests import Overloaded, Request, ShuttingDown
from ._runtime import ServingRuntime
from ._step_batching import EditRequest

PROMPTS = {
    w: i
    for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    )
}


def _json(body, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # json.dumps directly: Starlette's JSONResponse refuses NaN, which a model output may hold
    return Response(json.dumps(body), status, headers, media_type="application/json")


def _error(status: int, message: str, **headers: str) -> Response:
    return _json({"error": message}, status, headers or None)


class BodyTooLarge(ValueError):
    """The request body is over the server's `max_body_bytes` (HTTP 413)."""


async def _body(request: HttpRequest, limit: int | None = None):
    """The parsed JSON body; ValueError when it is not JSON, `BodyTooLarge` past `limit` bytes
    (checked on the declared length, then while reading, so a large body is never buffered)."""
    if limit is None:
        raw = await request.body()
    else:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"body: {declared} bytes, more than the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body: over the limit of {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError("body: expected a JSON object") from e


def _runtime(request: HttpRequest) -> ServingRuntime | None:
    return getattr(request.app.state, "runtime", None)


def _editor(request: HttpRequest) -> EditService | None:
    return getattr(request.app.state, "editor", None)


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


async def _submit(request: HttpRequest) -> Response:
    rt = _runtime(request)
    try:
        body = await _body(request)
    except ValueError as e:
        return _error(400, str(e))
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


async def _accept(submit, *, wait, describe, accepted=None) -> Response:
    """Submit a request or edit, map refusals to 4xx/5xx, then answer 202 or wait for it.

    `describe(job, done)` renders the job; `done` is False when it failed or was cut off;
    `accepted(job)`, when given, adds fields to the 202 answer.
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
        return _json(
            {"id": job.id, "status": job.status, **(accepted(job) if accepted else {})}, 202
        )
    try:
        await asyncio.shield(job.future)
    except ShuttingDown:
        return _json(describe(job, False), 503)
    except Exception:  # noqa: BLE001 - the failure is in job.error
        return _json(describe(job, False), 500)
    return _json(describe(job, True))


async def _poll(request: HttpRequest) -> Response:
    req = _runtime(request).get(request.path_params["id"])
    if req is None:
        return _error(404, f"id: unknown request {request.path_params['id']!r}")
    return _json(_describe(req, with_outputs=True))


async def _stream(request: HttpRequest) -> Response:
    req = _runtime(request).get(request.path_params["id"])
    if req is None:
        return _error(404, f"id: unknown request {request.path_params['id']!r}")

    async def events():
        yield json.dumps({"id": req.id, "status": req.status}) + "\n"
        try:
            await asyncio.shield(req.future)
        except Exception:  # noqa: BLE001, S110 - reported in the final event
            pass
        yield json.dumps(_describe(req, with_outputs=True)) + "\n"

    return StreamingResponse(events(), media_type="application/x-ndjson")


async def _workflows(request: HttpRequest) -> Response:
    rt = _runtime(request)
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
    return _json(out)


async def _models(request: HttpRequest) -> Response:
    rt = _runtime(request)
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
    return _json(out)


async def _healthz(request: HttpRequest) -> Response:
    body: dict = {"status": "ok"}
    if (rt := _runtime(request)) is not None:
        body.update(mode=rt.mode, queues=rt.queue_depths())
    if (ed := _editor(request)) is not None:
        body["edit_queue"] = ed.queue_depth()
    return _json(body)


async def _metrics(request: HttpRequest) -> Response:
    rt = _runtime(request)
    text = rt.metrics_text() if rt is not None else ""
    if (ed := _editor(request)) is not None:
        lines = ["# TYPE diffusion_edits_total counter"]
        for status in ("accepted", "rejected", "done", "failed"):
            lines.append(f'diffusion_edits_total{{status="{status}"}} {ed.counts[status]}')
        lines.append("# TYPE diffusion_edit_queue_depth gauge")
        lines.append(f"diffusion_edit_queue_depth {ed.queue_depth()}")
        store = ed.engine.store
        lines.append("# TYPE diffusion_template_uploads_total counter")
        for outcome in ("new", "known"):
            n = ed.counts[f"uploads_{outcome}"]
            lines.append(f'diffusion_template_uploads_total{{outcome="{outcome}"}} {n}')
        lines.append("# TYPE diffusion_template_cache_total counter")
        for result, n in (("hit", store.hits), ("disk", store.disk_hits), ("miss", store.misses)):
            lines.append(f'diffusion_template_cache_total{{result="{result}"}} {n}')
        text += "\n".join(lines) + "\n"
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


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


def _array(body: dict, field: str, what: str) -> np.ndarray:
    """`body[field]` (nested JSON lists) as an array; ValueError naming `field` when ragged."""
    try:
        return np.asarray(body[field])
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{field}: expected {what}, got a ragged list ({e})") from e


def _parse_image(body) -> np.ndarray:
    """The uploaded template image of a JSON body (an HxW nested list of numbers)."""
    if "image" not in body:
        raise ValueError("image: required (an HxW array of numbers in [-1, 1])")
    return _array(body, "image", "an HxW array of numbers in [-1, 1]")  # checked by the service


def _parse_edit(body) -> tuple[EditRequest, np.ndarray | None]:
    """The JSON body of POST /v1/edits as an `EditRequest` and the uploaded template image
    (None when the body names a template id); ValueError names the bad field."""
    if not isinstance(body, dict):
        raise ValueError(f"body: expected a JSON object, got {type(body).__name__}")
    fields = {"template", "image", "mask", "label", "prompt", "seed", "wait"}
    unknown = sorted(set(body) - fields)
    if unknown:
        raise ValueError(f"body: unexpected fields {unknown}")
    if ("template" in body) == ("image" in body):
        raise ValueError(
            "template, image: give exactly one (a template id, or the template image itself)"
        )
    image = None
    if "image" in body:
        image = _parse_image(body)
        template = ""
    else:
        template = body["template"]
        if not isinstance(template, str) or not template:
            raise ValueError(f"template: expected a template id (string), got {template!r}")
    if "mask" not in body:
        raise ValueError("mask: required (an HxW array of 0/1)")
    mask = _array(body, "mask", "an HxW array of numbers")
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
    return EditRequest(template, mask.astype(np.float32), label, seed), image


async def _edit_body(request: HttpRequest):
    """The JSON body of an editing route, or the 400/413 answer refusing it."""
    try:
        return await _body(request, request.app.state.max_body_bytes), None
    except BodyTooLarge as e:
        return None, _error(413, str(e))
    except ValueError as e:
        return None, _error(400, str(e))


async def _submit_edit(request: HttpRequest) -> Response:
    ed = _editor(request)
    body, refused = await _edit_body(request)
    if refused is not None:
        return refused

    def submit():
        req, image = _parse_edit(body)
        return ed.submit(req, image=image)

    return await _accept(
        submit,
        wait=isinstance(body, dict) and body.get("wait", False),
        describe=lambda job, done: _describe_edit(job, with_output=done),
        accepted=lambda job: {"template": job.request.template},
    )


async def _upload_template(request: HttpRequest) -> Response:
    ed = _editor(request)
    body, refused = await _edit_body(request)
    if refused is not None:
        return refused
    try:
        if not isinstance(body, dict):
            raise ValueError(f"body: expected a JSON object, got {type(body).__name__}")
        if unknown := sorted(set(body) - {"image"}):
            raise ValueError(f"body: unexpected fields {unknown}")
        tid, new = ed.upload(_parse_image(body))
    except ValueError as e:
        return _error(400, str(e))
    return _json(
        {"template": tid, "version": ed.engine.store.version, "new": new}, 201 if new else 200
    )


async def _poll_edit(request: HttpRequest) -> Response:
    job = _editor(request).get(request.path_params["id"])
    if job is None:
        return _error(404, f"id: unknown edit {request.path_params['id']!r}")
    return _json(_describe_edit(job, with_output=True))


async def _templates(request: HttpRequest) -> Response:
    ed = _editor(request)
    return _json({"templates": ed.templates, "version": ed.engine.store.version})


def make_app(
    runtime: ServingRuntime | None = None,
    *,
    editor: EditService | None = None,
    drain_s: float = 30.0,
    max_body_bytes: int = 4 << 20,
) -> Starlette:
    """A Starlette (ASGI) application serving `runtime` (workflows) and/or `editor` (edits).
    Its lifespan starts them, and at shutdown drains their accepted requests for up to
    `drain_s` seconds (new ones get 503) before stopping them. Editing bodies (an edit, an
    uploaded template) over `max_body_bytes` get 413."""
    if runtime is None and editor is None:
        raise ValueError("runtime, editor: give at least one service to serve")
    if not (drain_s >= 0 and math.isfinite(drain_s)):
        raise ValueError(f"drain_s: expected a finite number of seconds >= 0, got {drain_s}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes: expected >= 1, got {max_body_bytes}")
    services = [svc for svc in (runtime, editor) if svc is not None]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        for svc in services:
            await svc.start()
        yield
        await asyncio.gather(*(svc.drain(drain_s) for svc in services))
        for svc in reversed(services):
            await svc.stop()

    routes = []
    if runtime is not None:
        routes += [
            Route("/v1/requests", _submit, methods=["POST"]),
            Route("/v1/requests/{id}", _poll),
            Route("/v1/requests/{id}/stream", _stream),
            Route("/v1/workflows", _workflows),
            Route("/v1/models", _models),
        ]
    if editor is not None:
        routes += [
            Route("/v1/edits", _submit_edit, methods=["POST"]),
            Route("/v1/edits/{id}", _poll_edit),
            Route("/v1/templates", _templates),
            Route("/v1/templates", _upload_template, methods=["POST"]),
        ]
    routes += [Route("/healthz", _healthz), Route("/metrics", _metrics)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime, app.state.editor = runtime, editor
    app.state.max_body_bytes = max_body_bytes
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the caller's event loop: signals stay the caller's to handle."""

    def capture_signals(self):
        return contextlib.nullcontext()


class ServerHandle:
    """A running localhost uvicorn server (for tests, benchmarks and the load experiment)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task, url: str):
        self.server, self.task, self.url = server, task, url

    async def close(self) -> None:
        """Graceful shutdown: stop accepting, finish open connections, drain, stop."""
        self.server.should_exit = True
        await self.task


async def serve(
    runtime: ServingRuntime | None = None,
    *,
    editor: EditService | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    drain_s: float = 30.0,
    max_body_bytes: int = 4 << 20,
) -> ServerHandle:
    """Start uvicorn serving `make_app(runtime, editor=..., drain_s=..., max_body_bytes=...)` in
    the running event loop, on a real socket; port 0 picks a free port. Returns once the app
    has started."""
    app = make_app(runtime, editor=editor, drain_s=drain_s, max_body_bytes=max_body_bytes)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        app,
        lifespan="on",
        http="h11",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=drain_s,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():  # startup failed: re-raise its error
            sock.close()
            await task
            raise RuntimeError("uvicorn exited during startup")
        await asyncio.sleep(0.005)
    return ServerHandle(server, task, f"http://{host}:{sock.getsockname()[1]}")
