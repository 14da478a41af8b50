"""Launch (see config.py for the presets):

    python experiments/sr_distill/main.py --config=experiments/sr_distill/config.py:small \\
        --workdir=DIR
"""

from train import train_and_evaluate

from xplib import run_main

if __name__ == "__main__":
    run_main(train_and_evaluate)
