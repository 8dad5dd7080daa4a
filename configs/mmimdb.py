"""MM-IMDb (23 genres, multilabel): the paper's hyper-parameters (docs/method.md section 2.3).

Needs a feature store built from the hand-downloaded dataset (see README, "Real datasets"):
  flmoe features --dataset mmimdb --raw data/mmimdb --out runs/stores/mmimdb
  python train.py --config configs/mmimdb.py --workdir runs/mmimdb      (`:dense` / `:i2moe` for the baselines)
Model selection: validation macro-F1; 40 epochs, batch 32, Adam 1e-4, lambda_int 0.5, T = 2, 2-layer gate.
"""

from flmoe_jax.config import apply_model_kind, base_config, config_args


def get_config(arg: str = ""):
  args = config_args(arg, ("dense", "i2moe"))
  c = base_config()
  c.name = "mmimdb"
  c.store = "runs/stores/mmimdb"
  c.train.epochs = 40
  c.model.rw_layers = 2
  c.loss.lambda_int = 0.5
  apply_model_kind(c, args)
  return c
