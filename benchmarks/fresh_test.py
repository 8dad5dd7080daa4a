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
from scipy import stats


def predictions(model, features: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
  """Predicted class [N] of a binary or multiclass model, in batches of 256."""
  import jax.numpy as jnp

  out = []
  for start in range(0, len(features[0]), 256):
    sl = slice(start, start + 256)
    logits = np.asarray(
      model([jnp.asarray(x[sl]) for x in features], [jnp.asarray(m[sl]) for m in masks]).logits
    )
    out.append((logits[:, 0] > 0).astype(int) if logits.shape[-1] == 1 else logits.argmax(-1))
  return np.concatenate(out)


def score(pred: np.ndarray, labels: np.ndarray) -> dict:
  """Accuracy with its Wilson 95% interval and sample size."""
  k, n = int((pred == labels).sum()), len(labels)
  ci = stats.binomtest(k, n).proportion_ci(method="wilson")
  interval = [round(float(ci.low), 4), round(float(ci.high), 4)]
  return {"n": n, "accuracy": round(k / n, 4), "wilson95": interval}


def fresh_test(workdir: str, seeds: list[int], n: int) -> list[dict]:
  """Each seed's accuracy on the store's test split and on a fresh draw of n test examples."""
  from flmoe_jax.data import synthetic
  from flmoe_jax.runs import load_run

  rows, fresh = [], None
  for seed in seeds:
    run = load_run(workdir, seed=seed)
    fs = run.store
    gt = fs.ground_truth()
    if gt is None:
      raise SystemExit(f"{fs.path}: no ground_truth.json (a synthetic store is needed)")
    if fresh is None:  # One draw, shared by the seeds of the run (they share the store).
      cfg = dataclasses.replace(
        synthetic.config_from_ground_truth(gt), n_train=1, n_val=1, n_test=n
      )
      fresh = synthetic.generate(cfg)["test"]
    names = fs.modality_names
    own = fs.split("test")
    rows.append(
      {
        "workdir": workdir,
        "seed": seed,
        "store_test": score(
          predictions(run.model, list(own.features), list(own.masks)), own.labels.reshape(-1)
        ),
        "fresh_test": score(
          predictions(
            run.model,
            [fresh["features"][m] for m in names],
            [fresh["masks"][m] for m in names],
          ),
          np.asarray(fresh["labels"]).reshape(-1),
        ),
        "bayes_accuracy": gt["bayes_optimal_accuracy"],
      }
    )
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
