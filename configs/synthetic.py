"""The embedded default: FL-I2MoE on the synthetic planted-interaction set (no download).

Run:  python train.py --config configs/synthetic.py --workdir runs/synthetic
      (`flmoe train ...` is the same). Arg `:dense` trains the dense-transformer baseline instead.
Sized for: a 2-core CPU, a few minutes per seed. Expected: validation accuracy within 3 points of the
generator's Bayes-optimal accuracy (printed in the store's ground_truth.json).
"""

from flmoe_jax.config import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.name = "synthetic"
  c.store = "runs/stores/synthetic"
  c.synthetic = dict(seed=0, n_train=2000, n_val=500, n_test=500, text_len=24, image_len=16, dim=32)
  c.model.hidden_dim = 32
  c.model.num_heads = 2
  c.model.rw_hidden = 64
  c.model.dropout = 0.1
  c.optim.learning_rate = 1e-3
  c.train.batch_size = 64
  c.train.epochs = 10
  c.train.prng_impl = "rbg"  # 2x faster dropout on CPU
  c.train.seeds = (0, 1)
  c.train.log_every_steps = 25
  if arg == "dense":
    c.model.kind = "dense"
    c.name = "synthetic_dense"
  return c
