"""LegoDiffusion experiment: train the digits zoo (incl. a VAE + latent DiT and a LoRA style
adapter), serve six workflows that share models over real HTTP in two modes (micro-serving vs
monolithic), drive open-loop load (Poisson rate sweep, Gamma CV sweep with a trace-schema
workload whose loras[] pick real adapters), and compare SLO attainment; measure model load
times (orbax restores), run the real server under a per-worker memory budget that forces
swaps, and check a calibrated discrete-event simulator against both; the simulator then
extends the comparison to a cluster with swept device memory and workflow variants
(`lego_cluster.py`)."""

import asyncio
import os
import time

import jax
import lego_cluster
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

import diffusion_serve_jax as ds
import xplib

# one XLA CPU call = one core (a worker slot is a fixed amount of compute); before any jit
ds.single_threaded_cpu()

EXPERIMENT = "lego_diffusion"
STYLES = {"bold": ds.bold_style}  # LoRA adapters: name -> the drawing style it learns
PAPER = "LegoDiffusion (arXiv 2604.08123)"


def build_zoo(config, workdir, logger):
    """Train the zoo from scratch, or restore it from the workdir's checkpoint."""
    zc = ds.ZooConfig(
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        num_timesteps=config.num_timesteps,
        sample_steps=config.sample_steps,
        guidance=config.guidance,
        latent=True,
        latent_width=config.latent_width,
        latent_depth=config.latent_depth,
    )
    zoo = ds.init_zoo(zc, key=jax.random.key(config.seed))
    images, labels = ds.load_digits_dataset()
    edges = ds.edge_map(images)
    modules = zoo.modules
    fresh = [
        ds.lora_init(zoo.diffusion.dit, rank=config.lora_rank, key=jax.random.key(100 + i))
        for i in range(len(config.lora_names))
    ]
    mngr = xplib.checkpoint_manager(workdir)
    target = {k: nnx.state(m) for k, m in modules.items()} | {"lora": ds.lora_stack(fresh)}
    t0 = time.perf_counter()
    if mngr.latest_step() is not None:
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))
        for k, m in modules.items():
            nnx.update(m, restored[k])
        zoo.lora = restored["lora"]
        logging.info("restored the zoo from step %d", mngr.latest_step())
        losses = None
    else:
        losses = ds.train_zoo(
            zoo,
            images,
            labels,
            edges,
            key=jax.random.key(config.seed + 1),
            diffusion_steps=config.diffusion_steps,
            aux_steps=config.aux_steps,
            batch_size=config.batch_size,
            latent_steps=config.latent_steps,
        )
        adapters = []
        for i, name in enumerate(config.lora_names):  # style adapters, base weights frozen
            styled = STYLES[name](images)
            data = {"images": styled, "labels": labels, "edges": ds.edge_map(styled)}
            tr = ds.lora_trainer(zoo.diffusion, zoo.schedule, batch_size=config.batch_size // 2)
            st, losses[f"lora_{name}"] = ds.fit(
                tr, tr.init(fresh[i]), data, config.lora_steps, key=jax.random.key(200 + i)
            )
            adapters.append(st.params)
        zoo.lora = ds.lora_stack(adapters)
        for i in xplib.progress(range(0, len(losses["diffusion"]), 25), desc="log"):
            logger.log(i, diffusion_loss=losses["diffusion"][i])
        mngr.save(
            config.diffusion_steps,
            args=ocp.args.StandardSave(
                {k: nnx.state(m) for k, m in modules.items()} | {"lora": zoo.lora}
            ),
        )
        mngr.wait_until_finished()
    return zoo, images, labels, edges, time.perf_counter() - t0, losses


def evaluate_quality(zoo, catalog, executors, images, labels, edges, n):
    """Conditioning accuracy and classifier-Frechet distance of served generations."""
    lab = np.arange(n, dtype=np.int32) % 10
    enc = executors["encoder"].run({"label": lab})
    gen = executors["denoiser"].run(enc | {"seed": np.arange(n, dtype=np.int32)})["image"]
    ctrl_idx = np.arange(n) % len(images)
    control = executors["edge_adapter"].run({"edges": edges[ctrl_idx]})["control"]
    enc_c = executors["encoder"].run({"label": labels[ctrl_idx]})
    gen_c = executors["denoiser_ctrl"].run(
        enc_c | {"seed": np.arange(n, dtype=np.int32), "control": control}
    )["image"]
    lat = executors["latent_denoiser"].run(enc | {"seed": np.arange(n, dtype=np.int32)})
    gen_l = executors["vae_decoder"].run(lat)["image"]
    lora_idx = np.zeros(n, np.int32)  # adapter 0 ("bold")
    gen_lora = executors["denoiser_lora"].run(
        enc | {"seed": np.arange(n, dtype=np.int32), "lora": lora_idx}
    )["image"]
    clf = zoo.classifier

    def ink(x):  # mean stroke mass in [0, 1]: the bold style raises it
        return float(np.mean((np.asarray(x) + 1) / 2))

    return {
        "cond_acc_latent": ds.conditioning_accuracy(clf, gen_l, lab),
        "frechet_latent": ds.classifier_frechet(clf, gen_l, images),
        "cond_acc_lora": ds.conditioning_accuracy(clf, gen_lora, lab),
        "ink": {
            "real": ink(images),
            "real_bold": ink(ds.bold_style(images)),
            "t2i": ink(gen),
            "t2i_lora": ink(gen_lora),
        },
        "samples_latent": gen_l[:10],
        "samples_lora": gen_lora[:10],
        "cond_acc": ds.conditioning_accuracy(clf, gen, lab),
        "cond_acc_control": ds.conditioning_accuracy(clf, gen_c, labels[ctrl_idx]),
        "real_acc": ds.conditioning_accuracy(clf, images, labels),
        "frechet": ds.classifier_frechet(clf, gen, images),
        "frechet_noise": ds.classifier_frechet(
            clf, np.clip(np.random.default_rng(0).normal(size=(n, 8, 8)), -1, 1), images
        ),
        "samples": gen[:20],
    }


def make_workload(rows, images, edges, lora_names):
    wfs = [ds.trace_to_workflow(r) for r in rows]

    def make(i):
        w = wfs[i]
        inputs = {"label": int(rows[i].scene_id.removeprefix("scene")) % 10, "seed": i}
        if w == "control_upscale":
            inputs["edges"] = edges[i % len(edges)].tolist()
        if w == "t2i_lora":  # the trace row's LoRA name -> the adapter's index in the node
            inputs["lora"] = list(lora_names).index(rows[i].loras[0])
        return {"workflow": w, "inputs": inputs}

    return wfs, make


async def measure_standalone(url, make_one, workflows, repeats=5):
    """Median latency of each workflow alone (batch 1, idle server), through HTTP."""
    out = {}
    for w in workflows:
        lats = []
        for i in range(repeats):
            res = await ds.run_open_loop(url, [0.0], lambda _, w=w, i=i: make_one(w, i))
            lats.append(res[0].latency)
        out[w] = float(np.median(lats))
    return out


def summarize(outcomes, slo):
    lat = np.array([o.latency for o in outcomes])
    ok = lat[np.isfinite(lat)]
    return {
        "attainment": ds.slo_attainment(outcomes, slo),
        "p50_ms": 1000 * float(np.median(ok)) if ok.size else float("inf"),
        "p99_ms": 1000 * float(np.percentile(ok, 99)) if ok.size else float("inf"),
        "rejected": int(sum(o.status == 429 for o in outcomes)),
        "n": len(outcomes),
    }


def sim_attainment(lat, wfs, slo):
    return float(np.mean([lat[i] <= slo[w] for i, w in enumerate(wfs)]))


def variants(config):
    """Served systems: name -> (mode, inline_below_s). The `(inline off)` pair runs every
    batch through the worker threads (no tiny batches inline on the event loop)."""
    out = {"micro": ("micro", 5e-4), "monolithic": ("monolithic", 5e-4)}
    if config.inline_off:
        out |= {
            "micro (inline off)": ("micro", 0.0),
            "monolithic (inline off)": ("monolithic", 0.0),
        }
    return out


async def run_load(config, catalog, executors, images, edges, logger, load_s, workdir):
    systems = variants(config)
    # per-bucket node profiles drive the batching policy (real server and simulator alike)
    prof = {m: ex.profile(repeats=3) for m, ex in executors.items()}
    device_s = {
        w: sum(prof[cw.node(n).model][min(prof[cw.node(n).model])] for n in cw.order)
        for w, cw in catalog.workflows.items()
    }
    policy = lego_cluster.batch_policy(config, catalog.workflows, prof, device_s)
    runtimes = {
        v: ds.ServingRuntime(
            catalog,
            mode=mode,
            num_workers=config.num_workers,
            max_batch=config.max_batch,
            queue_limit=config.queue_limit,
            executors=executors,
            inline_below_s=inline,
            batching=policy,
        )
        for v, (mode, inline) in systems.items()
    }
    servers = {v: await ds.serve(rt) for v, rt in runtimes.items()}
    names = sorted(catalog.workflows)

    def make_one(w, i):
        inputs = {"label": i % 10, "seed": i}
        if w == "control_upscale":
            inputs["edges"] = edges[i].tolist()
        if w == "t2i_lora":
            inputs["lora"] = i % len(config.lora_names)
        return {"workflow": w, "inputs": inputs}

    for v in systems:  # warm up connections, threads and caches before measuring
        await ds.run_open_loop(
            servers[v].url,
            np.linspace(0, 0.3, 2 * len(names)),
            lambda i: make_one(names[i % len(names)], i),
        )
    standalone = await measure_standalone(servers["micro"].url, make_one, sorted(catalog.workflows))
    slo = {w: config.slo_scale * t for w, t in standalone.items()}
    # capacity estimate: the device slots (cores) serving requests one at a time
    cores = min(os.cpu_count() or 1, config.num_workers)
    capacity = cores / float(np.mean(list(standalone.values())))
    overhead = max(0.0, float(np.median([standalone[w] - device_s[w] for w in standalone])))
    logging.info("standalone %s, capacity estimate %.1f req/s", standalone, capacity)
    rates = [f * capacity for f in config.rate_fractions]
    key = jax.random.key(config.seed + 7)
    rate_rows, cv_rows, sim_err = [], [], []
    results = {v: {"rate": [], "cv": []} for v in systems}
    step = 0
    cv_rate = None
    for sweep, xs in (("rate", rates), ("cv", list(config.cvs))):
        if sweep == "cv":  # burstiness at a rate both modes sustain when arrivals are Poisson
            mono_max = ds.max_load_at(
                rates, [p["attainment"] for p in results["monolithic"]["rate"]]
            )
            cv_rate = config.cv_rate_fraction * (mono_max if mono_max > 0 else rates[0])
        failing = {v: 0 for v in systems}
        # the CV sweep compares the two default systems only
        swept = list(systems) if sweep == "rate" else ["micro", "monolithic"]
        for xi, x in enumerate(xplib.progress(xs, desc=f"{sweep} sweep")):
            for m in swept:
                if failing[m] >= 2:  # two points below 50%: heavier load cannot recover
                    med = {
                        "attainment": 0.0,
                        "sim_attainment": float("nan"),
                        "p50_ms": float("nan"),
                        "p99_ms": float("nan"),
                        "rejected": -1,
                    }
                    results[m][sweep].append(med)
                    (rate_rows if sweep == "rate" else cv_rows).append(
                        [m, round(x, 2), 0.0, "not run", "-", "-", "-"]
                    )
                    continue
                reps = []
                for r in range(config.repeats):
                    k = jax.random.fold_in(jax.random.fold_in(key, xi * 100 + r), sweep == "cv")
                    rate = x if sweep == "rate" else cv_rate
                    cv = 1.0 if sweep == "rate" else x
                    rows = ds.synthetic_trace(
                        rate,
                        config.duration_s,
                        cv=cv,
                        loras=config.lora_names,
                        latent_share=config.latent_share,
                        key=k,
                    )
                    wfs, make = make_workload(rows, images, edges, config.lora_names)
                    times = [row.timestamp for row in rows]
                    outcomes = await ds.run_open_loop(servers[m].url, times, make)
                    s = summarize(outcomes, slo)
                    sim = ds.simulate(
                        catalog.workflows,
                        prof,
                        list(zip(times, wfs, strict=True)),
                        mode=systems[m][0],
                        num_workers=config.num_workers,
                        max_batch=config.max_batch,
                        slo_s=slo,
                        queue_limit=config.queue_limit,
                        cores=float(cores),
                        request_overhead_s=overhead,
                        batching=policy,
                    )
                    s["sim_attainment"] = sim_attainment(sim, wfs, slo)
                    reps.append(s)
                med = {k2: xplib.median_over(reps, k2) for k2 in reps[0]}
                results[m][sweep].append(med)
                failing[m] += med["attainment"] < 0.5
                sim_err.append(abs(med["sim_attainment"] - med["attainment"]))
                logger.log(step, sweep=sweep, x=x, mode=m, **med)
                step += 1
                row = [
                    m,
                    round(x, 2),
                    round(med["attainment"], 3),
                    round(med["sim_attainment"], 3),
                    round(med["p50_ms"], 1),
                    round(med["p99_ms"], 1),
                    int(med["rejected"]),
                ]
                (rate_rows if sweep == "rate" else cv_rows).append(row)
    for h in servers.values():
        await h.close()
    val_rows = await lego_cluster.validate_memory(
        config,
        catalog,
        executors,
        prof,
        slo,
        overhead,
        capacity,
        cores,
        load_s,
        workdir,
        make_one,
        policy,
    )
    mem = {m: rt.memory_bytes() for m, rt in runtimes.items()}
    return dict(
        overhead=overhead,
        device_s=device_s,
        standalone=standalone,
        slo=slo,
        capacity=capacity,
        rates=rates,
        prof=prof,
        results=results,
        cv_rate=cv_rate,
        rate_rows=rate_rows,
        cv_rows=cv_rows,
        sim_err=sim_err,
        mem=mem,
        val_rows=val_rows,
    )


def train_and_evaluate(config, workdir):
    t_start = time.perf_counter()
    cpu = {"start": time.process_time()}  # CPU seconds (user + sys) at each phase's end
    logger = xplib.MetricLogger(workdir)
    zoo, images, labels, edges, train_s, _ = build_zoo(config, workdir, logger)
    cpu["training"] = time.process_time()
    catalog = ds.zoo_catalog(zoo)
    used = sorted({n.model for w in catalog.workflows.values() for n in w.workflow.nodes})
    executors = {m: ds.NodeExecutor(catalog.models[m], buckets=config.buckets) for m in used}
    quality = evaluate_quality(
        zoo, catalog, executors, images, labels, edges, config.quality_samples
    )
    logging.info("quality: %s", {k: v for k, v in quality.items() if not k.startswith("samples")})
    cpu["quality"] = time.process_time()
    load_times = lego_cluster.measure_load_times(catalog, workdir)
    load_s = {m: t[0] for m, t in load_times.items()}  # orbax restore = a device's load
    load = asyncio.run(run_load(config, catalog, executors, images, edges, logger, load_s, workdir))
    res = load["results"]
    max_rate = {
        m: ds.max_load_at(load["rates"], [p["attainment"] for p in res[m]["rate"]]) for m in res
    }
    pair = ("micro", "monolithic")
    max_cv = {
        m: ds.max_load_at(list(config.cvs), [p["attainment"] for p in res[m]["cv"]]) for m in pair
    }
    cpu["real server"] = time.process_time()
    cl = lego_cluster.memory_sweep(config, catalog, load["prof"], load["device_s"], load_s)
    by = {(r["system"], r["memory"], r["variants"]): r for r in cl["rows"]}
    pinned = by[("monolithic (pinned)", None, 1)]

    def sim_ratio(mem, what, variants=1):
        a, b = by[("micro", mem, variants)][what], by[("monolithic", mem, variants)][what]
        return a / b if b > 0 else float("inf")

    mems = list(config.sim_memory)
    claim_mem = config.sim_claim_memory
    val_err = float(np.median([abs(r[2] - r[3]) for r in load["val_rows"]]))
    rate_ratios = [sim_ratio(m, "max_rate") for m in mems]
    cv_ratios = [sim_ratio(m, "max_cv") for m in mems]
    kvs = list(config.sim_variants)
    var_rate = [sim_ratio(claim_mem, "max_rate", k) for k in kvs]
    var_cv = [sim_ratio(claim_mem, "max_cv", k) for k in kvs]
    top = kvs[-1]

    def bucket_filling(sweep, *args):
        """The preregistered point (memory claim_mem, 1 variant) under session 4's
        bucket-filling dispatch (no batching policy): the 'before' of the policy."""
        one = ml_collections.ConfigDict(config.to_dict())
        one.sim_memory, one.sim_variants, one.batching = (claim_mem,), (1,), False
        rows = sweep(one, *args)["rows"]
        got = {r["system"]: r for r in rows if r["memory"] == claim_mem}
        b = got["monolithic"]["max_rate"]
        return got | {"rate_ratio": got["micro"]["max_rate"] / b if b > 0 else float("inf")}

    before = bucket_filling(
        lego_cluster.memory_sweep, catalog, load["prof"], load["device_s"], load_s
    )
    # the same sweep calibrated on per-node timings measured on a GPU (a committed profile
    # file from benchmarks/profile_nodes.py), beside the CPU-calibrated one above
    gpu_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), config.gpu_profile)
    cpu["simulated, CPU-calibrated"] = time.process_time()
    gcl = lego_cluster.profile_sweep(config, catalog, gpu_path, cl["capacity"])
    gpu = None
    if gcl is not None:
        gby = {(r["system"], r["memory"], r["variants"]): r for r in gcl["rows"]}

        def gpu_ratio(mem, what, variants=1):
            a, b = gby[("micro", mem, variants)][what], gby[("monolithic", mem, variants)][what]
            return a / b if b > 0 else float("inf")

        gpu = {
            "by": gby,
            "kind": gcl["meta"]["device_kind"],
            "rate": [gpu_ratio(m, "max_rate") for m in mems],
            "cv": [gpu_ratio(m, "max_cv") for m in mems],
            "var_rate": [gpu_ratio(claim_mem, "max_rate", k) for k in kvs],
            "var_cv": [gpu_ratio(claim_mem, "max_cv", k) for k in kvs],
            "claim_rate": gpu_ratio(claim_mem, "max_rate"),
            "claim_cv": gpu_ratio(claim_mem, "max_cv"),
            "before": bucket_filling(lego_cluster.profile_sweep, catalog, gpu_path, cl["capacity"]),
        }
        logging.info("GPU-calibrated (%s) sweep: %s", gpu["kind"], gcl["rows"])

    cpu["simulated, GPU-calibrated"] = time.process_time()
    phases = list(cpu)
    cpu_s = {b: cpu[b] - cpu[a] for a, b in zip(phases, phases[1:], strict=False)}
    logging.info("CPU seconds per phase: %s", cpu_s)

    def ratio(d, a="micro", b="monolithic"):
        return d[a] / d[b] if d[b] > 0 else float("inf")

    # figures
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for m in res:
        if m not in pair:
            axes[0].plot(load["rates"], [p["attainment"] for p in res[m]["rate"]], "--", label=m)
    for m, style in (("micro", "-o"), ("monolithic", "-s")):
        axes[0].plot(load["rates"], [p["attainment"] for p in res[m]["rate"]], style, label=m)
        axes[0].plot(
            load["rates"],
            [p["sim_attainment"] for p in res[m]["rate"]],
            ":",
            label=f"{m} (simulated)",
        )
        axes[1].plot(config.cvs, [p["attainment"] for p in res[m]["cv"]], style, label=m)
        axes[2].plot(
            [m2 or 2 * max(x for x in mems if x) for m2 in mems],
            [by[(m, m2, 1)]["max_rate"] for m2 in mems],
            style,
            label=m,
        )
    axes[0].set(
        xlabel="request rate (req/s)", ylabel="SLO attainment", title="real HTTP server, Poisson"
    )
    axes[1].set(xlabel="arrival CV (Gamma)", title="burstiness")
    axes[2].axhline(pinned["max_rate"], color="C3", lw=1, label="monolithic (pinned)")
    axes[2].set(
        xlabel="device memory (x largest workflow; rightmost: all fit)",
        ylabel="max rate at 90% SLO",
        title=f"simulated {config.sim_workers} devices, shifting mix",
    )
    for ax in axes[:2]:
        ax.axhline(0.9, color="gray", lw=0.8, ls="--")
    for ax in axes:
        ax.legend(fontsize=7)
    figs = [xplib.save_figure(fig, workdir, "slo_attainment")]
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
    for i, ax in enumerate(axes.ravel()):
        ax.imshow(quality["samples"][i], cmap="gray_r", vmin=-1, vmax=1)
        ax.set_axis_off()
        ax.set_title(str(i % 10), fontsize=7)
    figs.append(xplib.save_figure(fig, workdir, "samples"))
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
    for row, (name, imgs) in enumerate(
        (
            ("t2i_latent (VAE)", quality["samples_latent"]),
            ("t2i_lora (bold)", quality["samples_lora"]),
        )
    ):
        for i, ax in enumerate(axes[row]):
            ax.imshow(imgs[i], cmap="gray_r", vmin=-1, vmax=1)
            ax.set_axis_off()
            ax.set_title(f"{name} {i}" if i == 0 else str(i), fontsize=6)
    figs.append(xplib.save_figure(fig, workdir, "samples_latent_lora"))

    claims = [
        xplib.Claim(
            "max request rate at >= 90% SLO attainment (real HTTP server, 2 CPU cores)",
            "req/s",
            round(max_rate["micro"], 2),
            round(max_rate["monolithic"], 2),
            "up to 3x higher sustained request rate than monolithic serving",
            baseline_name=f"monolithic (ratio {ratio(max_rate):.2f}x)",
        ),
        *(
            [
                xplib.Claim(
                    "max request rate at >= 90% SLO, real server, inline path off (every batch "
                    "through the worker threads)",
                    "req/s",
                    round(max_rate["micro (inline off)"], 2),
                    round(max_rate["monolithic (inline off)"], 2),
                    "up to 3x higher sustained request rate than monolithic serving",
                    baseline_name="monolithic, inline off (ratio "
                    f"{ratio(max_rate, 'micro (inline off)', 'monolithic (inline off)'):.2f}x)",
                )
            ]
            if config.inline_off
            else []
        ),
        xplib.Claim(
            "burst tolerance: max arrival CV at >= 90% SLO attainment",
            "Gamma CV",
            round(max_cv["micro"], 2),
            round(max_cv["monolithic"], 2),
            "tolerates up to 8x higher burst traffic",
            baseline_name=f"monolithic (ratio {ratio(max_cv):.2f}x)",
        ),
        xplib.Claim(
            f"max rate at >= 90% SLO, simulated {config.sim_workers} devices, memory "
            f"{claim_mem}x the largest workflow, shifting skewed mix, measured load times "
            f"(micro/mono ratio across memory {mems}: "
            + ", ".join(f"{x:.2f}" for x in rate_ratios)
            + ")",
            "req/s",
            round(by[("micro", claim_mem, 1)]["max_rate"], 1),
            round(by[("monolithic", claim_mem, 1)]["max_rate"], 1),
            "up to 3x (cluster scale)",
            baseline_name="monolithic, same memory "
            f"(ratio {sim_ratio(claim_mem, 'max_rate'):.2f}x)",
        ),
        xplib.Claim(
            f"burst tolerance (max CV at >= 90% SLO), simulated {config.sim_workers} devices, "
            f"memory {claim_mem}x (ratio across memory {mems}: "
            + ", ".join(f"{x:.2f}" for x in cv_ratios)
            + ")",
            "Gamma CV",
            round(by[("micro", claim_mem, 1)]["max_cv"], 2),
            round(by[("monolithic", claim_mem, 1)]["max_cv"], 2),
            "up to 8x higher burst traffic",
            baseline_name=f"monolithic, same memory (ratio {sim_ratio(claim_mem, 'max_cv'):.2f}x)",
        ),
        xplib.Claim(
            f"max rate at >= 90% SLO, simulated {config.sim_workers} devices, memory "
            f"{claim_mem}x, {top} variants of each workflow sharing its models (ratio "
            f"across variants {kvs}: " + ", ".join(f"{x:.2f}" for x in var_rate) + ")",
            "req/s",
            round(by[("micro", claim_mem, top)]["max_rate"], 1),
            round(by[("monolithic", claim_mem, top)]["max_rate"], 1),
            "up to 3x (cluster scale)",
            baseline_name=f"monolithic, same memory (ratio {var_rate[-1]:.2f}x)",
        ),
        xplib.Claim(
            f"burst tolerance (max CV at >= 90% SLO), simulated, memory {claim_mem}x, {top} "
            f"variants (ratio across variants {kvs}: "
            + ", ".join(f"{x:.2f}" for x in var_cv)
            + ")",
            "Gamma CV",
            round(by[("micro", claim_mem, top)]["max_cv"], 2),
            round(by[("monolithic", claim_mem, top)]["max_cv"], 2),
            "up to 8x higher burst traffic",
            baseline_name=f"monolithic, same memory (ratio {var_cv[-1]:.2f}x)",
        ),
        xplib.Claim(
            f"max rate at >= 90% SLO, simulated {config.sim_workers} devices, vs monolithic "
            "replicas pinned to workflows (equal shares, all models resident)",
            "req/s",
            round(by[("micro", 0.0, 1)]["max_rate"], 1),
            round(pinned["max_rate"], 1),
            "up to 3x (cluster scale)",
            baseline_name="monolithic pinned (ratio "
            f"{by[('micro', 0.0, 1)]['max_rate'] / max(pinned['max_rate'], 1e-9):.2f}x)",
        ),
        *(
            []
            if gpu is None
            else [
                xplib.Claim(
                    f"SIMULATED with {gpu['kind']} per-node timings (not a real GPU server): "
                    f"max rate at >= 90% SLO, {config.sim_workers} devices, memory {claim_mem}x, "
                    f"1 variant (ratio across memory {mems}: "
                    + ", ".join(f"{x:.2f}" for x in gpu["rate"])
                    + f"; across variants {kvs}: "
                    + ", ".join(f"{x:.2f}" for x in gpu["var_rate"])
                    + ")",
                    "req/s",
                    round(gpu["by"][("micro", claim_mem, 1)]["max_rate"], 1),
                    round(gpu["by"][("monolithic", claim_mem, 1)]["max_rate"], 1),
                    "up to 3x (cluster scale)",
                    baseline_name=f"monolithic, same memory (ratio {gpu['claim_rate']:.2f}x)",
                ),
                xplib.Claim(
                    f"SIMULATED with {gpu['kind']} per-node timings (not a real GPU server): "
                    f"max CV at >= 90% SLO, memory {claim_mem}x, 1 variant (range "
                    f"{list(config.sim_cv_range)}; ratio across memory {mems}: "
                    + ", ".join(f"{x:.2f}" for x in gpu["cv"])
                    + f"; across variants {kvs}: "
                    + ", ".join(f"{x:.2f}" for x in gpu["var_cv"])
                    + ")",
                    "Gamma CV",
                    round(gpu["by"][("micro", claim_mem, 1)]["max_cv"], 2),
                    round(gpu["by"][("monolithic", claim_mem, 1)]["max_cv"], 2),
                    "up to 8x higher burst traffic",
                    baseline_name=f"monolithic, same memory (ratio {gpu['claim_cv']:.2f}x)",
                ),
            ]
        ),
        xplib.Claim(
            "parameter memory for the six workflows (model sharing)",
            "MB",
            round(load["mem"]["micro"] / 1e6, 3),
            round(load["mem"]["monolithic"] / 1e6, 3),
            "model sharing across workflows (no number given)",
            better="lower",
            baseline_name="monolithic (one copy per workflow replica)",
        ),
        xplib.Claim(
            "conditioning accuracy of served t2i digits (classifier judge)",
            "accuracy",
            round(quality["cond_acc"], 3),
            round(quality["real_acc"], 3),
            "quality is unchanged by the serving system",
            baseline_name="classifier on real digits",
        ),
    ]
    tables = [
        xplib.Table(
            "Rate sweep (Poisson, trace-schema workload mix)",
            ["mode", "rate req/s", "SLO attainment", "simulated", "P50 ms", "P99 ms", "429s"],
            load["rate_rows"],
        ),
        xplib.Table(
            f"CV sweep at {load['cv_rate']:.1f} req/s "
            f"({config.cv_rate_fraction:.0%} of the monolithic max rate)",
            ["mode", "CV", "SLO attainment", "simulated", "P50 ms", "P99 ms", "429s"],
            load["cv_rows"],
        ),
        xplib.Table(
            f"Simulated {config.sim_workers} devices: device memory sweep (x "
            f"{cl['unit_bytes'] / 1e6:.2f} MB, the largest workflow; 0 = every replica fits), "
            f"shifting Zipf mix (skew {config.sim_skew}, reshuffled every "
            f"{config.sim_phase_s} s), CV sweep at {cl['cv_rate']:.0f} req/s",
            ["system", "memory", "variants", "max rate req/s", "max CV", "loads (median run)"],
            [
                [
                    r["system"],
                    "all, pinned" if r["memory"] is None else r["memory"],
                    r["variants"],
                    round(r["max_rate"], 1),
                    round(r["max_cv"], 2),
                    r["loads"],
                ]
                for r in cl["rows"]
            ],
        ),
        *(
            []
            if gcl is None
            else [
                xplib.Table(
                    f"SIMULATED cluster calibrated on {gpu['kind']} per-node timings "
                    f"({os.path.relpath(gcl['path'])}, jax {gcl['meta']['jax_version']}, "
                    f"weights {gcl['meta']['weights'].split(' (')[0]}; not a real GPU server): "
                    f"{config.sim_workers} devices, same sweep as above; rates are multiples of "
                    f"the batched capacity {gcl['capacity']:.0f} req/s, workload time axis x"
                    f"{gcl['time_scale']:.3g} (phase {1e3 * gcl['phase_s']:.1f} ms, mean load / "
                    f"phase {gcl['load_over_phase']:.2f}), CV sweep at {gcl['cv_rate']:.0f} req/s"
                    + ("" if gcl["same_zoo"] else "; profile measured on a different zoo size"),
                    [
                        "system",
                        "memory",
                        "variants",
                        "max rate req/s",
                        "max CV",
                        "loads (median run)",
                    ],
                    [
                        [
                            r["system"],
                            "all, pinned" if r["memory"] is None else r["memory"],
                            r["variants"],
                            round(r["max_rate"], 1),
                            round(r["max_cv"], 2),
                            r["loads"],
                        ]
                        for r in gcl["rows"]
                    ],
                ),
                xplib.Table(
                    "micro/mono ratios at >= 90% SLO: simulated cluster calibrated on CPU vs "
                    f"on {gpu['kind']} per-node profiles (paper: rate up to 3x, CV up to 8x)",
                    ["point", "rate CPU", f"rate {gpu['kind']}", "CV CPU", f"CV {gpu['kind']}"],
                    [
                        [
                            f"memory {m}x, 1 variant",
                            round(a, 2),
                            round(b, 2),
                            round(c, 2),
                            round(d, 2),
                        ]
                        for m, a, b, c, d in zip(
                            mems, rate_ratios, gpu["rate"], cv_ratios, gpu["cv"], strict=True
                        )
                    ]
                    + [
                        [
                            f"memory {claim_mem}x, {k} variants",
                            round(a, 2),
                            round(b, 2),
                            round(c, 2),
                            round(d, 2),
                        ]
                        for k, a, b, c, d in zip(
                            kvs, var_rate, gpu["var_rate"], var_cv, gpu["var_cv"], strict=True
                        )
                        if k > 1
                    ]
                    + [
                        [
                            f"memory {claim_mem}x, 1 variant, BEFORE: bucket-filling dispatch "
                            "(no batching policy; rates req/s micro / mono CPU "
                            f"{before['micro']['max_rate']:.0f} / "
                            f"{before['monolithic']['max_rate']:.0f}, {gpu['kind']} "
                            f"{gpu['before']['micro']['max_rate']:.0f} / "
                            f"{gpu['before']['monolithic']['max_rate']:.0f})",
                            round(before["rate_ratio"], 2),
                            round(gpu["before"]["rate_ratio"], 2),
                            "-",
                            "-",
                        ]
                    ],
                ),
            ]
        ),
        xplib.Table(
            f"Real server, {config.val_workers} workers with {config.val_memory}x the largest "
            "workflow of memory each (orbax "
            f"restores on a miss), shifting mix, vs the simulator (median |error| "
            f"{val_err:.3f})",
            ["mode", "rate req/s", "SLO attainment", "simulated", "loads", "simulated loads"],
            [[r[0], r[1], round(r[2], 3), round(r[3], 3), r[4], r[5]] for r in load["val_rows"]],
        ),
        xplib.Table(
            "Measured model load times (median of 3) and sizes",
            ["model", "MB", "orbax restore ms", "device_put ms"],
            [
                [
                    m,
                    round(catalog.models[m].param_bytes / 1e6, 3),
                    round(1e3 * a, 2),
                    round(1e3 * b, 3),
                ]
                for m, (a, b) in load_times.items()
            ],
        ),
        xplib.Table(
            "Workflows: standalone latency and SLO",
            ["workflow", "standalone ms", "SLO ms"],
            [
                [w, round(1000 * t, 2), round(1000 * load["slo"][w], 2)]
                for w, t in load["standalone"].items()
            ],
        ),
        xplib.Table(
            "Quality and simulator",
            ["metric", "value"],
            [
                ["conditioning accuracy, t2i", round(quality["cond_acc"], 3)],
                [
                    "conditioning accuracy, t2i_latent (latent DiT + VAE decoder)",
                    round(quality["cond_acc_latent"], 3),
                ],
                [
                    "classifier-Frechet distance, t2i_latent vs real",
                    round(quality["frechet_latent"], 3),
                ],
                [
                    "conditioning accuracy, t2i_lora (bold adapter)",
                    round(quality["cond_acc_lora"], 3),
                ],
                [
                    "ink (mean stroke mass): real / real bold / t2i / t2i_lora",
                    " / ".join(f"{v:.3f}" for v in quality["ink"].values()),
                ],
                [
                    "conditioning accuracy, control (edges of a real digit)",
                    round(quality["cond_acc_control"], 3),
                ],
                ["classifier accuracy on real digits", round(quality["real_acc"], 3)],
                ["classifier-Frechet distance generated vs real", round(quality["frechet"], 3)],
                [
                    "classifier-Frechet distance clipped noise vs real",
                    round(quality["frechet_noise"], 3),
                ],
                [
                    "simulator |attainment error| vs real runs (median)",
                    round(float(np.median(load["sim_err"])), 3),
                ],
                ["training seconds", round(train_s, 1)],
                [
                    "CPU seconds per phase (this process)",
                    ", ".join(f"{k} {v:.1f}" for k, v in cpu_s.items()),
                ],
                ["total seconds", round(time.perf_counter() - t_start, 1)],
            ],
        ),
    ]
    notes = (
        f"Six workflows (t2i, t2i_upscale, t2i_checked, control_upscale, t2i_lora, t2i_latent) "
        f"share the encoder (all six), the DiT weights (denoiser: 3 workflows; denoiser_ctrl and "
        f"the LoRA node denoiser_lora hold the same base), the upscaler (2). The trace's "
        f"loras[] name a trained LoRA adapter ({', '.join(config.lora_names)}) served by "
        f"denoiser_lora; its base_model_id 'ldm-digits' ({config.latent_share:.0%}) asks for the "
        f"latent workflow (VAE). {config.num_workers} worker slots in both "
        f"modes; monolithic gives each workflow one replica running the whole DAG with "
        f"request-level batching; micro-serving batches each model across workflows. SLO = "
        f"{config.slo_scale} x standalone latency. Capacity estimate "
        f"{load['capacity']:.1f} req/s from node profiles. One process, real aiohttp server on "
        f"localhost, the CPU shared with the load generator (and other jobs on this machine). "
        f"Simulated cluster: {config.sim_workers} devices, measured orbax load times, device "
        f"memory swept over {list(config.sim_memory)} x the largest workflow (0 = all fit) and "
        f"{list(config.sim_variants)} variants of each workflow sharing its models; monolithic "
        f"replicas under a memory budget may switch workflows by reloading. "
        + (
            f"No GPU node profile at {os.path.relpath(gpu_path)}: the GPU-calibrated "
            "simulation was not run."
            if gcl is None
            else f"The same simulated sweep was also calibrated on per-node timings, parameter "
            f"bytes and orbax load times measured on {gpu['kind']} "
            f"({os.path.relpath(gcl['path'])}, by benchmarks/profile_nodes.py); this is a "
            f"simulation with GPU-measured node costs, not a GPU server. Its batch-16 / batch-1 "
            f"cost per node: "
            + ", ".join(f"{m} {r:.2f}" for m, r in gcl["batch16_over_1"].items())
            + "."
        )
    )
    xplib.write_results(
        workdir,
        experiment=EXPERIMENT,
        paper=PAPER,
        preset=config.preset,
        claims=claims,
        tables=tables,
        figures=figs,
        notes=notes,
        extra={
            "max_rate": max_rate,
            "max_cv": max_cv,
            "sim_memory_sweep": cl["rows"],
            "sim_bucket_filling": before,
            "cpu_s": cpu_s,
            "sim_rate_ratios": dict(zip(map(str, mems), rate_ratios, strict=True)),
            "sim_cv_ratios": dict(zip(map(str, mems), cv_ratios, strict=True)),
            "sim_variant_rate_ratios": dict(zip(map(str, kvs), var_rate, strict=True)),
            "sim_variant_cv_ratios": dict(zip(map(str, kvs), var_cv, strict=True)),
            "load_times_s": load_times,
            "memory_validation": load["val_rows"],
            "memory_validation_error": val_err,
            "request_overhead_s": load["overhead"],
            "profiles": load["prof"],
            "gpu_profile": None
            if gcl is None
            else {
                "path": os.path.relpath(gcl["path"]),
                "meta": gcl["meta"],
                "sweep": gcl["rows"],
                "capacity": gcl["capacity"],
                "time_scale": gcl["time_scale"],
                "load_over_phase": gcl["load_over_phase"],
                "batch16_over_1": gcl["batch16_over_1"],
                "rate_ratios": dict(zip(map(str, mems), gpu["rate"], strict=True)),
                "cv_ratios": dict(zip(map(str, mems), gpu["cv"], strict=True)),
                "variant_rate_ratios": dict(zip(map(str, kvs), gpu["var_rate"], strict=True)),
                "variant_cv_ratios": dict(zip(map(str, kvs), gpu["var_cv"], strict=True)),
                "bucket_filling": gpu["before"],
            },
            "standalone_s": load["standalone"],
            "quality": {
                k: v if isinstance(v, dict) else float(v)
                for k, v in quality.items()
                if not k.startswith("samples")
            },
        },
    )
    logging.info("max rate %s, max cv %s, sim %s", max_rate, max_cv, cl["rows"])
