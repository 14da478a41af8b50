"""Launch: python experiments/chon/main.py --config=experiments/chon/config.py:smoke --workdir=D"""

from train import train_and_evaluate

from xplib import run_main

if __name__ == "__main__":
    run_main(train_and_evaluate)
