"""Choose among several multiplier controllers with data, not code (one compile for all).

`switch([pid, plo, ...])` is itself a controller whose state carries `which`; every member
is updated each iteration and `lam` is taken from the chosen one. Vectorising over `which`
(with `vmap`) compares controllers on the same seeds inside one compiled program.
"""

from typing import Any, NamedTuple

import jax.numpy as jnp

from ._controllers import MultiplierController


class SwitchState(NamedTuple):
    which: Any  # int32 scalar
    states: tuple


def switch(controllers) -> MultiplierController:
    """A controller that runs all `controllers` and outputs the multipliers of `state.which`."""
    controllers = tuple(controllers)
    if not controllers or not all(isinstance(c, MultiplierController) for c in controllers):
        raise TypeError(
            "controllers: expected a non-empty sequence of MultiplierController, "
            f"got {controllers!r}"
        )

    def init(k):
        return SwitchState(jnp.int32(0), tuple(c.init(k) for c in controllers))

    def update(state, signal):
        outs = [c.update(s, signal) for c, s in zip(controllers, state.states, strict=True)]
        lams = jnp.stack([lam for lam, _ in outs])
        return lams[state.which], SwitchState(state.which, tuple(s for _, s in outs))

    return MultiplierController(init, update, any(c.uses_gradients for c in controllers))


def choose(state: SwitchState, which) -> SwitchState:
    """Return `state` with controller number `which` selected."""
    return state._replace(which=jnp.asarray(which, jnp.int32))
