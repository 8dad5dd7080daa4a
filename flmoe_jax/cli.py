"""The `flmoe` command line.

  flmoe train   --config configs/synthetic.py --workdir runs/x [--config.key=value ...] [--overwrite]
  flmoe synth   --out runs/stores/synthetic [--seed 0 --set setting=mixed ...]
  flmoe features --dataset mmimdb --raw DIR --out STORE   (frozen-encoder features; see docs/features.md)
  flmoe info    STORE                      (manifest, counts, checks every array)
  flmoe explain --workdir W --split val [--baseline W_dense] [--method attnxgrad] [--ks 5,10,...]
                                           (expert-wise maps + top-K% faithfulness; docs/explain.md)
  flmoe explain --workdir W --split test [--baseline W_dense]   (attributions, faithfulness)
  flmoe probe   --workdir W --split test   (SII, redundancy gap, pair masking)
  flmoe report  --workdir W [--baseline W_dense] [--i2moe W_i2moe]   (Tables A/B/C, verdicts)
  flmoe baselines --workdir W [--split test] [--modality text]   (majority class, one modality alone:
                                           W/baselines/<split>.json, beside the models in Table A)
  flmoe sweep   --config C --grid key=v1,v2 [--grid ...] --seeds 0,1 --workdir W [--shard i/n]
                                           (a grid x seeds, each point a resumable run; W/sweep.*)
  flmoe demo    [--workdir runs/demo]      (the whole pipeline on the embedded default)
  flmoe convert --weights M.npz --encoders E.npz --store STORE --workdir W
                                           (the authors' PyTorch weights as a run directory)
  flmoe probe   --workdir W --split test [--samples N --budget R --pairs topk|random|all --k 8 --seed S]
                                           (SII / redundancy-gap probes and pair masking -> W/probe/)

User errors (bad store, bad config, bad flag) print one line `flmoe: error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from flmoe_jax.errors import FlmoeError


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    # argparse's own errors (a missing or unknown flag, a bad choice) in the same one-line form as
    # ours, exit 2; the usage block would bury the line, so point at --help instead.
    raise SystemExit(_fail(f"{message} (see '{self.prog} --help')"))


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
  # A store path named on the command line must hold a store: a typo never becomes a new store.
  named = any(o.partition("=")[0].strip() == "store" for o in overrides)
  from flmoe_jax import train

  summary = train.train_and_evaluate(
    cfg, args.workdir, overwrite=args.overwrite, build_store=not named
  )
  print(train.format_summary(summary))
  print(f"run directory: {args.workdir}")
  return 0


def _cmd_synth(args, overrides) -> int:
  del overrides
  from flmoe_jax.data import synthetic

  fields = [f.name for f in dataclasses.fields(synthetic.PlantedConfig) if f.name != "seed"]
  kwargs = {}
  for item in args.set or []:
    k, eq, v = item.partition("=")
    k = k.strip()
    if not eq or not k:
      raise FlmoeError(f"--set takes KEY=VALUE (e.g. --set dim=16), got {item!r}")
    if k not in fields:
      hint = " (use --seed)" if k == "seed" else ""
      raise FlmoeError(f"--set {k}: no such generator option{hint}; valid: {', '.join(fields)}")
    try:
      kwargs[k] = json.loads(v)  # numbers, true/false; anything else stays a string
    except json.JSONDecodeError:
      kwargs[k] = v
  try:
    cfg = synthetic.PlantedConfig(seed=args.seed, **kwargs)
  except ValueError as e:
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
    if fs.split(name).num_examples == 0:
      # Training, explain and probe all need rows in every split (validation picks the checkpoint).
      raise store.StoreError(
        f"{fs.path}: split {name!r} has 0 examples; every split needs at least one (rebuild the "
        "store with examples in it)"
      )
    if args.check:
      fs.check_finite(name)
  print(json.dumps({k: v for k, v in fs.manifest.items()}, indent=1))
  print(
    f"{fs.path}: OK ({'all arrays checked for NaN/Inf' if args.check else 'shapes and dtypes'})"
  )
  return 0


def _cmd_explain(args, overrides) -> int:
  del overrides
  from flmoe_jax.explain import pipeline
  from flmoe_jax.explain.config import ExplainConfig
  from flmoe_jax.options import from_args

  report = pipeline.run_explain(from_args(ExplainConfig, args), args.workdir)
  print(pipeline.format_report(report))
  return 0


def _cmd_report(args, overrides) -> int:
  del overrides
  import pathlib

  from flmoe_jax.report import ReportEntry, build_report
  from flmoe_jax.rundir import RunDir

  wd = pathlib.Path(args.workdir)
  out = build_report(
    [
      ReportEntry(
        args.name or wd.name,
        wd,
        pathlib.Path(args.baseline) if args.baseline else None,
        args.split,
        i2moe_workdir=pathlib.Path(args.i2moe) if args.i2moe else None,
      )
    ],
    args.out or RunDir(wd).report_dir,
    title=f"FL-I2MoE report: {args.name or wd.name}",
  )
  for v in out["verdicts"]:
    print(v)
  print(f"report: {out['html']}  (Markdown: {out['md']})")
  return 0


def _cmd_baselines(args, overrides) -> int:
  del overrides
  from flmoe_jax import baselines

  doc = baselines.run(args.workdir, args.split, modality=args.modality)
  for name, summary in doc["models"].items():
    m = summary["mean_std"][args.split]
    print(
      f"{name:32s} "
      + ", ".join(f"{k} {100 * v['mean']:.2f}" for k, v in m.items() if k != "num_examples")
    )
  print(f"wrote {args.workdir}/baselines/{args.split}.json")
  return 0


def _cmd_convert(args, overrides) -> int:
  del overrides
  from flmoe_jax.convert_run import ConvertConfig, run_convert
  from flmoe_jax.options import from_args

  summary = run_convert(from_args(ConvertConfig, args), args.workdir)
  from flmoe_jax.train import format_summary

  print(format_summary(summary))
  print(f"run directory: {args.workdir} (flmoe explain / probe / report take it as --workdir)")
  return 0


def _cmd_features(args, overrides) -> int:
  from flmoe_jax.features.extract import cli_features

  return cli_features(args, overrides)


def _cmd_sweep(args, overrides) -> int:
  from flmoe_jax import sweep
  from flmoe_jax.options import from_args

  cfg = from_args(sweep.SweepConfig, args, overrides=tuple(overrides))
  rows = sweep.run_sweep(cfg, args.workdir)
  print(
    f"sweep: {len(rows)} points finished; table: {args.workdir}/sweep.md (and .csv, .html, .jsonl)"
  )
  return 0


def _cmd_demo(args, overrides) -> int:
  from flmoe_jax import demo

  demo.run(args.workdir, overrides=overrides, quick=args.quick)
  return 0


def _cmd_probe(args, overrides) -> int:
  del overrides
  from flmoe_jax.options import from_args
  from flmoe_jax.probes.config import ProbeConfig
  from flmoe_jax.probes.pipeline import run_probe
  from flmoe_jax.probes.standout import describe as describe_standouts

  report = run_probe(from_args(ProbeConfig, args), args.workdir)
  pm = report.pair_masking
  for name in ("SII", "RG"):
    d = pm.index(name)
    cells = ", ".join(
      f"b={b}: {r:.3f} vs {q:.3f} (p {p:.2g})"
      for b, r, q, p in zip(pm.budgets, d.ranked.prob_drop, d.random.prob_drop, d.random.p_holm)
    )
    print(
      f"{name}-ranked vs random pair masking (prob drop; random tokens of the candidates; "
      f"paired t-test over {pm.n} examples, Holm): {cells}"
    )
  settings = report.settings
  for name, p in (report.planted or {}).get("pairs", {}).items():
    scale = settings.rank_score("SII" if p["kind"] == "synergy" else "RG")
    ct = p.get("cross_talk")
    cross = (
      f"; cross-talk, first by {ct['probe']}: {ct['hit@1']:.3f}, |.| {ct['abs_hit@1']:.3f}, "
      f"called {ct['called@1']:.3f}"
      if ct and ct["n"]
      else ""
    )
    print(
      f"planted {name} ({p['probe']}, {scale}): hit@1 {p[scale]['hit@1']:.3f}, "
      f"|.| hit@1 {p[scale]['abs_hit@1']:.3f}, called (log-odds >= "
      f"{settings.min_effect:g}) {p['logodds']['called@1']:.3f}{cross}"
    )
  for role, e in (report.evidence or {}).items():
    if role == "rule" or not e.get("n"):
      continue
    print(
      f"evidence: top pair of {e['index']} on {e['expert']} joins an evidence token and patch in "
      f"{e['hits']}/{e['n']} examples ({100 * e['top_pair_rate']:.0f}%; chance "
      f"{100 * e['chance_candidates']:.1f}% among the candidates, "
      f"{100 * e['chance_all_pairs']:.1f}% among all pairs; z {e['z']:.2f}, p {e['p_value']:.2g})"
    )
  mods = report.settings.modalities
  for name, blk in report.standout.items():
    ds = blk.dataset
    signed = describe_standouts(blk.dataset_signed, mods)
    called = describe_standouts(blk.dataset_called, mods) if blk.dataset_called else "-"
    print(
      f"{name} pairs standing out across {ds.n_examples} examples (first in > "
      f"{100 * ds.min_rate:.0f}%): {describe_standouts(ds, mods)}; by sign "
      f"(most positive first): {signed}; called (log-odds >= "
      f"{report.settings.min_effect:g}): {called}"
    )
  return 0


def build_parser() -> argparse.ArgumentParser:
  from flmoe_jax.convert_run import ConvertConfig
  from flmoe_jax.explain.config import ExplainConfig
  from flmoe_jax.options import add_arguments
  from flmoe_jax.probes.config import ProbeConfig

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

  e = sub.add_parser("explain", help="expert-wise attributions and top-K%% masking faithfulness")
  e.add_argument("--workdir", required=True, help="trained run directory (FL-I2MoE or dense)")
  add_arguments(e, ExplainConfig)
  e.set_defaults(fn=_cmd_explain)

  from flmoe_jax.features.config import add_cli as add_features_cli

  add_features_cli(sub).set_defaults(fn=_cmd_features)

  r = sub.add_parser(
    "report", help="Tables A/B/C and C1/C2 verdicts of a run, as HTML and Markdown"
  )
  r.add_argument("--workdir", required=True, help="the FL-I2MoE run directory")
  r.add_argument("--baseline", default=None, help="the dense-transformer run directory")
  r.add_argument(
    "--i2moe", default=None, help="the original I2MoE's run directory (model.kind=i2moe; Table A)"
  )
  r.add_argument("--split", default="test", help="the split explain/probe ran on")
  r.add_argument("--name", default=None, help="dataset name shown in the report")
  r.add_argument("--out", default=None, help="output folder (default WORKDIR/report)")
  r.set_defaults(fn=_cmd_report)

  b = sub.add_parser(
    "baselines", help="Table A's reference points of a run's store: majority class, one modality"
  )
  b.add_argument("--workdir", required=True, help="a run directory (its store is scored)")
  b.add_argument("--split", default="test", help="the split to score")
  b.add_argument(
    "--modality", default=None, help="the one-modality baseline's modality (default: the first)"
  )
  b.set_defaults(fn=_cmd_baselines)

  cv = sub.add_parser(
    "convert", help="reference PyTorch weights -> a run directory explain/probe/report use"
  )
  cv.add_argument("--workdir", required=True, help="the run directory to create (must not exist)")
  add_arguments(cv, ConvertConfig)
  cv.set_defaults(fn=_cmd_convert)

  from flmoe_jax.sweep import SweepConfig

  sw = sub.add_parser(
    "sweep", help="train a grid of configs x seeds (resumable), one results table"
  )
  sw.add_argument("--workdir", required=True, help="the sweep's folder (one run per grid point)")
  add_arguments(sw, SweepConfig)
  sw.set_defaults(fn=_cmd_sweep)

  d = sub.add_parser("demo", help="the whole pipeline on the embedded default, no download")
  d.add_argument("--workdir", default="runs/demo")
  d.add_argument("--quick", action="store_true", help="fewer epochs and seeds (smoke run)")
  d.set_defaults(fn=_cmd_demo)

  pr = sub.add_parser("probe", help="SII / redundancy-gap probes and pair masking of a trained run")
  pr.add_argument("--workdir", required=True, help="the run directory")
  add_arguments(pr, ProbeConfig)
  pr.set_defaults(fn=_cmd_probe)
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of `flmoe` and `python -m flmoe_jax`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    rest, overrides = _split_overrides(argv)
    args, unknown = build_parser().parse_known_args(rest)
    # argparse would blame the top-level parser for these; the subcommand's --help is the useful one.
    if unknown:
      raise SystemExit(
        _fail(f"unrecognized arguments: {' '.join(unknown)} (see 'flmoe {args.command} --help')")
      )
    if overrides and args.command not in ("train", "demo", "features", "sweep"):
      raise FlmoeError(f"`flmoe {args.command}` takes no --config.* overrides")
    return args.fn(args, overrides)
  except FlmoeError as e:
    return _fail(str(e))
  except KeyboardInterrupt:
    return _fail("interrupted (a rerun with the same arguments resumes)")


if __name__ == "__main__":
  sys.exit(main())
