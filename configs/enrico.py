"""ENRICO (20 UI design topics, multiclass; screenshot + wireframe, two image modalities).

  flmoe features --dataset enrico --raw data/enrico --out runs/stores/enrico
  python train.py --config configs/enrico.py --workdir runs/enrico      (`:dense` / `:i2moe` for the baselines)
docs/method.md section 2.3: 50 epochs, batch 32, Adam 1e-4, 3-layer gate, T = 2, selection by validation accuracy.
lambda_int = 0.5 as in the supplementary's Table 1 (the reference scripts pass 0.0; docs/method.md 8, item 9).
"""

from flmoe_jax.config import apply_model_kind, base_config, config_args


def get_config(arg: str = ""):
  args = config_args(arg, ("dense", "i2moe"))
  c = base_config()
  c.name = "enrico"
  c.store = "runs/stores/enrico"
  c.train.epochs = 50
  c.model.rw_layers = 3
  c.loss.lambda_int = 0.5
  apply_model_kind(c, args)
  return c
