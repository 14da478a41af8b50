"""Launch (see config.py for the presets):

    python experiments/moediff_sr/main.py --config=experiments/moediff_sr/config.py:small \\
        --workdir=DIR
"""

from train import train_and_evaluate

from xplib import run_main

if __name__ == "__main__":
    run_main(train_and_evaluate)
