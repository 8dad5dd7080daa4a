"""Trains FL-I2MoE (or the dense baseline) on a feature store; the same as `flmoe train`.

  python train.py --config configs/synthetic.py --workdir runs/synthetic [--config.train.epochs=5]

The whole story lives in `flmoe_jax/train/loop.py` (`train_and_evaluate`); this file only parses flags.
"""

import sys

from flmoe_jax import cli

if __name__ == "__main__":
  sys.exit(cli.main(["train", *sys.argv[1:]]))
