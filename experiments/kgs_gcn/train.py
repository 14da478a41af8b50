"""KGS-GCN vs its baselines on synthetic NTU-25 data: X-Sub / X-View, multi-stream fusion,
ablations, robustness curves.

Every (model, split, seed) run trains from scratch with the same data, batches and schedule;
results are medians over seeds. Runs that differ only in their input (the bone / motion streams
of KGS-GCN) or in their precomputed heatmaps (isotropic splats) share one compiled train step.
After each run the accumulated metrics (and the test logits the stream fusion needs) are
checkpointed with orbax, so an interrupted job resumes after the last finished run.
"""

import functools
import time

import jax
import jax.numpy as jnp
import kgs_report
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

import skel_gcn_jax as sg
import xplib

STREAM_PREFIX, KINDS, NAMES = kgs_report.STREAM_PREFIX, kgs_report.KINDS, kgs_report.NAMES


def _stream_of(name):
    return name[len(STREAM_PREFIX) :] if name.startswith(STREAM_PREFIX) else "joint"


def _model_config(name, config, num_classes):
    """The GCNClassifier config of a run (None for the heatmap CNN)."""
    if name == "heatmap_cnn":
        return None
    splat = sg.SplatConfig(grid=config.grid, separable=config.separable)
    ch = tuple(config.channels)
    kgs = sg.kgs_gcn_config(num_classes, ch, splat=splat)
    if name in ("st_gcn_wide", "ctr_gcn"):  # baselines at KGS-GCN's parameter count
        make = sg.st_gcn_config if name == "st_gcn_wide" else sg.ctr_gcn_config
        return sg.widen_to_params(make(num_classes, ch), sg.config_params(kgs))
    if name.startswith(STREAM_PREFIX):
        return kgs
    return {
        "kgs_gcn": kgs,
        "st_gcn": sg.st_gcn_config(num_classes, ch),
        "kgs_no_splat": kgs._replace(fusion="none"),
        "kgs_no_prob": kgs._replace(topology="learned"),
        "kgs_prior_only": kgs._replace(learn_offset=False),
        "kgs_graph_only": kgs._replace(topology="learned", fusion="none"),
        "kgs_isotropic": kgs._replace(splat=splat._replace(isotropic=True)),
        "kgs_physical": kgs._replace(topology="physical"),
        "kgs_concat": kgs._replace(fusion="concat"),
        "kgs_exact_render": kgs._replace(splat=splat._replace(separable=False)),
    }[name]


def _make_model(name, config, num_classes, seed):
    """(model, splat of its precomputed heatmaps or None)."""
    if name == "heatmap_cnn":
        splat = sg.SplatConfig(grid=config.hcnn_grid, isotropic=True, separable=True)
        model = sg.HeatmapCNN(
            num_classes, width=config.hcnn_width, splat=splat, rngs=nnx.Rngs(seed)
        )
        return model, splat
    mcfg = _model_config(name, config, num_classes)
    model = sg.GCNClassifier(mcfg, rngs=nnx.Rngs(seed))
    return model, (mcfg.splat if mcfg.fusion != "none" else None)


def _trainer_key(name):
    """Runs whose models have the same parameters and forward (given the heatmaps) share one
    trainer, hence one compilation: the KGS-GCN streams and the isotropic-splat ablation."""
    return "kgs_gcn" if name == "kgs_isotropic" or name.startswith(STREAM_PREFIX) else name


class Data:
    """The synthetic dataset, its splits, their streams, and degraded copies of the X-Sub test."""

    def __init__(self, config):
        k_subj, k_gen, k_rob = jax.random.split(jax.random.key(config.seed), 3)
        self.gen = sg.GeneratorConfig(
            num_frames=config.num_frames,
            num_persons=config.num_persons,
            second_person_prob=config.second_person_prob,
        )
        self.subjects = sg.make_subjects(config.num_subjects, key=k_subj)
        self.num_classes = len(sg.CLASS_NAMES)
        grid = np.stack(
            np.meshgrid(
                np.arange(self.num_classes),
                np.arange(config.num_subjects),
                np.arange(len(self.gen.yaw_bins)),
                np.arange(config.repeats),
                indexing="ij",
            ),
            -1,
        ).reshape(-1, 4)
        x = sg.generate_skeletons(
            grid[:, 0], grid[:, 1], grid[:, 2], self.subjects, self.gen, key=k_gen
        )
        labels = [grid[:, j].astype(np.int32) for j in range(3)]
        ds = sg.SkeletonDataset(self._centre(x), *labels)
        self.splits = {"xsub": sg.cross_subject_split(ds), "xview": sg.cross_view_split(ds)}
        # the X-Sub test sequences before centring: the robustness sets degrade these
        self.raw_xsub_test = sg.cross_subject_split(sg.SkeletonDataset(x, *labels))[1].x
        self.k_rob = k_rob

    @staticmethod
    def _centre(x):
        return np.asarray(jax.jit(sg.centre_skeleton)(jnp.asarray(x)))

    @functools.cache  # noqa: B019  (one Data per run)
    def stream(self, split, part, stream):
        """`part` ("train"/"test") of `split` as the given input stream."""
        x = self.splits[split][0 if part == "train" else 1].x
        if stream == "joint":
            return x
        return np.asarray(jax.jit(lambda a: sg.make_streams(a)[stream])(jnp.asarray(x)))

    @functools.cache  # noqa: B019  (one Data per run; every model reuses the degraded sets)
    def degraded_xsub_test(self, kind, level):
        """The X-Sub test sequences themselves, degraded (level 0: the clean test set). One key
        per kind for all its levels, so the dropped joints / lost frames nest as the level grows
        and a curve measures the degradation alone, never a fresh draw of the test sequences."""
        te = self.splits["xsub"][1]
        if level == 0.0:
            return te.x, te.label
        arg = {"sparsity": "frame_sparsity", "dropout": "dropout", "noise": "noise_std"}[kind]
        key = jax.random.fold_in(self.k_rob, KINDS.index(kind))
        x = sg.degrade_skeletons(self.raw_xsub_test, key=key, **{arg: level})
        return self._centre(x), te.label


_RENDER = {}
_HEATMAP_CACHE = {}


def _heatmaps(x, splat, batch=64):
    """Heatmaps of a whole array, rendered in fixed-size (padded) batches: one compilation."""
    if splat not in _RENDER:
        _RENDER[splat] = jax.jit(lambda a: sg.render_skeleton_heatmaps(a, splat))
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        pad = batch - len(xb)
        xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)]) if pad else xb
        out.append(np.asarray(_RENDER[splat](jnp.asarray(xb)))[: batch - pad])
    return np.concatenate(out)


def _cached_heatmaps(x, splat):
    """Heatmaps depend only on the joint positions, so each array is rendered once per splat."""
    if splat is None:
        return None
    key = (id(x), splat)
    if key not in _HEATMAP_CACHE:
        _HEATMAP_CACHE[key] = (x, _heatmaps(x, splat))  # keeps x alive, so its id stays unique
    return _HEATMAP_CACHE[key][1]


def _optimizer(config):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, max(config.steps // 10, 1), config.steps
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def _train_run(trainer, model, x, y, hm, seed, config, logger, log_offset):
    state = trainer.init(model)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for step in range(config.steps):
        idx = rng.choice(len(y), config.batch_size, replace=False)
        state, m = trainer.update(state, x[idx], y[idx], None if hm is None else hm[idx])
        if (step + 1) % max(config.steps // 5, 1) == 0:
            logger.log(log_offset + step + 1, loss=m["loss"], train_accuracy=m["accuracy"])
    jax.block_until_ready(state)
    return state, time.time() - t0


def _plan(config):
    """Every run as (name, split, seed), in the order they are trained."""
    seeds = range(config.seeds)
    runs = [(m, "xsub", s) for m in config.models for s in seeds]
    runs += [(m, "xview", s) for m in config.xview_models for s in seeds]
    for split in config.stream_splits:
        runs += [(STREAM_PREFIX + st, split, s) for st in config.streams for s in seeds]
    runs += [(m, "xsub", s) for m in config.ablations for s in range(config.ablation_seeds)]
    return runs


def _levels(config):
    return {
        "sparsity": list(config.sparsity_levels),
        "dropout": list(config.dropout_levels),
        "noise": list(config.noise_levels),
    }


def train_and_evaluate(config, workdir):
    t_start = time.time()
    data = Data(config)
    ncls = data.num_classes
    levels = _levels(config)
    runs = _plan(config)
    mngr = xplib.checkpoint_manager(workdir)
    results: dict[str, np.ndarray] = {}
    if mngr.latest_step() is not None:
        results = dict(mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore())["runs"])
    logger = xplib.MetricLogger(workdir)
    trainers, kept = {}, {}
    for i, (name, split, seed) in enumerate(xplib.progress(runs, desc="kgs_gcn runs")):
        key = f"{name}__{split}__{seed}"
        if key in results:
            continue
        model, splat = _make_model(name, config, ncls, seed)
        tkey = _trainer_key(name)
        if tkey not in trainers:
            trainers[tkey] = sg.make_trainer(model, _optimizer(config))
        trainer = trainers[tkey]
        stream = _stream_of(name)
        tr, te = data.splits[split]
        xtr, xte = data.stream(split, "train", stream), data.stream(split, "test", stream)
        hm_tr, hm_te = _cached_heatmaps(tr.x, splat), _cached_heatmaps(te.x, splat)
        state, secs = _train_run(
            trainer, model, xtr, tr.label, hm_tr, seed, config, logger, i * config.steps
        )
        logits = sg.predict_logits(trainer, state.params, xte, heatmaps=hm_te)
        ev = {
            f"top{k}": float(sg.topk_accuracy(jnp.asarray(logits), jnp.asarray(te.label), k))
            for k in (1, 5)
        }
        row = [ev["top1"], ev["top5"], sg.count_params(model), secs]
        for kind in KINDS:
            for lv in levels[kind]:
                if split == "xsub" and stream == "joint":
                    xd, yd = data.degraded_xsub_test(kind, lv)
                    hd = _cached_heatmaps(xd, splat)
                    row.append(sg.evaluate(trainer, state.params, xd, yd, heatmaps=hd)["top1"])
                else:
                    row.append(np.nan)
        results[key] = np.asarray(row, np.float64)
        if name == "kgs_gcn" or name.startswith(STREAM_PREFIX):
            results[f"logits__{key}"] = logits  # for the multi-stream fusion
        logger.log((i + 1) * config.steps, run=key, test_top1=ev["top1"], test_top5=ev["top5"])
        if name == "kgs_gcn" and split == "xsub" and seed == 0:
            kept["kgs"] = (model, state)
        mngr.save(i + 1, args=ocp.args.StandardSave({"runs": results}))
    mngr.wait_until_finished()
    return kgs_report.report(config, workdir, data, results, levels, kept, time.time() - t_start)
