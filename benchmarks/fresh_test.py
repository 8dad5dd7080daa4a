"""A trained run's accuracy on a larger, fresh draw from its synthetic store's generator.

The ladder's test split holds 500 examples, so an accuracy read from it has a binomial standard
error of about 0.8 points near 96%. This script redraws a test split of `--n` examples from the same
generator (the store's `ground_truth.json` holds its config: the same planted structure, directions
and positions), runs each seed's best checkpoint on it, and prints the accuracy with a Wilson 95%
interval, next to the same numbers on the store's own test split. The draw comes from the test split's
random stream, which training never reads; its first examples share their text lengths and background
token ids with the store's test split (the stream's first draws), not their planted bits, noise or
image features.

  python benchmarks/fresh_test.py --workdir runs/ladder/runs/NAME --seeds 0,1,2 [--n 5000]

Prints one JSON line per seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np


def logits(model, features: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
  """The model's logits [N, C] over arrays of examples, in batches of 256."""
  import jax.numpy as jnp

  out = []
  for start in range(0, len(features[0]), 256):
    sl = slice(start, start + 256)
    res = model([jnp.asarray(x[sl]) for x in features], [jnp.asarray(m[sl]) for m in masks])
    out.append(np.asarray(res.logits))
  return np.concatenate(out)


def score(task_type: str, out: np.ndarray, labels: np.ndarray) -> dict:
  """Accuracy (the training loop's metric) with its Wilson 95% interval and sample size."""
  from flmoe_jax.metrics import compute_metrics
  from flmoe_jax.significance import proportion_ci

  n = len(labels)
  accuracy = compute_metrics(task_type, out, labels)["accuracy"]
  low, high = proportion_ci(round(accuracy * n), n)
  return {"n": n, "accuracy": round(accuracy, 4), "wilson95": [round(low, 4), round(high, 4)]}


def fresh_test(workdir: str, seeds: list[int], n: int) -> list[dict]:
  """Each seed's accuracy on the store's test split and on a fresh draw of n test examples."""
  from flmoe_jax.data import synthetic
  from flmoe_jax.runs import load_run

  runs = {seed: load_run(workdir, seed=seed) for seed in seeds}
  fs = runs[seeds[0]].store  # the seeds of a run share its store
  gt = fs.ground_truth()
  if gt is None:
    raise SystemExit(f"{fs.path}: no ground_truth.json (a synthetic store is needed)")
  cfg = dataclasses.replace(synthetic.config_from_ground_truth(gt), n_train=1, n_val=1, n_test=n)
  fresh = synthetic.generate(cfg)["test"]
  own = fs.split("test")
  splits = {
    "store_test": (list(own.features), list(own.masks), own.labels),
    "fresh_test": (
      [fresh["features"][m] for m in fs.modality_names],
      [fresh["masks"][m] for m in fs.modality_names],
      fresh["labels"],
    ),
  }
  rows = []
  for seed, run in runs.items():
    row = {"workdir": workdir, "seed": seed}
    for name, (features, masks, labels) in splits.items():
      row[name] = score(fs.task.type, logits(run.model, features, masks), labels)
    rows.append({**row, "bayes_accuracy": gt["bayes_optimal_accuracy"]})
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--seeds", default="0")
  p.add_argument("--n", type=int, default=5000, help="size of the fresh test draw")
  args = p.parse_args()
  for row in fresh_test(args.workdir, [int(s) for s in args.seeds.split(",")], args.n):
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
