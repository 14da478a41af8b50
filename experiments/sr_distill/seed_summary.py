"""Student vs teacher over several `small` runs (one workdir per seed or per setting).

    for s in 0 1 2; do python experiments/sr_distill/main.py \\
        --config=experiments/sr_distill/config.py:small --config.seed=$s --config.moe.seed=$s \\
        --workdir=/tmp/sr_distill_seed$s; done
    python experiments/sr_distill/seed_summary.py /tmp/sr_distill_seed0 /tmp/sr_distill_seed1 \\
        /tmp/sr_distill_seed2

`config.seed` sets the training pool, the teacher's and the student's initialisation, the
training batches and the noise / bias draws of the evaluation images; `config.moe.seed` the
MoEDiff-SR models' initialisation (pass both). `--split=val` alone (e.g. to compare settings)
reads only the validation table.

Prints, per split (validation slab, held-out test slabs) and scale (the unseen one marked),
the PSNR of the 8-step teacher, the teacher's 1-step estimate and the final student for each
run, the student's margin over each teacher per run and the median [min, max] over the runs;
then the CPU sampling time per slice and the speed-ups against both teachers, and how many
runs meet the issue's line (within 0.5 dB, >= 4x less CPU time) at x4 against either teacher.
"""

import argparse
import json
import pathlib

import numpy as np

TEACHER, TEACHER_1, STUDENT = "teacher", "teacher (1 step)", "student"
MODELS = (TEACHER, TEACHER_1, STUDENT)


def load(workdir):
    """{split: {scale tag: {model: psnr}}}, {model: CPU s / slice}, {model: MFLOP / call}."""
    r = json.loads((pathlib.Path(workdir) / "results.json").read_text())
    psnr, cpu, mflop = {"val": {}, "test": {}}, {}, {}
    for t in r["tables"]:
        cols, title = t["columns"], t["title"]
        if title.startswith("held-out slabs"):
            for row in t["rows"]:
                psnr["test"].setdefault(row[0], {})[row[1]] = row[cols.index("psnr")]
        elif title.startswith("validation slab"):
            tags = [c.removeprefix("psnr ") for c in cols if c.startswith("psnr ")]
            for row in t["rows"]:
                for tag in tags:
                    psnr["val"].setdefault(tag, {})[row[0]] = row[cols.index(f"psnr {tag}")]
        elif title.startswith("Cost per"):
            for row in t["rows"]:
                cpu[row[0]] = row[cols.index("CPU s / slice")]
                mflop[row[0]] = row[cols.index("MFLOP / network call")]
    # the validation table names its scales "x2.5", the test table "x2.5 (unseen)"
    unseen = {tag.split(" ")[0]: tag for tag in psnr["test"]}
    psnr["val"] = {unseen.get(tag, tag): v for tag, v in psnr["val"].items()}
    return psnr, cpu, mflop


def spread(values):
    v = np.asarray(values, dtype=float)
    return f"{np.median(v):+.2f} [{v.min():+.2f}, {v.max():+.2f}]"


def main(workdirs, splits):
    runs = [load(w) for w in workdirs]
    names = [pathlib.Path(w).name for w in workdirs]
    print(f"{len(runs)} runs: {', '.join(names)}")
    for split in splits:
        print(
            f"\n{split}: PSNR dB per run (teacher 8 steps / teacher 1 step / student), the "
            "student's margin per run and its median [min, max]"
        )
        head = " | ".join(names)
        print(f"| scale | {head} | student - teacher (8) | student - teacher (1) |")
        print("|---|" + "---|" * (len(names) + 2))
        for tag in runs[0][0][split]:
            rows = [r[0][split][tag] for r in runs]
            cells = [" / ".join(f"{row[m]:.2f}" for m in MODELS) for row in rows]
            d8 = [row[STUDENT] - row[TEACHER] for row in rows]
            d1 = [row[STUDENT] - row[TEACHER_1] for row in rows]
            print(f"| {tag} | " + " | ".join(cells) + f" | {spread(d8)} | {spread(d1)} |")
    print("\nCPU s / slice per run (teacher 8 / teacher 1 / student) and the student's speed-up")
    print(
        "| run | teacher | teacher (1 step) | student | MFLOP / call (teacher, student) "
        "| vs teacher (8) | vs teacher (1) |"
    )
    print("|---|---|---|---|---|---|---|")
    s8, s1 = [], []
    for name, (_, cpu, mflop) in zip(names, runs, strict=True):
        s8.append(cpu[TEACHER] / cpu[STUDENT])
        s1.append(cpu[TEACHER_1] / cpu[STUDENT])
        print(
            f"| {name} | {cpu[TEACHER]:.4f} | {cpu[TEACHER_1]:.4f} | {cpu[STUDENT]:.4f} "
            f"| {mflop[TEACHER]:.1f}, {mflop[STUDENT]:.1f} | {s8[-1]:.2f}x | {s1[-1]:.2f}x |"
        )
    print(
        f"| median [min, max] | | | | | {np.median(s8):.2f}x [{min(s8):.2f}, {max(s8):.2f}] "
        f"| {np.median(s1):.2f}x [{min(s1):.2f}, {max(s1):.2f}] |"
    )
    x4 = max(runs[0][0]["test"], key=lambda tag: float(tag.split(" ")[0][1:]))
    for split in splits:
        for ref, speed in ((TEACHER, s8), (TEACHER_1, s1)):
            ok = [
                r[0][split][x4][STUDENT] - r[0][split][x4][ref] >= -0.5 and s >= 4
                for r, s in zip(runs, speed, strict=True)
            ]
            print(
                f"{split} {x4}: within 0.5 dB of '{ref}' at >= 4x less CPU time in "
                f"{sum(ok)} of {len(ok)} runs"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--split", choices=("val", "test", "both"), default="both")
    args = parser.parse_args()
    main(args.workdirs, ("val", "test") if args.split == "both" else (args.split,))
