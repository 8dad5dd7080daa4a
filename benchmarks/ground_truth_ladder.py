"""Do the models learn the planted interactions as the sequences grow? A size ladder (prints JSON).

Rungs of the synthetic generator (`flmoe_jax.data.synthetic`), each a store per setting:

  L1  10 tokens x 9 patches, no decoys          (configs/synthetic.py's size)
  L2  24 tokens x 16 patches, 2 decoys per modality
  L3  48 tokens x 49 patches, 4 decoys
  L4  128 tokens x 196 patches, 8 decoys          (for a GPU)

For every rung x setting x model x seed it trains with the recipe of `configs/synthetic.py` (or
`:paper`, `:dense`), prints one JSON line: training examples and steps, best-validation and test
accuracy against the generator's Bayes accuracy, the epoch at which validation accuracy first
exceeded the half-way mark between chance and Bayes (the end of the plateau), wall time; for
FL-I2MoE also its probes on the test split: the hit@1 of the planted pair of the store's setting (SII
on `syn` for synergy, with the marginal fill unless `--sii-fill mean`; the redundancy gap on `red`, with
the mean fill, for redundancy; both on `mixed`; by sign, by magnitude, and called: first by sign with at
least 0.25 nats on the log-odds scale), its cross-talk
(first under, or called by, the other role's probe) and the pairs standing out across examples by
magnitude, by sign and by calls; and the accuracy of a flattened-features MLP (the learnability
anchor: it sees every position directly).

  python benchmarks/ground_truth_ladder.py --rungs L1,L2 --settings synergy,mixed --models fl_i2moe,dense,mlp
  python benchmarks/ground_truth_ladder.py --rungs L2 --settings synergy --models dense --n-train 3000 \\
      --set optim.schedule=warmup_cosine --set optim.warmup_fraction=0.05

`--model-seeds N` trains N model seeds side by side on each store (`train.vmap_seeds`: one compiled
program over a seed axis), one row each; `benchmarks/gpu_ladder.sh` runs the GPU rungs this way.

Not a test: a measurement. Stores and runs go under --root (default runs/ladder) and are reused.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

RUNGS = {
  "L1": dict(text_len=10, min_text_len=8, image_len=9, n_distractors=0),
  "L2": dict(text_len=24, min_text_len=12, image_len=16, n_distractors=2),
  "L3": dict(text_len=48, min_text_len=24, image_len=49, n_distractors=4),
  "L4": dict(text_len=128, min_text_len=64, image_len=196, n_distractors=8),
}
SETTINGS = ("mixed", "synergy", "redundancy", "uniq_text", "uniq_image", "complement", "null")


def build_store(root: pathlib.Path, rung: str, setting: str, n_train: int, seed: int):
  from flmoe_jax.data import synthetic

  path = root / "stores" / f"{rung}_{setting}_n{n_train}_s{seed}"
  if not (path / "manifest.json").exists():
    cfg = synthetic.PlantedConfig(
      seed=seed, n_train=n_train, n_val=500, n_test=500, dim=32, setting=setting, **RUNGS[rung]
    )
    synthetic.write_synthetic_store(cfg, path)
  return path


def plateau_end(workdir: pathlib.Path, seed: int, bayes: float) -> int | None:
  """First epoch whose validation accuracy passed half-way from chance (0.5) to Bayes."""
  from flmoe_jax.metrics import read_metrics

  target = 0.5 + 0.5 * (bayes - 0.5)
  for rec in read_metrics(workdir / "metrics.jsonl"):
    if rec.get("seed") == seed and rec.get("val/accuracy", 0.0) > target:
      return int(rec["epoch"])
  return None


def test_interval(test: dict) -> dict:
  """The test split's size and the Wilson 95% interval of its accuracy (a binomial proportion)."""
  from flmoe_jax.significance import proportion_ci

  n = int(test["num_examples"])
  low, high = proportion_ci(round(test["accuracy"] * n), n)
  return {"test_examples": n, "test_accuracy_wilson95": [round(low, 4), round(high, 4)]}


def train_transformer(args, store, model: str, seeds: list[int], tag: str) -> dict[int, dict]:
  """Trains `model` on `store` for each model seed; several seeds train side by side (vmapped).

  Returns:
    {seed: the row's training fields}.
  """
  import ml_collections

  from flmoe_jax import config as config_lib
  from flmoe_jax import train

  parts = [p for p in (args.objective, "dense" if model == "dense" else "") if p]
  cfg = config_lib.load_config(
    f"{pathlib.Path(__file__).parents[1] / 'configs' / 'synthetic.py'}"
    + (f":{','.join(parts)}" if parts else ""),
    [
      f"train.epochs={args.epochs}",
      f"train.seeds=({','.join(map(str, seeds))},)",
      "train.progress=False",
      # Why: on an accelerator a small model's step is mostly launch time, which S seeds side by
      # side share (train.vmap_seeds needs the threefry generator).
      *(["train.vmap_seeds=True", "train.prng_impl=threefry2x32"] if len(seeds) > 1 else []),
      *args.set,
    ],
  )
  with cfg.unlocked():
    cfg.synthetic = ml_collections.ConfigDict()  # the store is given, not built
    cfg.store = str(store)
  name = f"{tag}_{model}_s{seeds[0]}" + (f"-{seeds[-1]}" if len(seeds) > 1 else "")
  workdir = args.root / "runs" / name
  t0 = time.perf_counter()
  summary = train.train_and_evaluate(cfg, workdir, overwrite=True)
  seconds = round(time.perf_counter() - t0, 1)
  return {
    seed: {
      "workdir": str(workdir),
      "steps": res.steps,
      "best_epoch": res.best_epoch,
      "val_accuracy": res.best_val["accuracy"],
      "test_accuracy": res.test["accuracy"],
      **test_interval(res.test),
      "seconds": seconds,
      **({"seeds_side_by_side": len(seeds)} if len(seeds) > 1 else {}),
    }
    for seed, res in ((s, summary.seeds[s]) for s in seeds)
  }


def probe_hit(workdir: str, setting: str, seed: int, args) -> dict:
  """Planted-pair hit@1 of the meant probe, its cross-talk, and the pairs standing out (SII, RG)."""
  from flmoe_jax.probes.config import ProbeConfig
  from flmoe_jax.probes.pipeline import run_probe

  cfg = ProbeConfig(
    samples=args.probe_samples,
    pairs=args.pairs,
    draws=16,
    figures=False,
    sii_fill=args.sii_fill,
    run_seed=seed,
    tag=f"s{seed}" if args.model_seeds > 1 else "",  # one report per seed of a shared run folder
  )
  report = run_probe(cfg, workdir, log=None)
  out = {
    "n_examples": args.probe_samples,
    "fills": report.settings.fills,
    "candidates": args.pairs,
    "attribution": report.settings.attribution,
  }
  for name, p in (report.planted or {}).get("pairs", {}).items():
    if p["kind"] == setting or (setting == "mixed" and p["kind"] in ("synergy", "redundancy")):
      scale = report.settings.rank_score("SII" if p["kind"] == "synergy" else "RG")
      out[name] = {
        "probe": p["probe"],
        "scale": scale,
        "hit@1": p[scale]["hit@1"],
        "abs_hit@1": p[scale]["abs_hit@1"],
        "called@1": p["logodds"]["called@1"],
        "n": p["n"],
        # The share of examples whose candidate pairs hold the planted pair: hit@1's ceiling.
        "in_candidates": p["in_candidates"],
      }
      if "cross_talk" in p:
        out[name]["cross_talk"] = p["cross_talk"]
  for index, res in report.standout.items():
    for test, key in (
      (res.dataset, "standouts"),
      (res.dataset_signed, "signed"),
      (res.dataset_called, "called"),
    ):
      out[f"{index}_{key}"] = [
        f"{list(q.pair)} ({q.rate:.2f})" for q in (test.pairs if test else ()) if q.stands_out
      ]
  return out


def train_mlp(store, seed: int, epochs: int = 200) -> dict:
  """A two-layer MLP (256 hidden, Adam 1e-3, full batch) on flattened, masked features."""
  import jax
  import jax.numpy as jnp
  import optax

  from flmoe_jax.data.store import open_store

  fs = open_store(store)

  def flat(split):
    s = fs.split(split)
    xs = [np.asarray(x, np.float32) * np.asarray(m)[..., None] for x, m in zip(s.features, s.masks)]
    return np.concatenate([x.reshape(len(x), -1) for x in xs], 1), np.asarray(s.labels)

  (xtr, ytr), (xte, yte) = flat("train"), flat("test")
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
  xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
  k1, k2 = jax.random.split(jax.random.key(seed))
  d = xtr.shape[1]
  params = {
    "w1": jax.random.normal(k1, (d, 256)) / np.sqrt(d),
    "b1": jnp.zeros(256),
    "w2": jax.random.normal(k2, (256, 2)) / 16.0,
    "b2": jnp.zeros(2),
  }

  def logits(p, x):
    return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  def loss(p):
    return optax.softmax_cross_entropy_with_integer_labels(logits(p, xtr), ytr).mean()

  tx = optax.adam(1e-3)
  opt = tx.init(params)

  @jax.jit
  def step(p, o):
    g = jax.grad(loss)(p)
    u, o = tx.update(g, o)
    return optax.apply_updates(p, u), o

  for _ in range(epochs):
    params, opt = step(params, opt)
  acc = float((np.asarray(logits(params, xte)).argmax(1) == yte).mean())
  return {"test_accuracy": acc, "epochs": epochs}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rungs", default="L1,L2,L3")
  p.add_argument("--settings", default=",".join(SETTINGS))
  p.add_argument("--models", default="fl_i2moe,dense,mlp")
  p.add_argument("--seeds", default="0", help="store seeds (one store each)")
  p.add_argument(
    "--model-seeds",
    type=int,
    default=1,
    help="model seeds per store, trained side by side: the store's seed s, s+1, ..., s+N-1",
  )
  p.add_argument("--n-train", type=int, default=5000)
  p.add_argument("--epochs", type=int, default=15)
  p.add_argument("--objective", default="", help="'' (the library's) or 'paper'")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
  p.add_argument("--probe-samples", type=int, default=100, help="0: no probe")
  p.add_argument("--pairs", default="all", choices=("all", "topk"))
  p.add_argument(
    "--sii-fill",
    default="marginal",
    choices=("mean", "marginal"),
    help="the SII game's fill (the RG game keeps the mean fill); marginal: docs/probes.md, 'Fill'",
  )
  p.add_argument("--root", type=pathlib.Path, default=pathlib.Path("runs/ladder"))
  p.add_argument("--tag", default="", help="suffix of the run folders (one per variant)")
  args = p.parse_args()
  for rung in args.rungs.split(","):
    for setting in args.settings.split(","):
      for seed in (int(s) for s in args.seeds.split(",")):
        store = build_store(args.root, rung, setting, args.n_train, seed)
        bayes = json.loads((store / "ground_truth.json").read_text())["bayes_optimal_accuracy"]
        tag = f"{rung}_{setting}_n{args.n_train}" + (f"_{args.objective}" if args.objective else "")
        tag += f"_{args.tag}" if args.tag else ""
        for model in args.models.split(","):
          row = {
            "rung": rung,
            **RUNGS[rung],
            "setting": setting,
            "model": model,
            "seed": seed,
            "n_train": args.n_train,
            "bayes_accuracy": round(bayes, 4),
            "objective": args.objective or ("library" if model == "fl_i2moe" else None),
            "overrides": args.set,
            "tag": args.tag,
          }
          if model == "mlp":
            print(json.dumps({**row, **train_mlp(store, seed)}), flush=True)
            continue
          seeds = list(range(seed, seed + args.model_seeds))
          for model_seed, trained in train_transformer(args, store, model, seeds, tag).items():
            out = {**row, "seed": model_seed, "store_seed": seed, **trained}
            out["plateau_end_epoch"] = plateau_end(pathlib.Path(out["workdir"]), model_seed, bayes)
            if model == "fl_i2moe" and args.probe_samples:
              out["probe"] = probe_hit(out["workdir"], setting, model_seed, args)
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
