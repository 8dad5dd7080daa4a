"""`make demo` / `flmoe demo`: the pipeline on the embedded default, with no network and no download.

Today: the synthetic planted-interaction store -> FL-I2MoE and the dense-transformer baseline (several seeds)
-> validation and test metrics of both, next to the generator's Bayes-optimal accuracy. Each stage writes
into the demo's run directory and is skipped when already complete, so a rerun is quick.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Sequence

from flmoe_jax import cli
from flmoe_jax import config as config_lib

_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _config(arg: str, store: pathlib.Path, overrides: Sequence[str], quick: bool):
  cfg = config_lib.load_config(f"{_CONFIGS / 'synthetic.py'}:{arg}", overrides)
  with cfg.unlocked():
    cfg.store = str(store)
    if quick:
      cfg.train.epochs = 3
      cfg.train.seeds = (0,)
  return cfg


def run(workdir: str = "runs/demo", *, overrides: Sequence[str] = (), quick: bool = False) -> dict:
  """Runs the demo chain and prints what it found; returns {"fl_i2moe": summary, "dense": summary}."""
  root = pathlib.Path(workdir)
  store = root / "stores" / "synthetic"
  t0 = time.perf_counter()
  out = {}
  for name, arg in (("fl_i2moe", ""), ("dense", "dense")):
    cfg = _config(arg, store, overrides, quick)
    print(f"\n== {name}: training on {store} ==", flush=True)
    out[name] = cli.train_and_print(cfg, root / name)
  gt = json.loads((store / "ground_truth.json").read_text())
  print(
    f"\nBayes-optimal accuracy of the planted label rule: {100 * gt['bayes_optimal_accuracy']:.2f}"
  )
  for name, s in out.items():
    m = s["mean_std"]
    print(
      f"{name:9s} val accuracy {100 * m['best_val']['accuracy']['mean']:.2f}"
      f"  test accuracy {100 * m['test']['accuracy']['mean']:.2f}"
    )
  print(f"demo finished in {time.perf_counter() - t0:.0f} s; runs in {root}")
  return out
