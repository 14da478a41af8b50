"""KGS-GCN vs ST-GCN, CTR-GCN(-lite) and a heatmap-only CNN (PoseC3D-lite) on synthetic NTU-25
cross-subject / cross-view splits, with multi-stream fusion, ablations and robustness curves.

    python experiments/kgs_gcn/main.py \
        --config=experiments/kgs_gcn/config.py:small --workdir=/tmp/kgs_gcn
"""

import ml_collections

PAPER = "KGS-GCN (arXiv 2603.16943)"
ORDER = 70


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    # data: every (class, subject, view) combination `repeats` times
    c.num_subjects = {"smoke": 6, "small": 10, "full": 40}[preset]
    c.repeats = {"smoke": 1, "small": 1, "full": 4}[preset]
    c.num_frames = {"smoke": 12, "small": 12, "full": 64}[preset]
    c.num_persons = {"smoke": 1, "small": 1, "full": 2}[preset]
    c.second_person_prob = 0.0 if preset != "full" else 0.3
    # models
    # 9 blocks as the paper's backbone: 1.19M parameters (the paper: ~1.4M)
    full_channels = (64, 64, 64, 128, 128, 128, 192, 192, 192)
    c.channels = {"smoke": (16,), "small": (16, 32), "full": full_channels}[preset]
    c.grid = {"smoke": 8, "small": 8, "full": 32}[preset]
    c.separable = True  # separable (product-of-marginals) splat renderer; False: exact 2-D
    # the heatmap-only baseline (PoseC3D-lite): its own, finer isotropic heatmaps
    c.hcnn_grid = {"smoke": 8, "small": 8, "full": 48}[preset]
    c.hcnn_width = {"smoke": 8, "small": 8, "full": 64}[preset]
    # main comparison (X-Sub, with robustness curves); ctr_gcn is always scaled to KGS-GCN's
    # parameter count; st_gcn_wide is ST-GCN scaled likewise (full only: the CPU budget of small)
    c.models = {
        "smoke": ("kgs_gcn", "st_gcn", "heatmap_cnn"),
        "small": ("kgs_gcn", "st_gcn", "ctr_gcn", "heatmap_cnn"),
        "full": ("kgs_gcn", "st_gcn", "st_gcn_wide", "ctr_gcn", "heatmap_cnn"),
    }[preset]
    # X-View (small: all but CTR-GCN-lite, the slowest model per step on 2 CPU cores)
    c.xview_models = {
        "smoke": ("kgs_gcn", "st_gcn"),
        "small": ("kgs_gcn", "st_gcn", "heatmap_cnn"),
        "full": ("kgs_gcn", "st_gcn", "st_gcn_wide", "ctr_gcn", "heatmap_cnn"),
    }[preset]
    # multi-stream KGS-GCN: these streams are trained as separate models (the joint stream is
    # the main kgs_gcn run) and fused by score averaging (2s: joint+bone, 3s: 2:2:1 with motion)
    c.streams = {
        "smoke": ("bone",),
        "small": ("bone", "joint_motion"),
        "full": ("bone", "joint_motion", "bone_motion"),
    }[preset]
    c.stream_splits = {"smoke": ("xsub",), "small": ("xsub",), "full": ("xsub", "xview")}[preset]
    # ablations (X-Sub, with robustness): isotropic vs anisotropic splats; adjacency: physical,
    # physical + learned offset, + Bhattacharyya prior alone (kgs_prior_only), prior + offset
    # (KGS-GCN itself); concatenation vs gating; no visual stream at all
    all_ablations = (
        "kgs_isotropic",
        "kgs_physical",
        "kgs_no_prob",
        "kgs_prior_only",
        "kgs_concat",
        "kgs_no_splat",
    )
    c.ablations = {
        "smoke": (),
        "small": all_ablations,
        "full": all_ablations + ("kgs_graph_only", "kgs_exact_render"),
    }[preset]
    # training
    c.seeds = {"smoke": 1, "small": 3, "full": 5}[preset]
    c.ablation_seeds = {"smoke": 1, "small": 2, "full": 5}[preset]
    c.steps = {"smoke": 40, "small": 45, "full": 20000}[preset]
    c.batch_size = {"smoke": 16, "small": 24, "full": 64}[preset]
    c.learning_rate = {"smoke": 3e-3, "small": 5e-3, "full": 3e-3}[preset]
    c.weight_decay = 1e-4
    # robustness: X-Sub models on degraded copies of the same test sequences
    # (`sg.degrade_skeletons`: frames lost, joints dropped, noise std in m added to the
    # generator's 1-2 cm); level 0 of each curve is the clean test set
    c.sparsity_levels = (0.0, 0.5, 0.75)
    c.dropout_levels = (0.0, 0.2, 0.4)
    c.noise_levels = (0.0, 0.04, 0.08)
    return c
