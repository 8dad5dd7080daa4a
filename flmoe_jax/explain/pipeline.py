"""`flmoe explain`: expert-wise explanations of a trained run, optionally against a dense baseline.

For every seed of the run (and of the baseline), over a split of its feature store:

  1. attribution maps per expert and for the mixture (the baseline: its single map);
  2. top-K% masking faithfulness of every map, on its own output and on the mixture
     (comp / suff / random control / AOPC / gaps, Table B);
  3. concentration (entropy, Gini, top-K% mass, modality mass share) and specificity (cross-expert
     top-K% Jaccard and cosine; baseline map vs each expert map and the mixture map: claim C1);
  4. on synthetic stores, how often the planted positions fall in each map's top-K%; on stores with a
     label-free evidence rule (easy-vqa: the shape's patches, the attribute words), the share of each
     map's mass and of its top-K% positions on the evidence (`flmoe_jax.data.evidence`).

Seeds are aggregated as mean and std (ddof=1) of the per-seed numbers. The report is written to
`W/explain/<split>.json` (typed, versioned: `results.ExplainReport`) with PNG figures beside it.
Nothing else in the run directory is touched.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flmoe_jax import config as config_lib
from flmoe_jax import runs
from flmoe_jax.errors import RunDirError
from flmoe_jax.explain import attribution as attr_lib
from flmoe_jax.explain import concentration
from flmoe_jax.explain import topk_faithfulness as faith_lib
from flmoe_jax.explain.attribution import ExplainError
from flmoe_jax.explain.config import ExplainConfig
from flmoe_jax.explain.results import (
  EvidenceHits,
  ExplainReport,
  ExplainSettings,
  FaithCurve,
  MapStats,
  MeanStd,
  ModelReport,
  PairStats,
  PlantedHits,
)
from flmoe_jax.rundir import RunDir

BASELINE_PREFIX = "baseline:"


# --------------------------------------------------------------------------------------------------
# Argument resolution.
# --------------------------------------------------------------------------------------------------


def resolve_seeds(workdir, seeds: str | Sequence[int] = "all") -> list[int]:
  """`all` (every finished seed) or explicit seeds, each of which must have finished training."""
  done = runs.finished_seeds(workdir)
  if not done:
    raise RunDirError(f"{workdir} holds no finished seed (no seed_*/result.json); train it first")
  if isinstance(seeds, str):
    if seeds.strip() == "all":
      return done
    try:
      seeds = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
      raise ExplainError(
        f"--seeds must be 'all' or comma-separated integers, got {seeds!r}"
      ) from None
  seeds = [int(s) for s in seeds]
  missing = [s for s in seeds if s not in done]
  if missing:
    raise RunDirError(
      f"{workdir}: seed(s) {missing} have no finished checkpoint (finished: {done})"
    )
  if not seeds:
    raise ExplainError("no seeds selected")
  return seeds


def check_same_store(a, b, split: str) -> None:
  """Refuses to compare runs trained on different feature stores.

  The same folder passes; a different folder passes only if it holds the same features as far as
  cheaply checkable: equal manifests, equal train-split means and equal sample ids of `split`.
  """
  pa, pb = a.path.resolve(), b.path.resolve()
  if pa == pb:
    return
  same = (
    a.manifest == b.manifest
    and all(np.array_equal(x, y) for x, y in zip(a.means(), b.means(), strict=True))
    and split in b.counts
    and a.split(split).ids == b.split(split).ids
  )
  if not same:
    raise ExplainError(
      f"the run and the baseline were trained on different feature stores ({pa} vs {pb}); "
      "a comparison needs the same features"
    )


# --------------------------------------------------------------------------------------------------
# Per-model accumulation over batches.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _SeedAcc:
  """Per-sample results of one model and seed, collected over batches (host numpy)."""

  faith: list = dataclasses.field(default_factory=list)
  stats: list = dataclasses.field(default_factory=list)
  pairs: list = dataclasses.field(default_factory=list)
  cross: list = dataclasses.field(default_factory=list)
  weights: list = dataclasses.field(default_factory=list)
  planted: list = dataclasses.field(default_factory=list)
  chance: list = dataclasses.field(default_factory=list)
  evidence: list = dataclasses.field(default_factory=list)

  @staticmethod
  def _mean(chunks):
    return np.concatenate(chunks).mean(0) if chunks else None


def _views_for(model) -> list[int | str]:
  # A single-expert model's mixture is that expert: one view, named after it.
  if model.num_experts == 1:
    return [0]
  return list(range(model.num_experts)) + [attr_lib.MIXTURE]


def _planted_positions(store) -> list[tuple[str, str, int, int]]:
  """(mechanism, kind, modality index, position) of every planted write and distractor."""
  gt = store.ground_truth()
  if not gt:
    return []
  names = list(store.modality_names)
  out = []
  for m in gt.get("mechanisms", []):
    for mi, mod in enumerate(names):
      if f"{mod}_pos" in m:
        out.append((m["name"], m["kind"], mi, int(m[f"{mod}_pos"])))
  for mod, items in (gt.get("distractors") or {}).items():
    if mod in names:
      for i, d in enumerate(items):
        out.append((f"distractor_{mod}_{i}", "distractor", names.index(mod), int(d["pos"])))
  return out


def _planted_hits(attr, positions, ks) -> tuple[np.ndarray, np.ndarray]:
  """hits [B, V, P, nK] (planted position in the view's top-K%), chance [B, P, nK] (m / n)."""
  sel, chance = {}, {}
  for mi in sorted({p[2] for p in positions}):
    cand = np.asarray(attr.candidates[mi])
    n = cand.sum(-1)
    sel[mi] = np.stack(
      [
        np.asarray(faith_lib.topk_mask(attr.maps[mi], attr.candidates[mi][:, None, :], k))
        for k in ks
      ],
      axis=-1,
    )  # [B, V, T, nK]
    m = np.stack([np.asarray(faith_lib.budget(jnp.asarray(n), k)) for k in ks], -1)  # [B, nK]
    chance[mi] = (cand[..., None], m / np.maximum(n, 1)[:, None])
  hits = np.stack([sel[mi][:, :, pos] for _, _, mi, pos in positions], axis=2)
  ch = np.stack(
    [np.where(chance[mi][0][:, pos], chance[mi][1], 0.0) for _, _, mi, pos in positions], axis=1
  )
  return hits, ch


def _evidence_scores(attr, masks: list[np.ndarray], ks) -> np.ndarray:
  """Per sample, view and modality: [mass share, top-K% precision per K, evidence share].

  Args:
    attr: the batch's attribution (maps [B, V, T_m], candidates [B, T_m] per modality).
    masks: per modality, bool [B, T_m] evidence positions.
    ks: budgets K in percent.

  Returns:
    float [B, V, M, 2 + nK]; NaN where a sample has no evidence position among its candidates.
  """
  out = []
  for mi, ev in enumerate(masks):
    cand = np.asarray(attr.candidates[mi], bool)
    ev = ev & cand
    mass = np.abs(np.asarray(attr.maps[mi], np.float64)) * cand[:, None, :]
    share = (mass * ev[:, None, :]).sum(-1) / np.maximum(mass.sum(-1), 1e-30)  # [B, V]
    prec = []
    for k in ks:
      top = np.asarray(faith_lib.topk_mask(attr.maps[mi], attr.candidates[mi][:, None, :], k))
      prec.append((top & ev[:, None, :]).sum(-1) / np.maximum(top.sum(-1), 1))  # [B, V]
    chance = np.broadcast_to((ev.sum(-1) / np.maximum(cand.sum(-1), 1))[:, None], share.shape)
    s = np.stack([share, *prec, chance], -1)
    out.append(np.where(ev.any(-1)[:, None, None], s, np.nan))
  return np.stack(out, 2)


def _explain_batch(run, batch, key, settings, positions, acc: _SeedAcc, evidence=None):
  """Attribution, faithfulness and statistics of one batch; returns the attribution."""
  model, store = run.model, run.store
  attr = attr_lib.attribute(
    model,
    batch,
    method=settings.method,
    expert=_views_for(model),
    target=settings.target,
    kinds=store,
    task_type=store.task.type,
    steps_per_call=settings.steps_per_call,
    ig_steps=settings.ig_steps,
    ig_baseline=settings.ig_baseline,
    means=store.means(),
  )
  res = faith_lib.faithfulness(
    model,
    batch,
    attr,
    key=key,
    means=store.means(),
    options=faith_lib.MaskingOptions(
      ks=settings.ks,
      fill=settings.fill,
      repeats=settings.repeats,
      steps_per_call=settings.steps_per_call,
    ),
    task_type=store.task.type,
  )
  valid = np.asarray(batch["weight"]) > 0
  acc.faith.append(res)
  stats = jax.device_get(concentration.map_statistics(attr, settings.ks))
  acc.stats.append({k: np.asarray(v)[valid] for k, v in stats.items()})
  experts = [i for i, e in enumerate(attr.view_experts) if e >= 0]
  if len(experts) > 1:
    pairs = jax.device_get(concentration.compare_maps(attr, attr, settings.ks))
    acc.pairs.append({k: np.asarray(v)[valid] for k, v in pairs.items()})
  acc.weights.append(np.asarray(attr.weights)[valid])
  if positions:
    hits, chance = _planted_hits(attr, positions, settings.ks)
    acc.planted.append(hits[valid])
    acc.chance.append(chance[valid])
  if evidence is not None:
    masks = evidence.masks(np.asarray(batch["index"]))
    scores = _evidence_scores(attr, [masks[m] for m in store.modality_names], settings.ks)
    acc.evidence.append(scores[valid])
  return attr


# --------------------------------------------------------------------------------------------------
# Aggregation into the typed report.
# --------------------------------------------------------------------------------------------------


def _faith_curves(summaries: list[dict], views: Sequence[str], ks) -> tuple[FaithCurve, ...]:
  curves = []
  for view in views:
    for out in faith_lib.OUTPUTS:
      per = [s[view][out] for s in summaries]

      def per_k(name, per=per):
        return tuple(MeanStd.of([p[name][i] for p in per]) for i in range(len(ks)))

      curves.append(
        FaithCurve(
          view=view,
          output=out,
          ks=tuple(ks),
          comp=per_k("comp"),
          comp_random=per_k("comp_random"),
          suff=per_k("suff"),
          suff_random=per_k("suff_random"),
          comp_gap=per_k("comp_gap"),
          suff_gap=per_k("suff_gap"),
          aopc={n: MeanStd.of([p["aopc"][n] for p in per]) for n in per[0]["aopc"]},
          aopc_trapezoid={
            n: MeanStd.of([p["aopc_trapezoid"][n] for p in per]) for n in per[0]["aopc_trapezoid"]
          },
        )
      )
  return tuple(curves)


def _model_report(runs_, accs: list[_SeedAcc], views, modality_names, ks, positions) -> ModelReport:
  run0 = runs_[0]
  summaries = [faith_lib.FaithfulnessResult.concat(a.faith).summary() for a in accs]
  stats = [{k: np.concatenate([s[k] for s in a.stats]).mean(0) for k in a.stats[0]} for a in accs]
  conc = []
  for vi, view in enumerate(views):
    for mi, mod in enumerate(modality_names):
      conc.append(
        MapStats(
          view=view,
          modality=mod,
          entropy=MeanStd.of([s["entropy"][vi, mi] for s in stats]),
          gini=MeanStd.of([s["gini"][vi, mi] for s in stats]),
          top_mass=tuple(
            MeanStd.of([s["top_mass"][vi, mi, ki] for s in stats]) for ki in range(len(ks))
          ),
          mass_share=MeanStd.of([s["mass_share"][vi, mi] for s in stats]),
          entropy_raw=MeanStd.of([s["entropy_raw"][vi, mi] for s in stats]),
          gini_raw=MeanStd.of([s["gini_raw"][vi, mi] for s in stats]),
        )
      )
  spec = []
  if accs[0].pairs:
    pairs = [{k: np.concatenate([p[k] for p in a.pairs]).mean(0) for k in a.pairs[0]} for a in accs]
    experts = [i for i, v in enumerate(views) if v != attr_lib.MIXTURE]
    for ii, i in enumerate(experts):
      for j in experts[ii + 1 :]:
        for mi, mod in enumerate(modality_names):
          spec.append(
            PairStats(
              a=views[i],
              b=views[j],
              modality=mod,
              jaccard=tuple(
                MeanStd.of([p["jaccard"][i, j, mi, ki] for p in pairs]) for ki in range(len(ks))
              ),
              cosine=MeanStd.of([p["cosine"][i, j, mi] for p in pairs]),
            )
          )
  weights = [np.concatenate(a.weights).mean(0) for a in accs]
  planted = []
  if positions and accs[0].planted:
    hits = [np.concatenate(a.planted).mean(0) for a in accs]  # [V, P, nK]
    chance = np.concatenate(accs[0].chance).mean(0)  # [P, nK]
    for pi, (mech, kind, mi, pos) in enumerate(positions):
      for vi, view in enumerate(views):
        planted.append(
          PlantedHits(
            mechanism=mech,
            kind=kind,
            modality=modality_names[mi],
            position=pos,
            view=view,
            hit_rate=tuple(MeanStd.of([h[vi, pi, ki] for h in hits]) for ki in range(len(ks))),
            chance=tuple(float(c) for c in chance[pi]),
          )
        )
  evidence = []
  if accs[0].evidence:
    scores = [np.concatenate(a.evidence) for a in accs]  # [N, V, M, 2 + nK] per seed
    for vi, view in enumerate(views):
      for mi, mod in enumerate(modality_names):
        per = [np.nanmean(s[:, vi, mi], 0) for s in scores]  # [2 + nK] per seed
        evidence.append(
          EvidenceHits(
            view=view,
            modality=mod,
            mass_share=MeanStd.of([p[0] for p in per]),
            precision=tuple(MeanStd.of([p[1 + ki] for p in per]) for ki in range(len(ks))),
            chance=float(np.mean([p[-1] for p in per])),
            num_examples=int(np.isfinite(scores[0][:, vi, mi, 0]).sum()),
          )
        )
  return ModelReport(
    workdir=str(run0.workdir),
    name=str(run0.config.name),
    kind=str(run0.config.model.kind),
    seeds=tuple(r.seed for r in runs_),
    expert_names=tuple(run0.model.expert_names),
    num_examples=sum(r.num_examples for r in accs[0].faith),
    faithfulness=_faith_curves(summaries, views, ks),
    concentration=tuple(conc),
    specificity=tuple(spec),
    expert_weights=tuple(
      MeanStd.of([w[e] for w in weights]) for e in range(len(run0.model.expert_names))
    ),
    planted=tuple(planted),
    evidence=tuple(evidence),
    config=json.loads(config_lib.config_to_json(run0.config)),
  )


def _comparison(cross: list[list[dict]], base_views, views, modality_names, ks):
  """Baseline map(s) vs every view of the run, per modality, over seed pairs."""
  means = [{k: np.concatenate([c[k] for c in pair]).mean(0) for k in pair[0]} for pair in cross]
  out = []
  for bi, bv in enumerate(base_views):
    for vi, view in enumerate(views):
      for mi, mod in enumerate(modality_names):
        out.append(
          PairStats(
            a=BASELINE_PREFIX + bv,
            b=view,
            modality=mod,
            jaccard=tuple(
              MeanStd.of([m["jaccard"][bi, vi, mi, ki] for m in means]) for ki in range(len(ks))
            ),
            cosine=MeanStd.of([m["cosine"][bi, vi, mi] for m in means]),
          )
        )
  return tuple(out)


# --------------------------------------------------------------------------------------------------
# The driver.
# --------------------------------------------------------------------------------------------------


def run_explain(
  cfg: ExplainConfig, workdir, *, log: Callable[[str], None] | None = print
) -> ExplainReport:
  """Explains a run (and optionally a dense baseline on the same store); writes W/explain/.

  Args:
    cfg: the explanation's options (`ExplainConfig`; the fields document each one).
    workdir: the FL-I2MoE (or any) run directory.
    log: progress printer (None = silent).

  Returns:
    The report (also written to `workdir/explain/<split>.json`).

  Raises:
    ExplainError / RunDirError / StoreError: bad options, run or store, before anything is
      computed or written.
  """
  say = log or (lambda _: None)
  workdir = pathlib.Path(workdir)
  settings, seeds = _open(cfg, workdir)
  first = runs.load_run(workdir, seed=seeds["run"][0])
  runs.require_token_level(first, "token explanations")
  store = first.store
  if cfg.split not in store.counts:
    raise ExplainError(
      f"store {store.path} has no split {cfg.split!r} (it has {sorted(store.counts)})"
    )
  base_first = None
  if cfg.baseline is not None:
    base_first = runs.load_run(cfg.baseline, seed=seeds["baseline"][0])
    runs.require_token_level(base_first, "token explanations")
    check_same_store(store, base_first.store, cfg.split)
  done = _explain_seeds(cfg, settings, seeds, first, base_first, say)
  ks, names = settings.ks, list(store.modality_names)
  positions = _planted_positions(store)
  base_report, comparison, pairs = None, (), ()
  if done["baseline"]:
    base_report = _model_report(
      done["baseline"], done["base_accs"], done["base_views"], names, ks, positions
    )
    comparison = _comparison(done["cross"], done["base_views"], done["views"], names, ks)
    pairs = tuple((r.seed, b.seed) for r, b in zip(done["run"], done["baseline"]))

  from flmoe_jax import __version__

  out_dir = RunDir(workdir).explain_dir
  out_dir.mkdir(parents=True, exist_ok=True)
  evidence = done["evidence"]
  report = ExplainReport(
    settings=settings,
    store=str(store.path.resolve()),
    model=_model_report(done["run"], done["accs"], done["views"], names, ks, positions),
    baseline=base_report,
    comparison=comparison,
    seed_pairs=pairs,
    figures=(),
    created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    flmoe_version=__version__,
    evidence_rule=evidence.rule if evidence is not None else "",
  )
  fig_names = ()
  if cfg.figures:
    from flmoe_jax.explain import figures as fig_lib

    all_weights = np.concatenate([np.concatenate(a.weights) for a in done["accs"]])
    fig_names = fig_lib.write_figures(
      report, out_dir, split=cfg.split, samples=done["figure_samples"] or [], weights=all_weights
    )
  report = dataclasses.replace(report, figures=tuple(fig_names))
  path = report.save(RunDir(workdir).explain(cfg.split))
  say(f"wrote {path}")
  return report


def _open(cfg: ExplainConfig, workdir: pathlib.Path) -> tuple[ExplainSettings, dict[str, list]]:
  """Checks the run(s), seeds, split and sample count before any model is restored.

  Returns:
    The report's settings and the seeds to explain, {"run": [...], "baseline": [...]}.
  """
  runs.run_config(workdir)  # RunDirError if this is no run directory
  seeds = {"run": resolve_seeds(workdir, cfg.seeds), "baseline": []}
  if cfg.baseline is not None:
    runs.run_config(cfg.baseline)
    seeds["baseline"] = resolve_seeds(cfg.baseline, cfg.seeds)
  run_store = runs.run_store(workdir)
  split = cfg.split
  if split not in run_store.counts:
    raise ExplainError(
      f"store {run_store.path} has no split {split!r} (it has {sorted(run_store.counts)})"
    )
  n_rows = run_store.split(split).num_examples
  if n_rows == 0:
    raise ExplainError(f"the {split} split has no examples; explain another split (--split)")
  if cfg.samples is not None and cfg.samples > n_rows:
    raise ExplainError(
      f"--samples {cfg.samples} but the {split} split has only {n_rows} examples; pass --samples "
      f"{n_rows} or fewer (or leave it out to explain the whole split)"
    )
  settings = ExplainSettings(
    split=split,
    method=cfg.method,
    ks=cfg.ks,
    fill=cfg.fill,
    target=cfg.target,
    samples=cfg.samples,
    seeds=cfg.seeds,
    repeats=cfg.repeats,
    random_seed=cfg.random_seed,
    batch_size=cfg.batch_size,
    steps_per_call=cfg.steps_per_call or None,  # 0: every variant in one call
    ig_steps=cfg.ig_steps,
    ig_baseline=cfg.ig_baseline,
  )
  return settings, seeds


def _view_names(model) -> list[str]:
  return [
    attr_lib.MIXTURE if v == attr_lib.MIXTURE else model.expert_names[v] for v in _views_for(model)
  ]


def _explain_seeds(cfg, settings, seeds, first, base_first, say) -> dict:
  """Explains every seed of the run and the baseline (seed i of each side by side) batch by batch.

  Returns:
    {"run", "baseline": the loaded runs; "accs", "base_accs": their per-seed accumulators;
    "views", "base_views": map names; "cross": per seed pair, per batch the baseline-vs-run map
    comparison; "figure_samples": host maps of the first batch's samples; "evidence"}.
  """
  from flmoe_jax.data.evidence import evidence_for_store

  store, split = first.store, cfg.split
  positions = _planted_positions(store)
  evidence = evidence_for_store(store, split)
  out = {"run": [], "baseline": [], "accs": [], "base_accs": [], "cross": []}
  out["views"] = _view_names(first.model)
  out["base_views"] = _view_names(base_first.model) if base_first is not None else []
  fig_samples = None
  root_key = jax.random.key(int(cfg.random_seed))
  for i in range(max(len(seeds["run"]), len(seeds["baseline"]))):
    pair = {}
    for side, first_run, acc_key, where in (
      ("run", first, "accs", None),
      ("baseline", base_first, "base_accs", cfg.baseline),
    ):
      if i < len(seeds[side]):
        loaded = first_run if i == 0 else runs.load_run(where or first.workdir, seed=seeds[side][i])
        out[side].append(loaded)
        out[acc_key].append(_SeedAcc())
        pair[side] = (loaded, out[acc_key][-1])
    if len(pair) == 2:
      out["cross"].append([])
    what = ", ".join(f"{name} seed {r.seed}" for name, (r, _) in pair.items())
    say(f"explain {split}: {what}")
    for bi, batch in enumerate(store.batches(split, settings.batch_size, limit=settings.samples)):
      key = jax.random.fold_in(root_key, bi)
      valid = np.asarray(batch["weight"]) > 0
      maps = {
        side: _explain_batch(r, batch, key, settings, positions, acc, evidence)
        for side, (r, acc) in pair.items()
      }
      if len(maps) == 2:
        c = jax.device_get(concentration.compare_maps(maps["baseline"], maps["run"], settings.ks))
        out["cross"][-1].append({k: np.asarray(v)[valid] for k, v in c.items()})
      if fig_samples is None and bi == 0:
        fig_samples = _figure_samples(
          batch, store, split, maps.get("run"), maps.get("baseline"), cfg.figure_samples
        )
  out["figure_samples"] = fig_samples
  out["evidence"] = evidence
  return out


def _figure_samples(batch, store, split, a_main, a_base, n) -> list[dict]:
  """Host copies of the maps of the first `n` valid samples, for the per-sample figures."""
  valid = np.flatnonzero(np.asarray(batch["weight"]) > 0)[:n]
  split_ids = store.split(split).ids
  out = []
  for row in valid:
    views, maps = [], []
    for prefix, a in (("", a_main), (BASELINE_PREFIX, a_base)):
      if a is None:
        continue
      for vi, name in enumerate(a.views):
        views.append(prefix + name)
        maps.append([np.asarray(m[row, vi]) for m in a.maps])
    a0 = a_main if a_main is not None else a_base
    out.append(
      {
        "index": int(batch["index"][row]),
        "id": str(split_ids[int(batch["index"][row])]),
        "views": views,
        "maps": maps,  # [view][modality] -> [T_m]
        "candidates": [np.asarray(c[row]) for c in a0.candidates],
        "modalities": list(store.modality_names),
        "kinds": [m.kind for m in store.modalities],
      }
    )
  return out


# --------------------------------------------------------------------------------------------------
# Console summary.
# --------------------------------------------------------------------------------------------------


def format_report(report: ExplainReport) -> str:
  """A short table: AOPC comp/suff identified, random and gap per view (x100, mean +/- std)."""
  s = report.settings
  lines = [
    f"explain {s.split} ({s.method}, fill {s.fill}, target {s.target}, K {list(s.ks)}), "
    f"{report.model.num_examples} samples x seeds {list(report.model.seeds)}"
  ]
  models = [("", report.model)]
  if report.baseline is not None:
    models.append((BASELINE_PREFIX, report.baseline))
  lines.append(
    f"  {'map':18s} {'output':8s} {'comp AOPC id':>16s} {'rnd':>14s} {'gap':>16s}"
    f" {'suff AOPC id':>16s} {'rnd':>14s} {'gap':>16s}"
  )
  for prefix, m in models:
    for c in m.faithfulness:
      if c.view == attr_lib.MIXTURE and c.output == "mixture":
        continue  # identical to its "own" row
      if m.kind == "dense" and c.output == "mixture":
        continue
      a = c.aopc
      lines.append(
        f"  {prefix + c.view:18s} {c.output:8s} {a['comp'].fmt():>16s} {a['comp_random'].fmt():>14s}"
        f" {a['comp_gap'].fmt():>16s} {a['suff'].fmt():>16s} {a['suff_random'].fmt():>14s}"
        f" {a['suff_gap'].fmt():>16s}"
      )
  ent = {}
  for prefix, m in models:
    for st in m.concentration:
      ent.setdefault(prefix + st.view, []).append(f"{st.modality} {st.entropy.fmt(3)}")
  lines.append("  normalised entropy (lower = more concentrated):")
  for view, parts in ent.items():
    lines.append(f"    {view:18s} " + ", ".join(parts))
  return "\n".join(lines)


def report_summary_json(report: ExplainReport) -> str:
  """The AOPC gaps per view as compact JSON (for scripts)."""
  out = {}
  for prefix, m in (("", report.model), (BASELINE_PREFIX, report.baseline)):
    if m is None:
      continue
    for c in m.faithfulness:
      out[f"{prefix}{c.view}/{c.output}"] = {
        k: (v.mean, v.std) for k, v in c.aopc.items() if k.endswith("gap")
      }
  return json.dumps(out)
