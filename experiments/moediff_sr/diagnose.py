"""Why does (or doesn't) the MoE beat the single expert? Diagnostics of trained `small` runs
on the VALIDATION slab (the test slabs are never loaded).

    python experiments/moediff_sr/diagnose.py /tmp/moediff_sr_seed0 /tmp/moediff_sr_seed1 \\
        /tmp/moediff_sr_seed2

Each workdir is a finished `main.py` run of the `small` preset with `--config.seed=<i>`
(the seed is the workdir name's trailing digits). For every validation setting it prints
the PSNR of the MoE's aggregate, of each expert alone (gate forced to one expert), of the
single expert and of bicubic, whole-slice and per region; the gate's mean entropy, its
region/top-expert mutual information, the share of pixels whose top expert changes between
the clean and the bias+noise version of the same slice, the correlation of each expert's
gate with the input intensity, and how different the experts' outputs are.
"""

import json
import pathlib
import sys

import config as moediff_config
import jax
import jax.numpy as jnp
import numpy as np
import train as T
from flax import nnx

import mri_sr_jax as msr


def load(workdir):
    """The `small` config of a seed run (the seed is the workdir name's trailing digits)."""
    seed = int("".join(ch for ch in pathlib.Path(workdir).name if ch.isdigit()) or 0)
    c = moediff_config.get_config("small")
    c.seed = seed
    return c


def run(workdir):
    c = load(workdir)
    k_train, _, k_sample, schedule, _, pool, nets, val_sets = T.setup(c)
    trained = {}
    for i, name in enumerate(T.MODELS):
        if name == "edsr_lite":
            continue
        gd, params, _, best = T.train_model(
            name, nets[name], pool, c, schedule, workdir, key=jax.random.fold_in(k_train, i)
        )
        trained[name] = (gd, params)
    ab1 = msr.discrete_alpha_bars(schedule, 1)[1]
    gd, params = trained["moediff_sr"]

    @jax.jit
    def moe_parts(params, up, k):
        model = nnx.merge(gd, params)
        x = jax.random.normal(k, up.shape + (1,))
        ab = jnp.full((up.shape[0],), ab1)
        agg, outs, gate = model.forward_all(x, up[..., None], ab)
        g = msr.gate_to_pixels(gate, model.patch, model.gate_upsample)
        return agg[..., 0], outs, g

    report = {"seed": c.seed, "settings": {}}
    tops = {}
    for (s, cond), (hr, up, masks) in val_sets.items():
        agg, outs, g = moe_parts(params, up, jax.random.fold_in(k_sample, 1))
        pred_single = T.compiled_predictor(
            "single_expert", *trained["single_expert"], up[..., None], c, schedule
        )(trained["single_expert"][1], up[..., None], k_sample)
        pred_moe = T.compiled_predictor("moediff_sr", gd, params, up[..., None], c, schedule)(
            params, up[..., None], k_sample
        )
        rows = {
            "bicubic": up,
            "single": pred_single,
            "moe": pred_moe,
            "moe_agg_check": up + c.residual_scale * agg,
        }
        for i in range(outs.shape[-1]):
            rows[f"expert{i}"] = up + c.residual_scale * outs[..., i]
        res = {n: T.median_rows(T.slice_metrics(p, hr, masks)) for n, p in rows.items()}
        g = np.asarray(g)
        ent = T.gate_entropy(g)
        top = g.argmax(-1)
        tops[(s, cond)] = top
        mi = T.region_expert_mi(top, np.asarray(masks), g.shape[-1])
        brain = np.asarray(hr) > 0.05
        upn = np.asarray(up)
        corr = [float(np.corrcoef(g[..., i][brain], upn[brain])[0, 1]) for i in range(g.shape[-1])]
        o = np.asarray(outs)[brain]
        spread = float(np.abs(o - o.mean(-1, keepdims=True)).mean() / np.abs(o).mean())
        report["settings"][f"x{s} {cond}"] = {
            "psnr": {n: round(r["psnr"], 3) for n, r in res.items()},
            "psnr_deep_wm": {n: round(r["psnr/deep_wm"], 3) for n, r in res.items()},
            "ssim": {n: round(r["ssim"], 4) for n, r in res.items()},
            "gate_entropy_norm": round(ent, 4),
            "gate_mi_bits": round(mi, 4),
            "gate_intensity_corr": [round(v, 3) for v in corr],
            "expert_spread_rel": round(spread, 4),
            "top_share": [round(float((top == i).mean()), 3) for i in range(g.shape[-1])],
        }
    for s in c.eval_scales:
        a, b = tops[(s, "clean")], tops[(s, "noisy")]
        report["settings"][f"x{s} noisy"]["top_changed_vs_clean"] = round(float((a != b).mean()), 4)
    return report


if __name__ == "__main__":
    for wd in sys.argv[1:]:
        print(json.dumps(run(wd)), flush=True)
