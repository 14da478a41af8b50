"""Figures: SLO attainment (real server rate and CV sweeps, simulated memory sweep) and
samples of the served t2i, latent and LoRA workflows."""

import matplotlib.pyplot as plt

import xplib


def variant_figure(config, workdir, var):
    """SLO attainment vs rate on the real server in the variant regime (every rate-bisection
    point, one panel per load source), real beside simulated."""
    srcs = list(config.real_var_loads)
    fig, axes = plt.subplots(1, len(srcs), figsize=(5.5 * len(srcs), 3.6), squeeze=False)
    for ax, src in zip(axes[0], srcs, strict=True):
        for mode, style, color in (("micro", "o", "C0"), ("monolithic", "s", "C1")):
            pts = sorted(
                (r[3], r[5], r[9]) for r in var["rows"] if r[:2] == [src, mode] and r[4] == 1.0
            )
            if pts:
                xs, real, sim = zip(*pts, strict=True)
                ax.plot(xs, real, "-" + style, color=color, label=f"{mode}, real")
                ax.plot(xs, sim, ":" + style, color=color, mfc="none", label=f"{mode}, simulated")
        ax.axhline(0.9, color="gray", lw=0.8, ls="--")
        ax.set(
            xlabel="request rate (req/s)",
            ylabel="SLO attainment",
            title=f"real server, {list(config.real_variants)} variants, {src} loads",
        )
        ax.legend(fontsize=7)
    return xplib.save_figure(fig, workdir, "variants_real_server")


def save_figures(config, workdir, load, quality, sims, var):
    """Save the four figures under `workdir`; returns their paths."""
    res, pair, mems = load["results"], ("micro", "monolithic"), list(config.sim_memory)
    by, pinned = sims["by"], sims["pinned"]
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
    figs.append(variant_figure(config, workdir, var))
    return figs
