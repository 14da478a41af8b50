"""Open-loop load: arrival processes, a synthetic production-schema trace, and an HTTP client.

Arrival processes (times in seconds from 0): Poisson, Gamma with a coefficient of variation
(shape 1/CV^2, scale CV^2/rate; CV = 1 is Poisson, larger CV is burstier), and on/off bursts.
The trace follows the production schema `timestamp, client, scene_id, base_model_id,
controlnets[], loras[]`; `trace_to_workflow` maps a row to one of the served workflows.
"""

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


def _rng(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _check_rate(rate: float, duration: float) -> None:
    if not (rate > 0 and np.isfinite(rate)):
        raise ValueError(f"rate: expected a positive finite requests/s, got {rate}")
    if not (duration > 0 and np.isfinite(duration)):
        raise ValueError(f"duration: expected a positive finite number of seconds, got {duration}")


def gamma_arrivals(rate: float, cv: float, duration: float, *, key: jax.Array) -> np.ndarray:
    """Arrival times with Gamma inter-arrival gaps of mean 1/rate and coefficient `cv`."""
    _check_rate(rate, duration)
    if not (cv > 0 and np.isfinite(cv)):
        raise ValueError(f"cv: expected a positive coefficient of variation, got {cv}")
    rng = _rng(key)
    n = int(rate * duration * 3 + 50)
    gaps = rng.gamma(1.0 / cv**2, cv**2 / rate, size=n)
    t = np.cumsum(gaps)
    while t[-1] < duration:
        t = np.concatenate([t, t[-1] + np.cumsum(rng.gamma(1.0 / cv**2, cv**2 / rate, size=n))])
    return t[t < duration]


def poisson_arrivals(rate: float, duration: float, *, key: jax.Array) -> np.ndarray:
    return gamma_arrivals(rate, 1.0, duration, key=key)


def on_off_arrivals(
    rate: float,
    duration: float,
    *,
    burst_factor: float,
    period: float,
    duty: float = 0.25,
    key: jax.Array,
) -> np.ndarray:
    """Poisson arrivals whose rate is `burst_factor` times higher during the first `duty` of
    every `period` (same mean `rate` overall)."""
    _check_rate(rate, duration)
    if not (burst_factor >= 1 and 0 < duty < 1 and period > 0):
        raise ValueError(
            f"burst_factor >= 1, 0 < duty < 1, period > 0 expected, got "
            f"{burst_factor}, {duty}, {period}"
        )
    hi = rate * burst_factor / (duty * burst_factor + 1 - duty)
    lo = hi / burst_factor
    t = poisson_arrivals(hi, duration, key=key)
    keep = _rng(jax.random.fold_in(key, 1)).random(len(t)) < np.where(
        (t % period) < duty * period, 1.0, lo / hi
    )
    return t[keep]


@dataclasses.dataclass(frozen=True)
class TraceRow:
    timestamp: float
    client: str
    scene_id: str
    base_model_id: str
    controlnets: tuple[str, ...]
    loras: tuple[str, ...]


def synthetic_trace(
    rate: float,
    duration: float,
    *,
    cv: float = 1.0,
    num_clients: int = 8,
    loras: Sequence[str] = (),
    lora_share: float = 0.3,
    latent_share: float = 0.0,
    key: jax.Array,
) -> list[TraceRow]:
    """A trace in the production schema: Zipf-popular scenes, 30% with a ControlNet; of the
    others `lora_share` name one of the LoRA adapters `loras` (uniformly) and `latent_share`
    ask for the latent base model `ldm-digits` (the rest for the pixel DiT `dit-digits`)."""
    times = gamma_arrivals(rate, cv, duration, key=key)
    rng = _rng(jax.random.fold_in(key, 7))
    rows = []
    for t in times:
        scene = int(min(rng.zipf(1.6), 50))
        ctrl = ("edge",) if rng.random() < 0.3 else ()
        pick, use_lora = rng.integers(max(len(loras), 1)), rng.random() < lora_share
        lora = (str(loras[pick]),) if loras and use_lora else ()
        latent = rng.random() < latent_share
        rows.append(
            TraceRow(
                float(t),
                f"client{rng.integers(num_clients)}",
                f"scene{scene}",
                "ldm-digits" if latent and not ctrl else "dit-digits",
                ctrl,
                lora if not ctrl and not latent else (),
            )
        )
    return rows


def trace_to_workflow(row: TraceRow) -> str:
    """Which served workflow a trace row asks for: a ControlNet -> `control_upscale`, the
    latent base model -> `t2i_latent`, a LoRA -> `t2i_lora` (the adapter is the request's
    `lora` input), otherwise by scene: `t2i`, `t2i_checked` or `t2i_upscale`."""
    if row.controlnets:
        return "control_upscale"
    if row.base_model_id == "ldm-digits":
        return "t2i_latent"
    if row.loras:
        return "t2i_lora"
    return ("t2i", "t2i_checked", "t2i_upscale")[int(row.scene_id.removeprefix("scene")) % 3]


@dataclasses.dataclass(frozen=True)
class Outcome:
    workflow: str
    sent: float  # seconds from the start of the run
    latency: float  # seconds; inf when not served
    status: int  # HTTP status


async def run_open_loop(
    url: str,
    times: Sequence[float],
    make_request: Callable[[int], dict[str, Any]],
    *,
    timeout_s: float = 60.0,
) -> list[Outcome]:
    """Send request i at `times[i]` (open loop: never waits for earlier answers) with
    `"wait": true`; returns one `Outcome` per request, in sending order."""
    import aiohttp

    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        t0 = time.perf_counter()

        async def one(i: int, at: float) -> Outcome:
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            body = make_request(i) | {"wait": True, "return_outputs": False}
            sent = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/requests", json=body) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                status = 599
            lat = time.perf_counter() - sent if status == 200 else float("inf")
            return Outcome(body["workflow"], sent - t0, lat, status)

        return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(times))))


def slo_attainment(outcomes: Sequence[Outcome], slo_s: dict[str, float] | float) -> float:
    """Share of requests answered 200 within their workflow's SLO (rejections count as misses)."""
    if not outcomes:
        raise ValueError("outcomes: empty")
    ok = [o.latency <= (slo_s[o.workflow] if isinstance(slo_s, dict) else slo_s) for o in outcomes]
    return float(np.mean(ok))


def max_load_at(loads: Sequence[float], attainment: Sequence[float], target: float = 0.9) -> float:
    """Largest load (rate or CV, increasing) whose attainment stays >= `target`, linearly
    interpolated to the first crossing below it; 0 if even the lightest load misses it."""
    x, y = np.asarray(loads, float), np.asarray(attainment, float)
    if x.shape != y.shape or x.size == 0 or np.any(np.diff(x) <= 0):
        raise ValueError(f"loads: expected increasing values matching attainment, got {loads}")
    if y[0] < target:
        return 0.0
    for i in range(1, len(x)):
        if y[i] < target:
            return float(x[i - 1] + (y[i - 1] - target) / (y[i - 1] - y[i]) * (x[i] - x[i - 1]))
    return float(x[-1])


def shifting_mix(
    workflows: Sequence[str],
    rate: float,
    duration: float,
    *,
    cv: float = 1.0,
    phase_s: float,
    skew: float = 1.2,
    key: jax.Array,
) -> list[tuple[float, str]]:
    """Gamma arrivals `(time, workflow)` whose workflow popularity is Zipf-skewed (weight
    1/rank**skew) and reshuffled every `phase_s` seconds: the popular workflow changes."""
    if not workflows:
        raise ValueError("workflows: expected at least one workflow name")
    if not (phase_s > 0 and skew >= 0):
        raise ValueError(f"phase_s > 0 and skew >= 0 expected, got {phase_s}, {skew}")
    times = gamma_arrivals(rate, cv, duration, key=key)
    rng = _rng(jax.random.fold_in(key, 11))
    w = 1.0 / np.arange(1, len(workflows) + 1) ** skew
    ranks = [rng.permutation(len(workflows)) for _ in range(int(duration // phase_s) + 1)]
    picks = rng.random(len(times))
    out = []
    for t, u in zip(times, picks, strict=True):
        p = w[ranks[int(t // phase_s)]]  # workflow i has the weight of its rank this phase
        i = int(np.searchsorted(np.cumsum(p) / p.sum(), u, side="right"))
        out.append((float(t), str(workflows[min(i, len(workflows) - 1)])))
    return out
