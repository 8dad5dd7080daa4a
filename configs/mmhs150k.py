"""MMHS150K (binary hate / not-hate by majority of 3 votes; tweet text + image).

  flmoe features --dataset mmhs150k --raw data/MMHS150K --out runs/stores/mmhs150k
  python train.py --config configs/mmhs150k.py --workdir runs/mmhs150k      (`:dense` / `:i2moe` for the baselines)
Not in the reference code: MM-IMDb hyper-parameters (docs/method.md 8, item 8), selection by validation accuracy.
"""

from flmoe_jax.config import apply_model_kind, base_config, config_args


def get_config(arg: str = ""):
  args = config_args(arg, ("dense", "i2moe"))
  c = base_config()
  c.name = "mmhs150k"
  c.store = "runs/stores/mmhs150k"
  c.train.epochs = 40
  c.model.rw_layers = 2
  c.loss.lambda_int = 0.5
  c.train.selection_metric = "accuracy"
  apply_model_kind(c, args)
  return c
