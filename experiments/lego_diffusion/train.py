"""LegoDiffusion experiment: train the digits zoo (incl. a VAE + latent DiT and a LoRA style
adapter), serve six workflows that share models over real HTTP in two modes (micro-serving vs
monolithic), drive open-loop load (Poisson rate sweep, Gamma CV sweep with a trace-schema
workload whose loras[] pick real adapters), and compare SLO attainment; measure model load
times (orbax restores), serve four variants of each workflow sharing the models under a
per-worker memory budget (the paper's regime: monolithic workers must restore whole replicas,
micro-serving workers hold one instance of every model) and check a calibrated
discrete-event simulator against every real run; the simulator then
extends the comparison to a cluster with swept device memory and workflow variants
(`lego_cluster.py`).

Modules by topic: `lego_zoo` (training, quality), `lego_server` (real-server runs, all
models resident), `lego_variants` (real server, variants under a memory budget),
`lego_cluster` (simulated sweeps), `lego_hotswap` (simulated, vs the LoRA hot-swapping
monolith), `lego_figures`, `lego_report` + `lego_tables` (results)."""

import asyncio
import os
import time

import lego_cluster
import lego_figures
import lego_hotswap
import lego_report
import lego_server
import lego_variants
import lego_zoo
from absl import logging

import diffusion_serve_jax as ds
import xplib

# one XLA CPU call = one core (a worker slot is a fixed amount of compute); before any jit
ds.single_threaded_cpu()


def train_and_evaluate(config, workdir):
    if config.fast_compile:  # before the first JAX computation starts the CPU backend
        os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0 " + os.environ.get(
            "XLA_FLAGS", ""
        )
    t_start = time.perf_counter()
    cpu = {"start": time.process_time()}  # CPU seconds (user + sys) at each phase's end
    logger = xplib.MetricLogger(workdir)
    zoo, images, labels, edges, train_s = lego_zoo.build_zoo(config, workdir, logger)
    cpu["training"] = time.process_time()
    catalog = ds.zoo_catalog(zoo)
    executors = {
        m: ds.NodeExecutor(catalog.models[m], buckets=config.buckets)
        for m in lego_cluster.used_models(catalog)
    }
    quality = lego_zoo.evaluate_quality(
        zoo, executors, images, labels, edges, config.quality_samples
    )
    logging.info("quality: %s", {k: v for k, v in quality.items() if not k.startswith("samples")})
    cpu["quality"] = time.process_time()

    # real HTTP servers: both sweeps, then the per-worker memory budget run
    load_times = lego_cluster.measure_load_times(catalog, workdir)
    load_s = {m: t[0] for m, t in load_times.items()}  # orbax restore = a device's load
    load = asyncio.run(
        lego_server.run_load(config, catalog, executors, edges, logger, load_s, workdir)
    )
    max_rate, max_cv = lego_server.max_loads(config, load)
    cpu["real server, resident"] = time.process_time()
    # ... and the paper's regime: workflow variants sharing the models, memory budget per worker
    var = asyncio.run(
        lego_variants.run_variants(
            config, catalog, executors, load, load_times, edges, logger, workdir
        )
    )
    cpu["real server, variants + memory"] = time.process_time()

    # simulated cluster, calibrated on this CPU's node profiles ...
    sims = lego_cluster.cpu_sweeps(config, catalog, load["prof"], load["device_s"], load_s)
    cpu["simulated, CPU-calibrated"] = time.process_time()
    # ... and on per-node timings measured on a GPU (a committed profile file from
    # benchmarks/profile_nodes.py), beside the CPU-calibrated one
    gpu_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), config.gpu_profile)
    gcl, gpu = lego_cluster.gpu_sweeps(config, catalog, gpu_path, sims["cl"]["capacity"])
    if gpu is not None:
        logging.info("GPU-calibrated (%s) sweep: %s", gpu["kind"], gcl["rows"])
    cpu["simulated, GPU-calibrated"] = time.process_time()
    # ... and against the LoRA hot-swapping monolith, both calibrations
    hot = lego_hotswap.run(config, catalog, zoo, load["prof"], gpu_path, sims["cl"]["capacity"])
    cpu["simulated, hot-swap monolith"] = time.process_time()
    phases = list(cpu)
    cpu_s = {b: cpu[b] - cpu[a] for a, b in zip(phases, phases[1:], strict=False)}
    logging.info("CPU seconds per phase: %s", cpu_s)

    figs = lego_figures.save_figures(config, workdir, load, quality, sims, var)
    lego_report.write_report(
        config,
        workdir,
        catalog=catalog,
        max_rate=max_rate,
        max_cv=max_cv,
        load=load,
        var=var,
        quality=quality,
        load_times=load_times,
        sims=sims,
        gcl=gcl,
        gpu=gpu,
        gpu_path=gpu_path,
        figs=figs,
        train_s=train_s,
        cpu_s=cpu_s,
        t_start=t_start,
        hot=hot,
    )
    logging.info("max rate %s, max cv %s, sim %s", max_rate, max_cv, sims["cl"]["rows"])
