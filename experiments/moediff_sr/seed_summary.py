"""Median over seeds of several `small` runs (one workdir per `--config.seed`).

    for s in 0 1 2; do python experiments/moediff_sr/main.py \\
        --config=experiments/moediff_sr/config.py:small --config.seed=$s \\
        --workdir=/tmp/moediff_sr_seed$s; done
    python experiments/moediff_sr/seed_summary.py /tmp/moediff_sr_seed0 /tmp/moediff_sr_seed1 \\
        /tmp/moediff_sr_seed2

With more than three workdirs it also prints the MoE and the single expert side by side:
medians over the first three and over all seeds, per-seed margins and a paired sign count.

Prints, per held-out setting, every method's PSNR / SSIM for each seed and the median, the
MoE's margin over the single expert and bicubic per seed, the validation means and the
gate's region/top-expert mutual information. A seed changes the training pool, the
initialisation and the bias/noise draws of the test images (clean test images do not change).
"""

import json
import pathlib
import sys

import numpy as np

METHODS = ("bicubic", "edsr_lite", "single_expert", "moediff_sr")


def load(workdir):
    r = json.loads((pathlib.Path(workdir) / "results.json").read_text())
    sets, val = {}, {}
    for t in r["tables"]:
        title = t["title"]
        if "held-out slabs" in title or "dipy" in title:
            setting = title.split(" (")[0]
            cols = t["columns"]
            sets[setting] = {
                row[0]: {"psnr": row[cols.index("psnr")], "ssim": row[cols.index("ssim")]}
                for row in t["rows"]
            }
        elif title.startswith("Validation"):
            val = {row[0]: row[-1] for row in t["rows"]}
    mi = r["extra"]["gate_specialisation"]["mutual_information_bits"]
    return sets, val, mi


def main(workdirs):
    runs = [load(w) for w in workdirs]
    print(f"{len(runs)} seeds: {workdirs}")
    print("| setting | metric | " + " | ".join(METHODS) + " | MoE - single per seed |")
    print("|---|---|" + "---|" * (len(METHODS) + 1))
    for setting in runs[0][0]:
        for metric in ("psnr", "ssim"):
            per = {m: [r[0][setting][m][metric] for r in runs] for m in METHODS}
            med = " | ".join(f"{np.median(per[m]):.4g}" for m in METHODS)
            pairs = zip(per["moediff_sr"], per["single_expert"], strict=True)
            gap = ", ".join(f"{a - b:+.3f}" for a, b in pairs)
            print(f"| {setting} | {metric} | {med} | {gap} |")
    if len(runs) > 3:
        paired(runs)
    print("validation mean PSNR per seed:")
    for m in METHODS:
        print(f"  {m}: {[r[1].get(m) for r in runs]}")
    print(f"gate region/top-expert MI (bits) per seed: {[r[2] for r in runs]}")


def paired(runs):
    """MoE vs single expert: medians over all seeds beside those over the first three, the
    per-seed margins and in how many seeds the MoE is ahead (MoE - single > 0)."""
    n = len(runs)
    print(f"MoE vs single expert, medians over the first 3 and over all {n} seeds:")
    print(
        f"| setting | metric | single (3) | MoE (3) | MoE - single (3) | single ({n}) | MoE ({n}) "
        f"| MoE - single ({n}) | MoE - single per seed | MoE ahead |"
    )
    print("|---|---|" + "---|" * 8)
    for setting in runs[0][0]:
        for metric in ("psnr", "ssim"):
            moe = np.array([r[0][setting]["moediff_sr"][metric] for r in runs])
            one = np.array([r[0][setting]["single_expert"][metric] for r in runs])
            m3, s3, mn, sn = (np.median(a) for a in (moe[:3], one[:3], moe, one))
            gaps = ", ".join(f"{g:+.3f}" for g in moe - one)
            gaps += f" (median {np.median(moe - one):+.3f})"
            print(
                f"| {setting} | {metric} | {s3:.4g} | {m3:.4g} | {m3 - s3:+.3f} | {sn:.4g} "
                f"| {mn:.4g} | {mn - sn:+.3f} | {gaps} | {int((moe > one).sum())} of {n} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
