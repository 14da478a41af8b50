"""Launch (presets and the full command in config.py):

python experiments/kgs_gcn/main.py --config=experiments/kgs_gcn/config.py:smoke --workdir=D
"""

from train import train_and_evaluate

from xplib import run_main

if __name__ == "__main__":
    run_main(train_and_evaluate)
