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
  flmoe demo    [--workdir runs/demo]      (the whole pipeline on the embedded default)
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
  train_and_print(cfg, args.workdir, overwrite=args.overwrite, build_store=not named)
  return 0


def train_and_print(cfg, workdir, *, overwrite=False, build_store=True):
  """Runs `train_and_evaluate` and prints the per-split mean/std of the headline metrics."""
  from flmoe_jax import train_lib

  summary = train_lib.train_and_evaluate(cfg, workdir, overwrite=overwrite, build_store=build_store)
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

  if args.steps_per_call < 0:
    raise FlmoeError(f"--steps-per-call must be >= 0 (0 = all at once), got {args.steps_per_call}")
  steps = None if args.steps_per_call == 0 else args.steps_per_call
  report = pipeline.run_explain(
    args.workdir,
    args.split,
    baseline=args.baseline,
    method=args.method,
    ks=args.ks,
    fill=args.fill,
    target=args.target,
    samples=args.samples,
    seeds=args.seeds,
    batch_size=args.batch_size,
    steps_per_call=steps,
    repeats=args.repeats,
    random_seed=args.random_seed,
    ig_steps=args.ig_steps,
    ig_baseline=args.ig_baseline,
    figures=not args.no_figures,
  )
  print(pipeline.format_report(report))
  return 0


def _cmd_report(args, overrides) -> int:
  del overrides
  import pathlib

  from flmoe_jax.report import ReportEntry, build_report

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
    args.out or wd / "report",
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


def _cmd_demo(args, overrides) -> int:
  from flmoe_jax import demo

  demo.run(args.workdir, overrides=overrides, quick=args.quick)
  return 0


def _cmd_probe(args, overrides) -> int:
  del overrides
  from flmoe_jax.probes.pipeline import run_probe
  from flmoe_jax.probes.standout import describe as describe_standouts

  try:
    budgets = [int(b) for b in args.mask_budgets.split(",") if b.strip()]
  except ValueError:
    raise FlmoeError(
      "--mask-budgets must be comma-separated pair counts (e.g. 1,2,5,10), got "
      f"{args.mask_budgets!r}"
    ) from None
  report = run_probe(
    args.workdir,
    args.split,
    samples=args.samples,
    budget=args.budget,
    draws=args.draws,
    pairs=args.pairs,
    k=args.k,
    n_random_pairs=args.n_random_pairs,
    seed=args.seed,
    antithetic=not args.no_antithetic,
    max_coalitions_per_call=args.max_coalitions_per_call,
    fill=args.fill,
    sii_fill=args.sii_fill,
    rg_fill=args.rg_fill,
    references=args.references,
    target_source=args.target,
    run_seed=args.run_seed,
    which=args.which,
    mask_budgets=budgets,
    mask_repeats=args.repeats,
    sii_rank_score=args.sii_rank_score,
    rg_rank_score=args.rg_rank_score,
    figures=not args.no_figures,
    sii_expert=args.sii_expert,
    rg_expert=args.rg_expert,
    tag=args.tag,
    stability=args.stability,
    attribution=args.attribution,
    attention=args.attention,
    # None keeps run_probe's default (standout.DEFAULT_MIN_RATE; not imported here to keep --help fast).
    **({} if args.standout_min_rate is None else {"standout_min_rate": args.standout_min_rate}),
    **({} if args.min_effect is None else {"min_effect": args.min_effect}),
  )
  pm = report["pair_masking"]
  for name in ("SII", "RG"):
    d = pm[name]
    cells = ", ".join(
      f"b={b}: {r:.3f} vs {q:.3f} (p {p:.2g})"
      for b, r, q, p in zip(
        pm["budgets"], d["ranked"]["prob_drop"], d["random"]["prob_drop"], d["random"]["p_holm"]
      )
    )
    print(
      f"{name}-ranked vs random pair masking (prob drop; random tokens of the candidates; "
      f"paired t-test over {pm['n']} examples, Holm): {cells}"
    )
  settings = report["settings"]
  for name, p in report.get("planted", {}).get("pairs", {}).items():
    scale = settings["sii_rank_score" if p["kind"] == "synergy" else "rg_rank_score"]
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
      f"{settings['min_effect']:g}) {p['logodds']['called@1']:.3f}{cross}"
    )
  for role, e in (report.get("evidence") or {}).items():
    if role == "rule" or not e.get("n"):
      continue
    print(
      f"evidence: top pair of {e['index']} on {e['expert']} joins an evidence token and patch in "
      f"{e['hits']}/{e['n']} examples ({100 * e['top_pair_rate']:.0f}%; chance "
      f"{100 * e['chance_candidates']:.1f}% among the candidates, "
      f"{100 * e['chance_all_pairs']:.1f}% among all pairs; z {e['z']:.2f}, p {e['p_value']:.2g})"
    )
  mods = report["settings"]["modalities"]
  for name, blk in report["standout"].items():
    ds = blk["dataset"]
    signed = describe_standouts(blk["dataset_signed"], mods) if "dataset_signed" in blk else "-"
    called = describe_standouts(blk["dataset_called"], mods) if "dataset_called" in blk else "-"
    print(
      f"{name} pairs standing out across {ds['n_examples']} examples (first in > "
      f"{100 * ds['min_rate']:.0f}%): {describe_standouts(ds, mods)}; by sign "
      f"(most positive first): {signed}; called (log-odds >= "
      f"{report['settings']['min_effect']:g}): {called}"
    )
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

  e = sub.add_parser("explain", help="expert-wise attributions and top-K%% masking faithfulness")
  e.add_argument("--workdir", required=True, help="trained run directory (FL-I2MoE or dense)")
  e.add_argument("--split", default="val", help="store split to explain (default: val)")
  e.add_argument("--baseline", default=None, help="dense-transformer run on the same store")
  e.add_argument("--method", default="attnxgrad", choices=("attnxgrad", "attn", "ig"))
  e.add_argument("--ks", default="5,10,15,20,25", help="budgets K in percent, each in (0, 100]")
  e.add_argument("--fill", default="mean", choices=("mean", "zero"))
  e.add_argument("--target", default="pred", choices=("pred", "true"))
  e.add_argument("--samples", type=int, default=None, help="first N samples only (default: all)")
  e.add_argument("--seeds", default="all", help="'all' or comma-separated seeds")
  e.add_argument("--batch-size", type=int, default=32)
  e.add_argument(
    "--steps-per-call",
    type=int,
    default=16,
    help="memory knob: masked variants / IG steps per model call (0 = all at once)",
  )
  e.add_argument("--repeats", type=int, default=10, help="random-control repeats")
  e.add_argument("--random-seed", type=int, default=42, help="seed of the random control")
  e.add_argument("--ig-steps", type=int, default=16)
  e.add_argument("--ig-baseline", default="zero", choices=("zero", "mean"))
  e.add_argument("--no-figures", action="store_true", help="write the JSON only")
  e.set_defaults(fn=_cmd_explain)

  from flmoe_jax.features.extract import add_cli as add_features_cli

  add_features_cli(sub)

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

  d = sub.add_parser("demo", help="the whole pipeline on the embedded default, no download")
  d.add_argument("--workdir", default="runs/demo")
  d.add_argument("--quick", action="store_true", help="fewer epochs and seeds (smoke run)")
  d.set_defaults(fn=_cmd_demo)

  pr = sub.add_parser("probe", help="SII / redundancy-gap probes and pair masking of a trained run")
  pr.add_argument("--workdir", required=True, help="the run directory")
  pr.add_argument("--split", default="test")
  pr.add_argument(
    "--samples",
    type=int,
    default=None,
    help="examples: the first rows of the split (default 200, or the whole split when smaller)",
  )
  pr.add_argument(
    "--budget",
    type=int,
    default=None,
    help="coalition evaluations per example and expert (default: draws x 4 x pairs)",
  )
  pr.add_argument("--draws", type=int, default=64, help="draws per pair when --budget is not set")
  pr.add_argument("--pairs", choices=("topk", "random", "all"), default="topk")
  pr.add_argument("--k", type=int, default=8, help="tokens per modality for --pairs topk")
  pr.add_argument(
    "--attribution",
    choices=("attnxgrad", "attn", "ig", "grad_x_input"),
    default="attnxgrad",
    help="map that pre-selects the topk tokens",
  )
  pr.add_argument(
    "--n-random-pairs", type=int, default=64, help="pairs per example, --pairs random"
  )
  pr.add_argument("--seed", type=int, default=0)
  pr.add_argument("--no-antithetic", action="store_true", help="plain (not antithetic) MC draws")
  pr.add_argument(
    "--max-coalitions-per-call",
    type=int,
    default=4096,
    help="memory knob: most coalitions per model call, across a batch of examples",
  )
  fills = (
    "mean",
    "zero",
    "marginal",
  )  # probes.pipeline.PROBE_FILLS (not imported: jax-free parser)
  pr.add_argument(
    "--fill",
    choices=fills,
    default="mean",
    help="what 'absent' means in the SII and RG games: the mean (or zero) fill, or marginal: the "
    "tokens of --references random train examples, the value averaged over them",
  )
  pr.add_argument("--sii-fill", choices=fills, help="the SII game's fill alone")
  pr.add_argument("--rg-fill", choices=fills, help="the RG game's fill alone")
  pr.add_argument(
    "--references", type=int, default=8, help="reference examples of the marginal fill (default 8)"
  )
  pr.add_argument("--target", choices=("pred", "true"), default="pred")
  pr.add_argument("--run-seed", type=int, default=None, help="training seed (default: first)")
  pr.add_argument("--which", choices=("best", "latest"), default="best")
  pr.add_argument("--mask-budgets", default="1,2,5,10", help="comma-separated pair budgets")
  pr.add_argument("--repeats", type=int, default=10, help="random-control repeats")
  pr.add_argument(
    "--sii-expert", default=None, help="game of the SII probe (default syn; or mixture)"
  )
  pr.add_argument(
    "--rg-expert", default=None, help="game of the RG probe (default red; or mixture)"
  )
  for index in ("sii", "rg"):
    pr.add_argument(
      f"--{index}-rank-score",
      choices=("logodds", "logprob", "logit", "prob"),
      default="logodds",
      help=f"scale that ranks {index.upper()} pairs for pair masking and the standout tests "
      "(default logodds: the target's log-odds, shift-invariant and unrounded)",
    )
  pr.add_argument("--no-figures", action="store_true")
  pr.add_argument(
    "--standout-min-rate",
    type=float,
    default=None,
    help="across examples, a pair stands out when it ranks first in significantly more than this "
    "share of them (default 0.1)",
  )
  pr.add_argument(
    "--min-effect",
    type=float,
    default=None,
    help="smallest score, on the target's log-odds scale (nats), with which an example's first "
    "pair is called (the called@1 rates, cross-talk, 'called' standouts; default 0.25)",
  )
  pr.add_argument(
    "--attention",
    choices=("einsum", "xla", "cudnn"),
    default=None,
    help="experts' attention for the probe: explicit einsum, or fused jax.nn.dot_product_attention "
    "(xla, or cudnn: GPU flash attention, bf16 runs); default: the run's model.attention",
  )
  pr.add_argument("--tag", default="", help="write W/probe/<split>_<tag>.json instead")
  pr.add_argument(
    "--stability",
    action="store_true",
    help="also probe with another MC seed and another training seed, and record how much the pair "
    "rankings agree (Kendall tau, top-k overlap; 2-3x the cost)",
  )
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
    if overrides and args.command not in ("train", "demo", "features"):
      raise FlmoeError(f"`flmoe {args.command}` takes no --config.* overrides")
    return args.fn(args, overrides)
  except FlmoeError as e:
    return _fail(str(e))
  except KeyboardInterrupt:
    return _fail("interrupted (a rerun with the same arguments resumes)")


if __name__ == "__main__":
  sys.exit(main())
