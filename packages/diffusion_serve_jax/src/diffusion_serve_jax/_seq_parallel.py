"""Sequence (patch) parallelism for one request: a DiT whose tokens are split over devices.

Adaptive parallelism within one image: the latent's patch tokens are sharded over a 1-D
device mesh with `jax.shard_map`; each device embeds, modulates and runs the MLPs of its own
tokens, and attention stays exact by all-gathering every block's keys and values (each
device's queries attend to all tokens). The result equals the unsharded `DiT` up to float
rounding. `sequence_parallel_specs` turns the zoo's `denoiser` / `denoiser_ctrl` into models
that sample with it, for `ServingRuntime(split_executors=...)`, which runs a lone request
split when nothing else is queued or running (see `_workers`).
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, Mesh
from jax.sharding import PartitionSpec as P

from ._diffusion import ddim_sample
from ._models import DiT, attention
from ._types import CondVec, Images, Timesteps, Tokens
from ._workflow import ModelSpec
from ._zoo import Zoo, sample_noise, zoo_model_specs


def _check_mesh(mesh: Mesh, num_tokens: int) -> str:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh: expected a 1-D mesh, got axes {mesh.axis_names}")
    n = mesh.devices.size
    if num_tokens % n:
        raise ValueError(f"mesh: its {n} devices must divide the DiT's {num_tokens} tokens evenly")
    return mesh.axis_names[0]


class SequenceParallelDiT:
    """Call like the `DiT` it wraps (inside or outside jit); tokens run sharded on `mesh`."""

    def __init__(self, dit: DiT, mesh: Mesh):
        self.axis = _check_mesh(mesh, dit.num_tokens)
        # Auto axes: shard_map then lays replicated (or host) arguments out by token itself
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,))
        self.dit, self.mesh = dit, mesh
        self.graphdef, self.params = nnx.split(dit)
        tok = P(None, self.axis)
        # jitted so that host or single-device arguments are laid out on the mesh as needed
        self._run = {
            n_extra: jax.jit(
                jax.shard_map(
                    self._local,
                    mesh=mesh,
                    in_specs=(P(), tok, tok, P(), P()) + (tok,) * n_extra,
                    out_specs=tok,
                )
            )
            for n_extra in (0, 1)
        }

    def _local(self, params, patches, ids, t, c, *control):
        """One device's tokens through the DiT; K/V all-gathered for exact attention."""
        dit = nnx.merge(self.graphdef, params)
        h = dit.embed_patches(patches, ids)
        if control:
            h = h + control[0]
        cvec = dit.conditioning(t, c)
        for block in dit.blocks:
            mods = block.modulation(cvec)
            q, k, v = block.attention_inputs(h, mods)
            k = jax.lax.all_gather(k, self.axis, axis=1, tiled=True)
            v = jax.lax.all_gather(v, self.axis, axis=1, tiled=True)
            h = block.finish(h, attention(q, k, v), mods)
        return dit.head(h, cvec)

    def __call__(
        self, x: Images, t: Timesteps, c: CondVec, control: Tokens | None = None
    ) -> Images:
        b, n = x.shape[0], self.dit.num_tokens
        ids = jnp.broadcast_to(jnp.arange(n), (b, n))
        extra = () if control is None else (control,)
        out = self._run[len(extra)](self.params, self.dit.patchify(x), ids, t, c, *extra)
        return self.dit.unpatchify(out)


def sequence_parallel_specs(zoo: Zoo, mesh: Mesh) -> list[ModelSpec]:
    """The zoo's `denoiser` and `denoiser_ctrl` with their DiT split over `mesh` by tokens:
    the same names, inputs, outputs and parameters, and (to float tolerance) the same images.
    Serve them with `NodeExecutor(spec, mesh=mesh, shard_batch=False)`."""
    _check_mesh(mesh, zoo.diffusion.dit.num_tokens)
    c, sched = zoo.config, zoo.schedule
    dit_gd = nnx.graphdef(zoo.diffusion.dit)
    base = {s.name: s for s in zoo_model_specs(zoo)}

    def denoise(p, x, control=None):
        dit = SequenceParallelDiT(nnx.merge(dit_gd, p), mesh)
        out = ddim_sample(
            dit,
            x["cond"],
            x["uncond"],
            sample_noise(x["seed"], (8, 8)),
            schedule=sched,
            steps=c.sample_steps,
            guidance=c.guidance,
            control=control,
        )
        return {"image": out}

    fns = {
        "denoiser": denoise,
        "denoiser_ctrl": lambda p, x: denoise(p, x, x["control"]),
    }
    return [
        ModelSpec(name, base[name].inputs, base[name].outputs, fn, base[name].params)
        for name, fn in fns.items()
    ]
