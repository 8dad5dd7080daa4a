"""Seeds one after the other vs side by side (`train.vmap_seeds`): wall time of a run (prints JSON).

Trains the same config twice into fresh folders under --root, once with the seeds in sequence and
once vmapped, and prints both wall times (compilation included: a user's run pays it), their ratio,
and the largest difference between the two runs' per-seed test metrics (they should agree to float
rounding).

  python benchmarks/vmap_seeds_bench.py --config configs/synthetic.py:demo --seeds 0,1,2 \\
      --set store=runs/demo/stores/synthetic --set train.epochs=2

Not a test: a measurement. The folders under --root are replaced on every call.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import time

import jax

from flmoe_jax import config as config_lib
from flmoe_jax import train


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--root", type=pathlib.Path, default=pathlib.Path("runs/bench_vmap_seeds"))
  args = ap.parse_args()
  seeds = f"train.seeds=({args.seeds},)"
  out, results = {"config": args.config, "seeds": args.seeds, "overrides": args.set}, {}
  for mode in ("sequential", "vmapped"):
    wd = args.root / mode
    if wd.exists():
      shutil.rmtree(wd)
    over = [*args.set, seeds, "train.progress=false", f"train.vmap_seeds={mode == 'vmapped'}"]
    cfg = config_lib.load_config(args.config, over)
    t = time.perf_counter()
    results[mode] = train.train_and_evaluate(cfg, wd)
    out[f"{mode}_s"] = round(time.perf_counter() - t, 2)
  out["speedup"] = round(out["sequential_s"] / out["vmapped_s"], 3)
  out["max_test_metric_diff"] = max(
    abs(results["vmapped"].seeds[s].test[k] - v)
    for s, r in results["sequential"].seeds.items()
    for k, v in r.test.items()
  )
  out["device"] = jax.devices()[0].device_kind
  out["num_devices"] = jax.device_count()
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
