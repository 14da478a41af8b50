"""Launch: python experiments/epo/main.py --config=experiments/epo/config.py:small --workdir=DIR"""

from train import train_and_evaluate

from xplib import run_main

if __name__ == "__main__":
    run_main(train_and_evaluate)
