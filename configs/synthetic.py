"""The embedded default: FL-I2MoE on the synthetic planted-interaction set (no download).

Run:  python train.py --config configs/synthetic.py --workdir runs/synthetic
      (`flmoe train ...` is the same). Args (comma-separated): `dense` trains the dense-transformer
      baseline instead; `demo` is the shorter schedule `make demo` uses.
Sized for: a 2-core CPU, a few minutes per seed. Expected: validation accuracy within 3 points of the
generator's Bayes-optimal accuracy (printed in the store's ground_truth.json).
"""

from flmoe_jax.config import base_config


def get_config(arg: str = ""):
  args = set(filter(None, arg.split(",")))
  c = base_config()
  c.name = "synthetic"
  c.store = "runs/stores/synthetic"
  # Short sequences (10 tokens, a 3x3 patch grid) and no decoy tokens: the planted XOR is then found by
  # gradient descent within a few epochs on a CPU (with 24 tokens x 16 patches it is not, in 20 epochs).
  # 8,000 training examples: with 4,000 the model overfits at ~95% validation accuracy.
  c.synthetic = dict(
    seed=0, n_train=8000, n_val=500, n_test=500, text_len=10, min_text_len=8, image_len=9, dim=32,
    n_distractors=0,
  )
  c.model.hidden_dim = 32
  c.model.num_heads = 2
  c.model.rw_hidden = 64
  c.model.dropout = 0.1
  c.optim.learning_rate = 2e-3
  c.train.batch_size = 64
  c.train.epochs = 15
  c.train.prng_impl = "rbg"  # 2x faster dropout on CPU
  c.train.seeds = (0, 1)
  c.train.log_every_steps = 25
  if "demo" in args:
    # `make demo`: 6 epochs (the XOR is found by epoch 3; 15 epochs reach ~99%, 6 about 95-97%).
    c.train.epochs = 6
  if "dense" in args:
    c.model.kind = "dense"
    c.name = "synthetic_dense"
  return c
