"""Choose MoEDiff-SR variants on the VALIDATION slab only (the test slabs are never loaded).

    python experiments/moediff_sr/variant_study.py '[{}, {"moe_objective": "gated"}]' \\
        --models=moediff_sr,single_expert --out=/tmp/moediff_variants.jsonl

Each JSON object overrides the `small` config; every listed model is trained with the
experiment's own loop (early stopping on the validation slab) and its validation PSNR per
setting and mean are printed and appended to `--out` as one JSON line per (variant, model).
"""

import argparse
import json
import sys
import tempfile
import time

import config as moediff_config
import jax
import jax.numpy as jnp
import numpy as np
import train as T
from flax import nnx

import mri_sr_jax as msr

NOISE_LEVELS = (0.25, 0.5, 0.75, 1.0)


def routing_stats(trained, val_sets, c, schedule, key):
    """Per validation setting: the gate's normalised entropy (1 = uniform), its region /
    top-expert mutual information (bits), the share of pixels whose top expert differs from
    the clean version of the same slice (bias+noise settings), and each expert's validation
    PSNR alone (gate forced to that expert; DDIM-1 from the same noise); on the last setting
    also the gate's mean expert weights, region MI and entropy at each of `NOISE_LEVELS`."""
    gd, params = trained
    ab1 = msr.discrete_alpha_bars(schedule, 1)[1]

    @jax.jit
    def parts(params, up):
        model = nnx.merge(gd, params)
        x = jax.random.normal(key, up.shape + (1,))
        _, outs, gate = model.forward_all(x, up[..., None], jnp.full((up.shape[0],), ab1))
        return outs, msr.gate_to_pixels(gate, model.patch, model.gate_upsample)

    out, tops = {}, {}
    for (s, cond), (hr, up, masks) in val_sets.items():
        outs, g = (np.asarray(a) for a in parts(params, up))
        top = g.argmax(-1)
        tops[(s, cond)] = top
        alone = [
            T.median_rows(T.slice_metrics(up + c.residual_scale * outs[..., i], hr, masks))
            for i in range(outs.shape[-1])
        ]
        out[f"x{s} {cond}"] = {
            "gate_entropy": round(T.gate_entropy(g), 4),
            "gate_mi_bits": round(T.region_expert_mi(top, np.asarray(masks), g.shape[-1]), 4),
            "expert_alone_psnr": [round(a["psnr"], 3) for a in alone],
        }
    # session 10: does the gate route by noise level? Its mean expert weights and region MI at
    # a few noise levels on the last setting (the gate sees only the conditioning and t)
    s_last = (max(c.eval_scales), c.eval_conditions[-1])
    up, masks = val_sets[s_last][1], np.asarray(val_sets[s_last][2])
    by_t = {}
    for t in NOISE_LEVELS:
        g = np.asarray(T._gates(trained, up, schedule, t))
        by_t[str(t)] = {
            "mean": [round(float(v), 4) for v in g.reshape(-1, g.shape[-1]).mean(0)],
            "mi_bits": round(T.region_expert_mi(g.argmax(-1), masks, g.shape[-1]), 4),
            "entropy": round(T.gate_entropy(g), 4),
        }
    out[f"x{s_last[0]} {s_last[1]} gate by t"] = by_t
    for s in c.eval_scales:
        if (s, "clean") in tops and (s, "noisy") in tops:
            changed = float((tops[(s, "clean")] != tops[(s, "noisy")]).mean())
            out[f"x{s} noisy"]["top_changed_vs_clean"] = round(changed, 4)
    return out


def run(overrides, models, out, preset="small"):
    c = moediff_config.get_config(preset)
    c.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    k_train, _, k_sample, schedule, _, pool, nets, val_sets = T.setup(c)
    for i, name in enumerate(T.MODELS):
        if name not in models:
            continue
        t0 = time.process_time()
        gd = nnx.split(nets[name])[0]
        fns = {}

        def scores(params, gd=gd, name=name, fns=fns):
            out = {}
            for (s, cond), (hr, up, masks) in val_sets.items():
                if up.shape not in fns:
                    fns[up.shape] = T.compiled_predictor(
                        name, gd, params, up[..., None], c, schedule
                    )
                pred = fns[up.shape](params, up[..., None], k_sample)
                out[f"x{s} {cond}"] = T.median_rows(T.slice_metrics(pred, hr, masks))["psnr"]
            return out

        curve = []

        def mean_score(p, f=scores, curve=curve):
            curve.append(round(float(np.mean(list(f(p).values()))), 3))
            return curve[-1]

        with tempfile.TemporaryDirectory() as wd:
            gd, params, _, best = T.train_model(
                name,
                nets[name],
                pool,
                c,
                schedule,
                wd,
                key=jax.random.fold_in(k_train, i),
                val_score=mean_score,
            )
        res = {k: round(v, 3) for k, v in scores(params).items()}
        mi, routing = None, None
        if name == "moediff_sr":
            up = val_sets[(max(c.eval_scales), c.eval_conditions[-1])][1]
            gates = np.asarray(T._gates((gd, params), up, schedule, c.gate_t))
            mi = T._gate_table(gates, val_sets, c)[1]["mutual_information_bits"]
            routing = routing_stats((gd, params), val_sets, c, schedule, k_sample)
        row = {
            "variant": overrides,
            "model": name,
            "params": msr.count_params(nets[name]),
            "best_step": best,
            "val": res,
            "val_mean": round(float(np.mean(list(res.values()))), 3),
            "val_curve": curve,
            "gate_mi_bits": mi,
            "routing": routing,
            "cpu_s": round(time.process_time() - t0, 1),
        }
        print(json.dumps(row), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("variants")
    ap.add_argument("--models", default="moediff_sr")
    ap.add_argument("--out", default="/tmp/moediff_variants.jsonl")
    ap.add_argument("--preset", default="small")
    a = ap.parse_args(sys.argv[1:])
    for v in json.loads(a.variants):
        run(v, a.models.split(","), a.out, a.preset)
