"""Samplers: DDPM (ancestral), DDIM and the probability-flow ODE (diffrax), as compiled loops.

A denoiser is `fn(x_t, alpha_bar) -> network output` with the conditioning closed over;
`parameterisation` says how to read that output (see `_param`). Every sampler starts from pure
noise at t = 1 and returns x0_hat at t = 0.
"""

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

from ._param import check_parameterisation, to_x0_eps
from ._schedules import Schedule, discrete_alpha_bars
from ._types import Array, Key

Denoiser = Callable[[Array, Array], Array]


def _check(shape, num_steps, parameterisation):
    check_parameterisation(parameterisation)
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, got {num_steps}")
    if len(shape) < 1:
        raise ValueError(f"shape: expected a leading batch axis, got {shape}")


def _full(ab, batch):
    return jnp.full((batch,), ab)


def _ddpm_step(denoise, parameterisation, ab_t, ab_s, x, z, clip):
    """One ancestral step from t to s < t (posterior q(x_s | x_t, x0_hat))."""
    out = denoise(x, _full(ab_t, x.shape[0]))
    x0, _ = to_x0_eps(out, x, _full(ab_t, x.shape[0]), parameterisation)
    if clip is not None:
        x0 = jnp.clip(x0, -clip, clip)
    alpha = ab_t / ab_s
    beta = 1.0 - alpha
    mean = (jnp.sqrt(ab_s) * beta / (1 - ab_t)) * x0 + (
        jnp.sqrt(alpha) * (1 - ab_s) / (1 - ab_t)
    ) * x
    var = beta * (1 - ab_s) / (1 - ab_t)
    return mean + jnp.sqrt(var) * z, x0


def ddpm_sample(
    denoise: Denoiser,
    shape: tuple[int, ...],
    schedule: Schedule,
    *,
    key: Key,
    num_steps: int = 1000,
    parameterisation: str = "eps",
    clip_x0: float | None = None,
) -> Array:
    """Ancestral DDPM sampling over the T-step grid, as one `lax.fori_loop`."""
    _check(shape, num_steps, parameterisation)
    ab = discrete_alpha_bars(schedule, num_steps)
    key, k0 = jax.random.split(key)
    x = jax.random.normal(k0, shape)
    keys = jax.random.split(key, num_steps)

    def body(j, carry):
        x, _ = carry
        i = num_steps - j
        z = jax.random.normal(keys[j], shape) * (i > 1)
        return _ddpm_step(denoise, parameterisation, ab[i], ab[i - 1], x, z, clip_x0)

    _, x0 = jax.lax.fori_loop(0, num_steps, body, (x, x))
    return x0


def ddpm_sample_reference(
    denoise: Denoiser,
    shape,
    schedule: Schedule,
    *,
    key: Key,
    num_steps: int = 1000,
    parameterisation: str = "eps",
    clip_x0: float | None = None,
) -> Array:
    """The same sampler as a Python loop (the plain reference for the compiled one)."""
    _check(shape, num_steps, parameterisation)
    ab = discrete_alpha_bars(schedule, num_steps)
    key, k0 = jax.random.split(key)
    x = jax.random.normal(k0, shape)
    keys = jax.random.split(key, num_steps)
    x0 = x
    for j in range(num_steps):
        i = num_steps - j
        z = jax.random.normal(keys[j], shape) * (i > 1)
        x, x0 = _ddpm_step(denoise, parameterisation, ab[i], ab[i - 1], x, z, clip_x0)
    return x0


def ddim_sample(
    denoise: Denoiser,
    shape: tuple[int, ...],
    schedule: Schedule,
    *,
    key: Key,
    num_steps: int = 50,
    eta: float = 0.0,
    parameterisation: str = "eps",
    clip_x0: float | None = None,
    x_init: Array | None = None,
) -> Array:
    """DDIM on an even grid t_k = k / num_steps (eta = 0: deterministic), as a `lax.scan`."""
    _check(shape, num_steps, parameterisation)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta: expected a value in [0, 1], got {eta}")
    t = jnp.linspace(1.0, 0.0, num_steps + 1)
    ab = schedule.alpha_bar(t).at[-1].set(1.0)
    key, k0 = jax.random.split(key)
    x = jax.random.normal(k0, shape) if x_init is None else x_init
    keys = jax.random.split(key, num_steps)

    def step(x, inputs):
        ab_t, ab_s, k = inputs
        abv = _full(ab_t, shape[0])
        x0, eps = to_x0_eps(denoise(x, abv), x, abv, parameterisation)
        if clip_x0 is not None:
            x0 = jnp.clip(x0, -clip_x0, clip_x0)
            eps = (x - jnp.sqrt(ab_t) * x0) / jnp.sqrt(1 - ab_t)
        sigma = eta * jnp.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        dir_ = jnp.sqrt(jnp.maximum(1 - ab_s - sigma**2, 0.0)) * eps
        x_new = jnp.sqrt(ab_s) * x0 + dir_ + sigma * jax.random.normal(k, shape)
        return x_new, None

    x, _ = jax.lax.scan(step, x, (ab[:-1], ab[1:], keys))
    return x


def ode_sample(
    denoise: Denoiser,
    shape: tuple[int, ...],
    schedule: Schedule,
    *,
    key: Key,
    num_steps: int = 20,
    parameterisation: str = "eps",
    t_min: float = 1e-3,
    t_max: float = 1.0,
    solver: str = "heun",
) -> Array:
    """Probability-flow ODE, solved with diffrax in the scaled variables of DDIM / EDM.

    With y = x_t / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) / alpha_bar) the PF-ODE
    dx/dt = 1/2 dlog(alpha_bar)/dt (x - eps_hat / sqrt(1 - alpha_bar)) becomes
    dy/dsigma = eps_hat. Steps go through the sigma values of an even t grid from t_max to
    t_min. The first step (from sigma ~ 1e3 at t = 1) and the last (to sigma ~ 0) are Euler
    (= DDIM) steps, as in EDM: a trapezoid over the huge first interval multiplies the
    network's small eps errors by ~1e3, and eps_hat read from an x0-network near sigma = 0 is
    ill-conditioned. The steps between use `solver` (Heun: 2 network evaluations each), then
    one final x0_hat read-out at t_min. Network evaluations (Heun): 2 for one step, else
    2 * num_steps - 1.
    """
    _check(shape, num_steps, parameterisation)
    if not 0.0 < t_min < t_max <= 1.0:
        raise ValueError(f"t_min, t_max: expected 0 < t_min < t_max <= 1, got {t_min}, {t_max}")
    solvers = {"heun": diffrax.Heun, "euler": diffrax.Euler, "tsit5": diffrax.Tsit5}
    if solver not in solvers:
        raise ValueError(f"solver: expected one of {sorted(solvers)}, got {solver!r}")
    ab_grid = schedule.alpha_bar(jnp.linspace(t_max, t_min, num_steps + 1))
    # integrate in tau = -sigma so that time increases
    taus = -jnp.sqrt((1.0 - ab_grid) / ab_grid)
    x1 = jax.random.normal(key, shape)

    def eps_hat(tau, y):
        ab = 1.0 / (1.0 + tau**2)
        abv = _full(ab, shape[0])
        x = y * jnp.sqrt(ab)
        return to_x0_eps(denoise(x, abv), x, abv, parameterisation)[1]

    y0 = x1 / jnp.sqrt(ab_grid[0])
    y = y0 - (taus[1] - taus[0]) * eps_hat(taus[0], y0)  # Euler (= DDIM) first step
    if num_steps > 2:
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda tau, y, args: -eps_hat(tau, y)),
            solvers[solver](),
            t0=taus[1],
            t1=taus[-2],
            dt0=None,
            y0=y,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.StepTo(ts=taus[1:-1]),
            max_steps=num_steps,
        )
        y = sol.ys[0]
    if num_steps > 1:  # Euler last step: eps_hat near sigma = 0 is ill-conditioned
        y = y - (taus[-1] - taus[-2]) * eps_hat(taus[-2], y)
    ab = _full(ab_grid[-1], shape[0])
    x = y * jnp.sqrt(ab_grid[-1])
    x0, _ = to_x0_eps(denoise(x, ab), x, ab, parameterisation)
    return x0
