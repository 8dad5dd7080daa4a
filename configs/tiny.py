"""A tiny config for tests: seconds on a CPU, exercises every code path (not a meaningful model)."""

from flmoe_jax.config import base_config, config_args


def get_config(arg: str = ""):
  args = config_args(arg, ("dense",))
  c = base_config()
  c.name = "tiny"
  c.store = "runs/stores/tiny"
  c.synthetic = dict(
    seed=0,
    n_train=64,
    n_val=32,
    n_test=32,
    text_len=8,
    min_text_len=6,
    image_len=4,
    dim=8,
    n_distractors=0,
  )
  c.model.hidden_dim = 16
  c.model.num_heads = 2
  c.model.num_layers = 1
  c.model.rw_hidden = 16
  c.model.dropout = 0.1
  c.optim.learning_rate = 1e-3
  c.train.batch_size = 16
  c.train.eval_batch_size = 32
  c.train.epochs = 2
  c.train.seeds = (0,)
  c.train.log_every_steps = 2
  c.train.progress = False
  if "dense" in args:
    c.model.kind = "dense"
  return c
