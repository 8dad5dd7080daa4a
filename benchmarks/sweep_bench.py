"""A sweep in one `flmoe sweep` process vs its points as separate `flmoe train` processes (prints JSON).

Runs the same grid x seeds twice into fresh folders under --root: once as one `flmoe sweep` command,
once as one `flmoe train` command per grid point, one after the other (what a shell loop does), the
persistent compilation cache off in both. The difference is what the sweep saves by staying in one
process: the compiled steps its seeds and points share (those that differ only in loss weights),
and interpreter start, imports, opening the store and the JAX runtime's set-up, per point. Also
prints the largest difference between the two ways' test metrics (they train the same runs: it should
be 0).

  python benchmarks/sweep_bench.py --config configs/synthetic.py:demo \\
      --grid loss.lambda_int=0.3,0.5 --grid optim.learning_rate=1e-3,2e-3 --seeds 0,1 \\
      --set store=runs/demo/stores/synthetic --set train.epochs=1 --set train.limit_train=2000

Not a test: a measurement. The folders under --root are replaced on every call.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import jax

from flmoe_jax import config as config_lib
from flmoe_jax.sweep import SweepConfig, grid_points
from flmoe_jax.train.workdir import ensure_store


def _flmoe(*args: str) -> None:
  env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
  subprocess.run([sys.executable, "-m", "flmoe_jax", *args], check=True, env=env,
                 stdout=subprocess.DEVNULL)  # fmt: skip


def _tests(root: pathlib.Path) -> dict[str, dict[str, float]]:
  """{"<point>/seed_<n>": test metrics} of every finished seed under `root`."""
  return {
    str(p.parent.relative_to(root)): json.loads(p.read_text())["test"]
    for p in sorted(root.glob("**/seed_*/result.json"))
  }


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2")
  ap.add_argument("--seeds", default="0,1")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--root", type=pathlib.Path, default=pathlib.Path("runs/bench_sweep"))
  args = ap.parse_args()
  sets = [a for s in args.set for a in ("--config." + s.split("=", 1)[0], s.split("=", 1)[1])]
  # A synthetic config's store is built once, before either clock starts.
  ensure_store(config_lib.load_config(args.config, args.set))
  seeds = tuple(int(x) for x in args.seeds.split(","))
  points = grid_points(SweepConfig(config=args.config, grid=tuple(args.grid), seeds=seeds))
  out = {"config": args.config, "grid": args.grid, "seeds": args.seeds, "overrides": args.set}
  for mode in ("sweep", "separate"):
    wd = args.root / mode
    if wd.exists():
      shutil.rmtree(wd)
    t = time.perf_counter()
    if mode == "sweep":
      grid = [a for g in args.grid for a in ("--grid", g)]
      _flmoe("sweep", "--config", args.config, *grid, "--seeds", args.seeds, "--workdir", str(wd),
             *sets)  # fmt: skip
    else:
      for point in points:  # the sweep's own points: the same folders and overrides
        over = [f"--config.{o}" for o in point.overrides]
        _flmoe("train", "--config", args.config, "--workdir", str(wd / point.name), *sets, *over,
               "--config.train.progress", "false", "--config.train.seeds", f"({args.seeds},)")  # fmt: skip
    out[f"{mode}_s"] = round(time.perf_counter() - t, 2)
  out["points"] = len(points)
  out["speedup"] = round(out["separate_s"] / out["sweep_s"], 3)
  a, b = _tests(args.root / "sweep"), _tests(args.root / "separate")
  out["seeds_compared"] = len(set(a) & set(b))
  out["max_test_metric_diff"] = max(
    (abs(a[k][m] - b[k][m]) for k in set(a) & set(b) for m in a[k]), default=None
  )
  out["device"] = jax.devices()[0].device_kind
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
