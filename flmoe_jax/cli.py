"""The `flmoe` command line.

  flmoe train   --config configs/synthetic.py --workdir runs/x [--config.key=value ...] [--overwrite]
  flmoe synth   --out runs/stores/synthetic [--seed 0 --set setting=mixed ...]
  flmoe features --dataset mmimdb --raw DIR --out STORE   (frozen-encoder features; see docs/features.md)
  flmoe info    STORE                      (manifest, counts, checks every array)
  flmoe demo    [--workdir runs/demo]      (the whole pipeline on the embedded default)

User errors (bad store, bad config, bad flag) print one line `flmoe: error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from flmoe_jax.errors import FlmoeError


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # argparse's own errors: same one-line form, exit 2
    self.print_usage(sys.stderr)
    raise SystemExit(_fail(message))


def _fail(message: str) -> int:
  print(f"flmoe: error: {message}", file=sys.stderr)
  return 2


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.a.b=v` (or `--config.a.b v`) overrides from the other arguments."""
  rest, overrides = [], []
  it = iter(range(len(argv)))
  argv = list(argv)
  for i in it:
    a = argv[i]
    if a.startswith("--config."):
      if "=" in a:
        overrides.append(a[len("--config.") :])
      elif i + 1 < len(argv):
        overrides.append(f"{a[len('--config.') :]}={argv[i + 1]}")
        next(it, None)
      else:
        raise FlmoeError(f"override {a} has no value")
    else:
      rest.append(a)
  return rest, overrides


def _cmd_train(args, overrides) -> int:
  from flmoe_jax import config as config_lib

  cfg = config_lib.load_config(args.config, overrides)
  train_and_print(cfg, args.workdir, overwrite=args.overwrite)
  return 0


def train_and_print(cfg, workdir, *, overwrite=False):
  """Runs `train_and_evaluate` and prints the per-split mean/std of the headline metrics."""
  from flmoe_jax import train_lib

  summary = train_lib.train_and_evaluate(cfg, workdir, overwrite=overwrite)
  print(format_summary(summary))
  print(f"run directory: {workdir}")
  return summary


def format_summary(summary: dict) -> str:
  """A short human-readable table of a run summary."""
  lines = [
    f"{summary['name']} ({summary['model']}, {summary['task']}), seeds {list(summary['seeds'])}:"
  ]
  for part in ("best_val", "test"):
    ms = summary["mean_std"].get(part, {})
    keys = [k for k in ("accuracy", "macro_f1", "micro_f1", "auroc", "exact_match") if k in ms]
    cells = ", ".join(f"{k} {100 * ms[k]['mean']:.2f} +/- {100 * ms[k]['std']:.2f}" for k in keys)
    lines.append(f"  {part:8s} {cells}")
  return "\n".join(lines)


def _cmd_synth(args, overrides) -> int:
  del overrides
  from flmoe_jax.data import synthetic

  kwargs = {}
  for item in args.set or []:
    k, _, v = item.partition("=")
    try:
      kwargs[k] = json.loads(v)
    except json.JSONDecodeError:
      kwargs[k] = v
  try:
    cfg = synthetic.PlantedConfig(seed=args.seed, **kwargs)
  except TypeError as e:
    raise FlmoeError(f"bad generator option: {e}") from None
  path = synthetic.write_synthetic_store(cfg, args.out, overwrite=args.overwrite)
  gt = json.loads((path / "ground_truth.json").read_text())
  print(f"wrote {path} (Bayes-optimal accuracy {gt.get('bayes_optimal_accuracy')})")
  return 0


def _cmd_info(args, overrides) -> int:
  del overrides
  from flmoe_jax.data import store

  fs = store.open_store(args.store)
  for name in fs.split_names:
    fs.split(name)
    if args.check:
      fs.check_finite(name)
  print(json.dumps({k: v for k, v in fs.manifest.items()}, indent=1))
  print(
    f"{fs.path}: OK ({'all arrays checked for NaN/Inf' if args.check else 'shapes and dtypes'})"
  )
  return 0


def _cmd_demo(args, overrides) -> int:
  from flmoe_jax import demo

  demo.run(args.workdir, overrides=overrides, quick=args.quick)
  return 0


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(prog="flmoe", description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

  t = sub.add_parser("train", help="train FL-I2MoE or the dense baseline on a feature store")
  t.add_argument("--config", required=True, help="config file, optionally file.py:arg")
  t.add_argument("--workdir", required=True, help="run directory (resumes if it holds this run)")
  t.add_argument("--overwrite", action="store_true", help="replace a run of a different config")
  t.set_defaults(fn=_cmd_train)

  s = sub.add_parser("synth", help="write a synthetic planted-interaction feature store")
  s.add_argument("--out", required=True)
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--set", action="append", metavar="KEY=VALUE", help="a PlantedConfig field")
  s.add_argument("--overwrite", action="store_true")
  s.set_defaults(fn=_cmd_synth)

  i = sub.add_parser("info", help="validate a feature store and print its manifest")
  i.add_argument("store")
  i.add_argument("--check", action="store_true", help="also scan every array for NaN/Inf")
  i.set_defaults(fn=_cmd_info)

  from flmoe_jax.features.extract import add_cli as add_features_cli

  add_features_cli(sub)

  d = sub.add_parser("demo", help="the whole pipeline on the embedded default, no download")
  d.add_argument("--workdir", default="runs/demo")
  d.add_argument("--quick", action="store_true", help="fewer epochs and seeds (smoke run)")
  d.set_defaults(fn=_cmd_demo)
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of `flmoe` and `python -m flmoe_jax`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    rest, overrides = _split_overrides(argv)
    args = build_parser().parse_args(rest)
    if overrides and args.command not in ("train", "demo", "features"):
      raise FlmoeError(f"`flmoe {args.command}` takes no --config.* overrides")
    return args.fn(args, overrides)
  except FlmoeError as e:
    return _fail(str(e))
  except KeyboardInterrupt:
    return _fail("interrupted (a rerun with the same arguments resumes)")


if __name__ == "__main__":
  sys.exit(main())
