"""Building the report of one or more datasets from their run directories.

For each dataset: an FL-I2MoE run (with `explain/<split>.json` and `probe/<split>.json` when those stages ran)
and optionally a dense-transformer run. Out come the paper's Table A (task performance), Table B (top-K%
masking faithfulness), Table C (pair-level masking), verdicts on claims C1 and C2 with the numbers behind
them, a ground-truth section for synthetic stores, figures and run metadata.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from flmoe_jax import choices, significance
from flmoe_jax.errors import RunDirError
from flmoe_jax.explain.results import ExplainReport, FaithCurve, MapStats, MeanStd, ModelReport
from flmoe_jax.probes import standout as standout_lib
from flmoe_jax.probes.results import ProbeReport
from flmoe_jax.report.render import Figure, Section, Table, write_report
from flmoe_jax.report.tables import pm, table_a
from flmoe_jax.rundir import RunDir
from flmoe_jax.train_summary import TrainSummary

# Tag of a second probe file of a run (`probe/<split>_marginal.json`) whose planted-pair rows the
# ground-truth table shows beside the main probe's: the demo scores the synergy expert's marginal game.
MARGINAL_TAG = "marginal"


@dataclasses.dataclass
class ReportEntry:
  """One dataset of a report.

  Attributes:
    dataset: display name.
    fl_workdir: the FL-I2MoE run directory.
    dense_workdir: the dense-transformer run directory (optional).
    split: the split explanations and probes were computed on.
    i2moe_workdir: the original I2MoE's run directory (optional; Table A only).
  """

  dataset: str
  fl_workdir: pathlib.Path
  dense_workdir: pathlib.Path | None = None
  split: str = "test"
  i2moe_workdir: pathlib.Path | None = None


def _load(path: pathlib.Path) -> dict | None:
  return json.loads(path.read_text()) if path.is_file() else None


def _load_explain(wd: RunDir, split: str) -> ExplainReport | None:
  """The run's explain artifact, or None when there is none (ExplainError when it is not one)."""
  return wd.load_explain(split) if wd.explain(split).is_file() else None


def _load_probe(wd: RunDir, split: str, tag: str = "") -> ProbeReport | None:
  """The run's probe artifact, or None when there is none (ProbeError when it is not one)."""
  return wd.load_probe(split, tag) if wd.probe(split, tag).is_file() else None


def _f(x: float, digits: int = 2) -> str:
  return f"{x:.{digits}f}"


def _faith(block: ModelReport | None, view: str, output: str) -> FaithCurve | None:
  for f in block.faithfulness if block else ():
    if f.view == view and f.output == output:
      return f
  return None


_AOPC_KEYS = ("comp", "comp_random", "suff", "suff_random")


def table_b(dataset: str, explain: ExplainReport) -> Table | None:
  """Table B: comprehensiveness / sufficiency per K, identified vs random, AOPC and gaps (x100)."""
  fl = _faith(explain.model, "mixture", "mixture")
  dense = _faith(explain.baseline, "dense", "own")
  if fl is None:
    return None
  models = [("FL-I2MoE", fl)] + ([("Dense", dense)] if dense else [])
  header = ["K (%)"]
  for name, _ in models:
    header += [f"{name} comp id", f"{name} comp rnd", f"{name} suff id", f"{name} suff rnd"]
  rows = [header]
  for i, k in enumerate(fl.ks):
    row = [f"{k:g}"]
    for _, f in models:
      row += [_pm(getattr(f, key)[i]) for key in _AOPC_KEYS]
    rows.append(row)
  row = ["AOPC"]
  for _, f in models:
    row += [_pm(f.aopc[key]) for key in _AOPC_KEYS]
  rows.append(row)
  if all(f.aopc_trapezoid for _, f in models):
    # The same curves' normalised trapezoid areas over K (the budgets need not be evenly spaced).
    row = ["AOPC (trapezoid)"]
    for _, f in models:
      row += [_pm(f.aopc_trapezoid[key]) for key in _AOPC_KEYS]
    rows.append(row)
  row = ["gap (comp: id-rnd, suff: rnd-id)"]
  for _, f in models:
    row += [_pm(f.aopc["comp_gap"]), "", _pm(f.aopc["suff_gap"]), ""]
  rows.append(row)
  st = explain.settings
  return Table(
    f"table-b-{dataset}",
    f"Table B ({dataset}, {st.split} split, {st.method}, {st.fill} fill): masking faithfulness "
    "x100, mean ± std over seeds",
    rows,
  )


def _pm(ms: MeanStd, digits: int = 2) -> str:
  """`mean ± std` of a number over seeds, on its own scale."""
  return pm(ms.mean, ms.std, 1.0, digits)


def table_b_experts(dataset: str, explain: ExplainReport) -> Table:
  """Expert-wise faithfulness: each expert's own map, drop of its own output and of the mixture."""
  rows = [["map", "output", "comp AOPC", "comp gap", "suff AOPC", "suff gap"]]
  for f in explain.model.faithfulness:
    a = f.aopc
    rows.append(
      [
        f.view,
        f.output,
        *(_pm(a[k]) for k in ("comp", "comp_gap", "suff", "suff_gap")),
      ]
    )
  return Table(f"table-b-experts-{dataset}", f"Expert-wise faithfulness ({dataset}), x100", rows)


def _conc(block: ModelReport | None, view: str) -> dict[str, MapStats]:
  return {c.modality: c for c in (block.concentration if block else ()) if c.view == view}


C1_STAT = "normalised entropy of a map over its candidate tokens (0 = one token, 1 = flat)"
# A cell counts only when the seed means differ by at least this much normalised entropy (1% of its
# range): two nearly flat maps (entropy 0.99999 and 1.0, seeds alike to 5 digits) give a zero-width
# interval around a difference nobody would call a difference.
C1_MIN_EFFECT = 0.01
_MAP_KINDS = (("normalised", "entropy", "gini"), ("raw", "entropy_raw", "gini_raw"))


def _seed_values(ms: MeanStd | None) -> list[float]:
  return [] if ms is None else [v for v in ms.values if v is not None and np.isfinite(v)]


def _ci_text(ci, digits: int = 3) -> str:
  return (
    "n/a (< 2 seeds)"
    if ci is None
    else f"{ci[0]:+.{digits}f} [{ci[1]:+.{digits}f}, {ci[2]:+.{digits}f}]"
  )


def _specificity(explain: ExplainReport) -> str:
  """Cross-expert specificity: the mean top-K Jaccard overlap of the experts' maps, seed interval."""
  spec = explain.model.specificity
  if not spec:
    return ""
  per_seed = np.array([[_seed_values(j) for j in s.jaccard] for s in spec], dtype=float)
  seeds = per_seed.mean((0, 1))  # [seeds]: over expert pairs, modalities and K
  ci = significance.mean_ci(seeds)
  value = f"{seeds.mean():.2f}" if ci is None else f"{ci[0]:.2f} [{ci[1]:.2f}, {ci[2]:.2f}]"
  return (
    f"; cross-expert specificity: mean top-K Jaccard overlap of the experts' maps {value} "
    f"(0 = disjoint top tokens, 1 = the same; {len(seeds)} seeds)"
  )


def _c1_cells(explain: ExplainReport, dense: dict[str, MapStats]) -> list[dict] | None:
  """One cell per FL-I2MoE view x modality x map form, each with its test against the dense map.

  Returns:
    the cells (their table row, Gini columns, seed counts, `significance.diff_test` and its 95%
    interval), or None when a map lacks its unnormalised form (a file from an older flmoe_jax).
  """
  cells = []
  for view in dict.fromkeys(c.view for c in explain.model.concentration):
    for mod, c in _conc(explain.model, view).items():
      d = dense.get(mod)
      if d is None:
        continue
      for kind, ent, gin in _MAP_KINDS:
        if getattr(c, ent) is None or getattr(d, ent) is None:
          return None
        a, b = _seed_values(getattr(c, ent)), _seed_values(getattr(d, ent))
        cells.append(
          {
            "view": view,
            "row": [view, mod, kind, _pm(getattr(c, ent), 3), _pm(getattr(d, ent), 3)],
            "gini": [_pm(getattr(c, gin), 3), _pm(getattr(d, gin), 3)],
            "seeds": (len(a), len(b)),
            "test": significance.diff_test(a, b, C1_MIN_EFFECT),
            "ci": significance.diff_ci(a, b, 0.95),
          }
        )
  return cells


def _c1_state(test: dict | None, p_higher_holm: float) -> str:
  """A cell's state: lower at one-sided 5% on its own test, higher at 5% after Holm, else unresolved."""
  if test is not None and test["p_lower"] < significance.DEFAULT_ALPHA:
    return "lower"
  if test is not None and p_higher_holm < significance.DEFAULT_ALPHA:
    return "higher"
  return "unresolved"


def c1_verdict(dataset: str, explain: ExplainReport) -> tuple[str, Table]:
  """C1: FL-I2MoE's maps are more concentrated than the dense transformer's.

  Every view of FL-I2MoE (each expert and the mixture) against the dense map, per modality, on the
  min-max normalised and on the unnormalised maps. The statistic is the normalised entropy (lower =
  more concentrated); each cell is the difference of the two models' seed means, tested with
  Welch's one-sided tests over seeds beyond a margin of `C1_MIN_EFFECT` (`significance.diff_test`).
  A cell is lower when its own test says so at one-sided 5%: PASS (every cell lower) is an
  intersection-union test, at level 5% without adjustment. A cell is higher when its test is
  significant after Holm's adjustment over the cells: FAIL (some cell higher) controls the
  family-wise error. Otherwise NOT SHOWN, as with fewer than two seeds of either model or a file
  without the unnormalised maps. The cross-expert specificity is stated beside it.
  """
  head = f"C1 ({dataset})"
  header = [
    "view",
    "modality",
    "map",
    "FL entropy",
    "dense entropy",
    "FL - dense [95% CI]",
    "p lower",
    "p higher (Holm)",
    "FL Gini",
    "dense Gini",
  ]
  rows = [header]
  table = Table(
    f"c1-{dataset}",
    f"C1 evidence ({dataset}): {C1_STAT}, each FL-I2MoE view vs the dense map, mean +/- std over "
    "seeds; the difference with its 95% Welch interval over seeds; p lower: Welch's one-sided test "
    f"that FL is lower by more than {C1_MIN_EFFECT}; p higher: that it is higher by more than "
    f"{C1_MIN_EFFECT}, Holm-adjusted over the cells",
    rows,
  )
  dense = _conc(explain.baseline, "dense")
  if not dense:
    return f"NOT SHOWN: {head}: no dense baseline explained (flmoe explain --baseline).", table
  cells = _c1_cells(explain, dense)
  if cells is None:
    return (
      f"NOT SHOWN: {head}: the explain file has no concentration of the unnormalised maps "
      "(written by an older flmoe_jax); rerun `flmoe explain`.",
      table,
    )
  p_higher = significance.holm(
    np.array([1.0 if c["test"] is None else c["test"]["p_higher"] for c in cells])
  )
  states = ("lower", "higher", "unresolved")
  counts, by_view = dict.fromkeys(states, 0), {}
  for cell, ph in zip(cells, p_higher):
    state = _c1_state(cell["test"], ph)
    counts[state] += 1
    by_view.setdefault(cell["view"], dict.fromkeys(states, 0))[state] += 1
    test = cell["test"]
    p_text = ["-", "-"] if test is None else [f"{test['p_lower']:.2g}", f"{ph:.2g}"]
    rows.append([*cell["row"], _ci_text(cell["ci"]), *p_text, *cell["gini"]])
  n_seeds = {c["seeds"] for c in cells}
  seeds = ", ".join(f"{a} vs {b}" for a, b in sorted(n_seeds))
  n_cells = len(cells)
  numbers = (
    f"{n_cells} cells (views x modalities x normalised / raw maps): {counts['lower']} more "
    f"concentrated, {counts['higher']} less, {counts['unresolved']} not resolved; per view (lower / "
    "higher / not resolved): "
    + ", ".join(f"{v} {c['lower']}/{c['higher']}/{c['unresolved']}" for v, c in by_view.items())
    + f"; statistic: {C1_STAT}, FL - dense over seeds ({seeds} seeds), Welch's one-sided tests "
    f"beyond a difference of {C1_MIN_EFFECT}: a cell is lower at p < 0.05 (PASS needs all {n_cells}: "
    f"an intersection-union test), higher at Holm-adjusted p < 0.05 over the {n_cells} cells"
    + _specificity(explain)
  )
  if any(a < 2 or b < 2 for a, b in n_seeds):
    verdict = f"NOT SHOWN: {head}: needs at least two training seeds of each model"
  elif counts["higher"]:
    verdict = (
      f"FAIL: {head}: some FL-I2MoE maps are significantly less concentrated than the dense map"
    )
  elif counts["unresolved"]:
    verdict = f"NOT SHOWN: {head}: not every FL-I2MoE map is significantly more concentrated than the dense map"
  else:
    verdict = (
      f"PASS: {head}: every FL-I2MoE map (each expert and the mixture, both map forms) is more "
      "concentrated than the dense map"
    )
  return f"{verdict} ({numbers}).", table


def table_c(dataset: str, probe: ProbeReport) -> Table:
  """Table C: pair masking, drop in target probability (x100) and in the metric vs budget, the ranked
  pairs against two random controls, with the paired test against the matched one."""
  pmk = probe.pair_masking
  head = {"random": "random (candidates)", "random_all": "random (all tokens)"}
  paired = pmk.SII.random.p_holm is not None and pmk.RG.random.p_holm is not None
  tested = ["gap +/- SE", "p (Holm)"] if paired else []
  rows = [
    ["budget (pairs)"]
    + [f"{idx} {k}" for idx in ("SII", "RG") for k in ["ranked", *head.values(), *tested]]
  ]
  for i, b in enumerate(pmk.budgets):
    row = [str(b)]
    for idx in ("SII", "RG"):
      blk = pmk.index(idx)
      row += [
        f"{100 * c.prob_drop[i]:.1f} ({100 * c.metric_drop[i]:.1f})"
        for c in (blk.ranked, blk.random, blk.random_all)
      ]
      r = blk.random
      if paired:
        row += [f"{100 * r.gap[i]:+.1f} +/- {100 * r.gap_se[i]:.1f}", f"{r.p_holm[i]:.2g}"]
    rows.append(row)
  return Table(
    f"table-c-{dataset}",
    f"Table C ({dataset}): pair masking in the full model over {pmk.n} examples, drop of the "
    f"target probability x100 (drop of {pmk.metric} x100 in brackets); random = "
    f"{pmk.controls['random']}, {pmk.repeats} repeats; gap = ranked - matched random drop x100, "
    f"p = {pmk.test}",
    rows,
  )


def stability_table(dataset: str, probe: ProbeReport) -> Table | None:
  """How much the pair rankings move under a new MC seed and a new training seed (`--stability`)."""
  blocks = probe.stability
  if not blocks:
    return None

  def cell(ms):
    return (
      "n/a"
      if ms["mean"] is None
      else f"{ms['mean']:.2f}" + (f" ± {ms['se']:.2f}" if ms["se"] else "")
    )

  rows = [
    ["redrawn", "index (scale)", "examples", "pairs", "Kendall tau", "top-k overlap", "top-1 agree"]
  ]
  k = None
  for name, blk in blocks.items():
    k = blk["k"]
    what = ", ".join(f"{key} {a} -> {b}" for key, (a, b) in blk["differs"].items()) or name
    for index in ("SII", "RG"):
      r = blk[index]
      rows.append(
        [
          what,
          f"{index} ({r['scale']})",
          str(blk["n_examples"]),
          str(r["n_pairs"]),
          cell(r["kendall_tau"]),
          cell(r["topk_overlap"]),
          cell(r["top1_agree"]),
        ]
      )
  return Table(
    f"stability-{dataset}",
    f"Stability of the pair rankings ({dataset}): the same examples probed again; mean ± SE over "
    f"examples of Kendall's tau-b between the two rankings (1 = same order), the top-{k} overlap and "
    "the share with the same top pair",
    rows,
  )


def c2_verdict(dataset: str, probe: ProbeReport) -> str:
  """C2: pairs ranked by SII / RG hurt the model more when masked than matched random pairs.

  PASS only when the paired test (ranked vs random tokens from the same candidates, per example) is
  significant at every budget of both indices after Holm; FAIL when the ranking is significantly
  worse than the control somewhere; otherwise NOT SHOWN, naming what is missing.
  """
  pmk = probe.pair_masking
  head = f"C2 ({dataset})"
  if pmk.SII.random.p_holm is None or pmk.RG.random.p_holm is None:
    return (
      f"NOT SHOWN: {head}: the probe file has no paired test of ranked vs matched random pairs; "
      "rerun `flmoe probe`."
    )
  n, need, alpha = pmk.n, pmk.min_examples, pmk.alpha
  stat = f"{pmk.test}, n = {n} examples, {2 * len(pmk.budgets)} budgets x indices"
  parts, shown, worse = [], True, False
  for idx in ("SII", "RG"):
    r = pmk.index(idx).random
    cells = ", ".join(
      f"b={b}: {100 * g:+.1f} +/- {100 * se:.1f} (p {p:.2g})"
      for b, g, se, p in zip(pmk.budgets, r.gap, r.gap_se, r.p_holm, strict=True)
    )
    parts.append(f"{idx}: {cells}")
    shown &= all(p < alpha for p in r.p_holm)
    worse |= any(p < alpha for p in r.p_less_holm)
  numbers = (
    f"drop of the target probability x100, ranked minus random tokens of the same candidates, "
    f"mean +/- SE: {'; '.join(parts)}; {stat}"
  )
  if n < need:
    return (
      f"NOT SHOWN: {head}: {n} examples probed, the paired test needs at least {need} "
      f"(flmoe probe --samples) ({numbers})."
    )
  if worse:
    return f"FAIL: {head}: ranked pairs hurt the model significantly less than random pairs at some budget ({numbers})."
  if shown:
    return f"PASS: {head}: ranked pairs hurt the model more than random pairs at every budget ({numbers})."
  return f"NOT SHOWN: {head}: ranked pairs do not beat random pairs significantly at every budget ({numbers})."


def _game_fill(probe: ProbeReport, pair: dict) -> str:
  """The fill of the game that scored a planted pair."""
  index = "SII" if str(pair.get("probe", "")).startswith("SII") else "RG"
  return probe.settings.fills[index]


def ground_truth_table(
  dataset: str, probe: ProbeReport, others: Sequence[ProbeReport] = ()
) -> Table | None:
  """Planted pairs recovered, per probe and scale; `others` are probes of the same run with other
  fills (e.g. the demo's marginal SII game), of which only the rows with another fill are shown."""
  planted = probe.planted
  if not planted:
    return None
  rows = [
    [
      "planted pair",
      "kind",
      "probe",
      "fill",
      "scale",
      "hit@1",
      "|.| hit@1",
      "MRR",
      "called",
      "chance",
      "pair AUROC",
      "pair AP",
      "global AUROC",
      "in candidates",
    ]
  ]
  main_fill = {name: _game_fill(probe, p) for name, p in planted["pairs"].items()}
  for q in (probe, *others):
    for name, p in (q.planted or {}).get("pairs", {}).items():
      fill = _game_fill(q, p)
      if q is not probe and fill == main_fill.get(name):
        continue
      for scale in ("logit", "prob", "logodds", "logprob"):
        if scale in p:
          rows.append(
            [
              name,
              p["kind"],
              p["probe"],
              fill,
              scale,
              _f(p[scale]["hit@1"], 3),
              _f(p[scale].get("abs_hit@1", float("nan")), 3),
              _f(p[scale]["mrr"], 3),
              _f(p[scale]["called@1"], 3) if "called@1" in p[scale] else "-",
              _f(p[scale].get("chance_hit@1", float("nan")), 3),
              *(
                "-" if p[scale].get(k) is None else _f(p[scale][k], 3)
                for k in ("pair_auroc", "pair_ap", "global_auroc")
              ),
              _f(p["in_candidates"], 2),
            ]
          )
  setting = planted.get("setting", "?")
  types = planted.get("type_auroc")
  type_note = ""
  if types:
    lo = "logodds"
    type_note = (
      f"; type AUROC over {types['n_synergy']} synergy and {types['n_redundancy']} redundant planted "
      f"pairs (log-odds scale, 0.5 = no separation): SII of the synergy game {_f(types['SII'][lo])}, RG "
      f"of the redundancy game {_f(types['RG'][lo])}"
    )
  return Table(
    f"ground-truth-{dataset}",
    f"Planted pairs recovered ({dataset}, generator setting {setting!r}, per test sample; hit@1 ranks "
    "by the signed score, |.| hit@1 by its magnitude; called: first by the signed log-odds score, and the "
    "expert's share of it (gate weight x score) at least the probe's min_effect nats and above the other "
    "expert's share of the pair (docs/probes.md); pair AUROC: the share of the other candidate "
    "pairs ranked below the planted one, mean over examples; pair AP: its average precision (1 / its "
    "rank, one positive), mean over examples; global AUROC: the pair AUROC on the score map averaged "
    "over the examples; fill: "
    "what 'absent' means in the probed game, mean fill or the marginal game over reference examples, "
    f"docs/probes.md){type_note}",
    rows,
  )


def standout_table(
  dataset: str, probe: ProbeReport, *, rows_per_index: int = 3
) -> tuple[str, Table] | None:
  """Pairs that rank first across examples in a material share of them (the across-example null test).

  Returns a one-line summary and a table of the most frequent first places per index, or None for
  probe files written before the test existed.
  """
  so = probe.standout
  if not all(i in so for i in ("SII", "RG")):
    return None
  names = probe.settings.modalities
  label = functools.partial(standout_lib.pair_label, modality_names=names)
  rows = [
    [
      "index",
      "expert",
      "scale",
      "pair",
      "first in",
      "chance",
      "mean abs(score)",
      "Holm p vs chance",
      "stands out",
    ]
  ]
  parts = []
  for idx in ("SII", "RG"):
    blk = so[idx]
    ds = blk.dataset
    expert = probe.settings.expert(idx)
    parts.append(f"{idx} on {expert}: {standout_lib.describe(ds, names)}")
    for p in ds.pairs[:rows_per_index]:
      rows.append(
        [
          idx,
          expert,
          blk.scale,
          label(p.pair),
          f"{100 * p.rate:.1f}% +/- {100 * p.se:.1f} (n={p.n})",
          f"{100 * p.chance:.1f}%",
          f"{p.mean_abs:.3g}",
          f"{p.p_chance_holm:.2g}",
          "yes" if p.stands_out else "no",
        ]
      )
  first = so["SII"].dataset
  summary = (
    f"Pairs that stand out across examples ({dataset}, {first.n_examples} examples, ranked by "
    f"magnitude): first in significantly more than {100 * first.min_rate:.0f}% of the examples "
    f"and more than chance (one-sided binomial, Holm, alpha {first.alpha:g}): "
    + "; ".join(parts)
    + "."
  )
  table = Table(
    f"standout-{dataset}",
    f"Most frequent top pairs across examples ({dataset}): share of examples where the pair ranks "
    "first (+/- binomial SE), the chance rate (1 / candidate pairs), the pair's mean absolute score "
    "(its size beside the rank), the Holm-adjusted p-value "
    "against chance, and whether the pair stands out (first in significantly more than "
    f"{100 * first.min_rate:.0f}% of the examples)",
    rows,
  )
  return summary, table


# Which expert's map should find each kind of planted write (the other views are shown for contrast).
_RELEVANT = {"synergy": "syn", "redundancy": "red", "uniq_text": "uni_0", "uniq_image": "uni_1"}


def planted_positions_table(dataset: str, explain: ExplainReport) -> Table | None:
  """Synthetic stores: how often each planted token/patch is in each map's top-K% (largest K)."""
  planted = explain.model.planted
  if not planted:
    return None
  ks = explain.settings.ks
  views: list[str] = []
  rows_by_pos: dict[tuple, dict] = {}
  for p in planted:
    if p.view not in views:
      views.append(p.view)
    key = (p.mechanism, p.kind, p.modality, p.position)
    entry = rows_by_pos.setdefault(key, {"chance": p.chance[-1]})
    entry[p.view] = p.hit_rate[-1].mean
  rows = [["planted", "kind", "modality", "position", "relevant map", *views, "chance"]]
  for (mech, kind, modality, pos), e in rows_by_pos.items():
    relevant = _RELEVANT.get(kind, "-")
    cells = [_f(e.get(v, float("nan"))) for v in views]
    rows.append([mech, kind, modality, str(pos), relevant, *cells, _f(e["chance"])])
  return Table(
    f"planted-positions-{dataset}",
    f"Planted positions in each map's top-{_f(ks[-1], 0)}% ({dataset}, fraction of explained test "
    "samples; 'relevant map' names the expert whose role matches the planted kind)",
    rows,
  )


def evidence_section(
  dataset: str, explain: ExplainReport | None, probe: ProbeReport | None
) -> Section | None:
  """Stores with a label-free evidence rule (easy-vqa): maps and top pairs against the pixels.

  Returns:
    A section with the rule, a table of each map's mass and top-K% precision on the evidence
    positions (FL-I2MoE views and the dense baseline, mean ± std over seeds, chance beside), and a
    table of how often each probe's top pair joins an evidence token to an evidence patch; None when
    neither file has evidence scores.
  """
  rows_e = []
  if explain and explain.model.evidence:
    ks = explain.settings.ks
    rows_e.append(
      [
        "model",
        "map",
        "modality",
        "mass share",
        *[f"top-{_f(k, 0)}% precision" for k in ks],
        "chance",
        "n",
      ]
    )
    for label, block in (("FL-I2MoE", explain.model), ("dense", explain.baseline)):
      for e in block.evidence if block else ():
        rows_e.append(
          [
            label,
            e.view,
            e.modality,
            _pm(e.mass_share, 3),
            *[_pm(p, 3) for p in e.precision],
            _f(e.chance, 3),
            str(e.num_examples),
          ]
        )
  ev = probe.evidence if probe else None
  if not rows_e and not ev:
    return None
  rule = (explain.evidence_rule if explain else "") or (ev or {}).get("rule", "")
  sec = Section(f"{dataset}: explanations against the pixels", id=f"evidence-{dataset}")
  sec.paragraphs.append(
    f"Evidence positions known without labels ({rule}). A map scores its share of attribution mass "
    "(of the [0, 1]-normalised map) and of its top-K% positions on them; chance is the evidence "
    "share of the candidate positions, what a uniform map or a random top-K% set scores (scale 0-1)."
  )
  if rows_e:
    sec.tables.append(
      Table(
        f"evidence-maps-{dataset}",
        f"Attribution on the evidence positions ({dataset}, test samples per seed = n)",
        rows_e,
      )
    )
  if ev:
    rows = [
      [
        "probe",
        "expert",
        "ranked by",
        "n",
        "top pair joins evidence",
        "chance (candidates)",
        "chance (all pairs)",
        "z",
        "p (one-sided)",
      ]
    ]
    for role in ("sii", "rg"):
      r = ev.get(role) or {}
      if not r.get("n"):
        continue
      rows.append(
        [
          r["index"],
          r["expert"],
          r["scale"],
          str(r["n"]),
          f"{r['hits']} ({_f(100 * r['top_pair_rate'], 0)}%)",
          f"{_f(100 * r['chance_candidates'], 0)}%",
          f"{_f(100 * r['chance_all_pairs'], 1)}%",
          _f(r["z"]),
          f"{r['p_value']:.2g}",
        ]
      )
    sec.tables.append(
      Table(
        f"evidence-pairs-{dataset}",
        f"Top pair of each probe joining an evidence token to an evidence patch ({dataset}; "
        "Poisson-binomial normal approximation against the candidate-pair chance)",
        rows,
      )
    )
  return sec


def pure_setting_results(
  runs: Sequence[tuple[str, str | os.PathLike]], split: str = "test"
) -> list[dict]:
  """Ground truth in the generator's pure settings: is each mechanism found by its own expert's probe?

  Args:
    runs: (setting, FL-I2MoE run directory) pairs, e.g. ("synergy", ...), each probed on `split`; the
      planted pair of the setting's kind is read from the probe's `planted` block.
    split: the probed split.

  Returns:
    Per (setting, scale): {"setting", "accuracy" (test, x100), "expert", "weight" (its mean test
    weight at the selected checkpoint, or None), "probe", "scale", "ranked_by" (the probe ranks
    pairs on this scale), "hit@1", "abs_hit@1", "called" (log-odds scale only, else None), "chance"}.
    Runs without a summary or a planted probe are left out.
  """
  out = []
  for setting, wd in runs:
    wd = pathlib.Path(wd)
    run = RunDir(wd)
    summary = run.load_summary() if run.summary.is_file() else None
    probe = _load_probe(run, split)
    if summary is None or probe is None or not probe.planted:
      continue
    p = next((q for q in probe.planted["pairs"].values() if q["kind"] == setting), None)
    if p is None:
      continue
    test = next(iter(summary.seeds.values())).test
    # The expert order of FL-I2MoE: uni_0..uni_{M-1}, syn, red (weight_i follows it).
    n_experts = sum(k.startswith("weight_") for k in test)
    names = [f"uni_{i}" for i in range(n_experts - 2)] + ["syn", "red"]
    expert = p.get("expert")
    weight = test.get(f"weight_{names.index(expert)}") if expert in names else None
    # The scale the probe ranked this index by.
    sii = str(p.get("probe", "")).startswith("SII")
    ranked_by = probe.settings.rank_score("SII" if sii else "RG")
    for scale in ("logodds", "logprob", "logit", "prob"):
      if scale in p:
        out.append(
          {
            "setting": setting,
            "accuracy": 100 * summary.metric("accuracy").mean,
            "expert": expert,
            "weight": weight,
            "probe": p["probe"],
            "scale": scale,
            "ranked_by": scale == ranked_by,
            "hit@1": p[scale]["hit@1"],
            "abs_hit@1": p[scale].get("abs_hit@1"),
            "called": p[scale].get("called@1"),
            "chance": p[scale].get("chance_hit@1"),
          }
        )
  return out


def pure_settings_table(results: Sequence[dict], split: str = "test") -> Table:
  """The table of `pure_setting_results`."""
  nan = float("nan")
  rows = [
    ["setting", "test accuracy", "target expert", "its mean weight (selected checkpoint)", "probe",
     "scale", "hit@1", "|.| hit@1", "called", "chance"]
  ]  # fmt: skip
  for r in results:
    rows.append(
      [
        r["setting"],
        _f(r["accuracy"]),
        str(r["expert"]),
        _f(nan if r["weight"] is None else r["weight"]),
        r["probe"],
        r["scale"],
        _f(r["hit@1"], 3),
        _f(nan if r["abs_hit@1"] is None else r["abs_hit@1"], 3),
        "-" if r.get("called") is None else _f(r["called"], 3),
        _f(nan if r["chance"] is None else r["chance"], 3),
      ]
    )
  return Table(
    "ground-truth-pure",
    f"Planted pair recovered by its own expert in the generator's pure settings ({split} split, one "
    "seed; in `synergy` only the XOR pair decides the label, in `redundancy` only the copied pair; "
    "called: first by the signed log-odds score with the expert's share of it, gate weight x score, "
    "at least the probe's min_effect nats and above the other expert's share, docs/probes.md)",
    rows,
  )


def objective_line(dataset: str, cfg: dict) -> str:
  """One sentence naming the training objective of a run (the paper's or this library's extension)."""
  loss, optim = cfg.get("loss", {}), cfg.get("optim", {})
  lam_int = loss.get("lambda_int", 0.0)
  beyond = {n: loss.get(f"lambda_{n}", 0.0) for n in choices.EXTRA_LOSS_TERMS}
  warm = optim.get("gate_warmup_steps", 0)
  warm_frac = optim.get("gate_warmup_fraction", 0.0)
  if not (any(beyond.values()) or warm or warm_frac):
    return f"Objective ({dataset}): the paper's (task + {lam_int} x noise-perturbation interaction losses)."
  parts = ["task"]
  if lam_int:
    parts.append(f"{lam_int} x the paper's interaction losses")
  for name, lam in beyond.items():
    if lam:
      parts.append(f"{lam} x {choices.EXTRA_LOSS_TERMS[name]} (beyond the paper)")
  extra = ""
  if warm or warm_frac:
    extra = f"; gate frozen for the first {_gate_warmup_text(optim)} (beyond the paper)"
  if (loss.get("extra_start_step", 0) or loss.get("extra_start_fraction", 0.0)) and (
    beyond["missing"] or beyond["decor"]
  ):
    extra += f"; the missing-modality and decorrelation terms from {_extra_start_text(loss)}"
  return f"Objective ({dataset}): {' + '.join(parts)}{extra}; see docs/ground_truth.md."


def _steps_or_share(steps: int, fraction: float, as_steps: str) -> str:
  """A point of the schedule given as a step count (`as_steps` with `{}`) or a share of the run."""
  return as_steps.format(steps) if steps or not fraction else f"{100 * fraction:g}% of the steps"


def _gate_warmup_text(optim: dict) -> str:
  return _steps_or_share(
    optim.get("gate_warmup_steps", 0), optim.get("gate_warmup_fraction", 0.0), "{} steps"
  )


def _schedule_text(optim: dict) -> str:
  """The learning-rate schedule in words, with its warm-up and decay shares where it has them."""
  name = optim.get("schedule", "constant")
  warm = f"warm-up {100 * optim.get('warmup_fraction', 0.0):g}%"
  if name == "warmup_cosine":
    return f"warmup_cosine schedule: {warm}, cosine decay to 0"
  if name == "warmup_stable_decay":
    decay = 100 * optim.get("decay_fraction", 0.0)
    return f"warmup_stable_decay schedule: {warm}, cosine decay to 0 over the last {decay:g}%"
  return f"{name} schedule"


def _extra_start_text(loss: dict) -> str:
  return _steps_or_share(
    loss.get("extra_start_step", 0), loss.get("extra_start_fraction", 0.0), "step {}"
  )


def _run_summary(workdir: str | os.PathLike, role: str) -> TrainSummary:
  """The summary.json of a finished run; RunDirError naming the directory when there is none.

  Args:
    workdir: the run directory.
    role: `run`, `baseline` or `I2MoE run`, for the message.
  """
  wd = pathlib.Path(workdir)
  flag = {"baseline": "--baseline", "I2MoE run": "--i2moe"}.get(role, "--workdir")
  if not wd.exists():
    raise RunDirError(f"{role} directory {wd} does not exist (check {flag})")
  if not wd.is_dir():
    raise RunDirError(f"{role} directory {wd} is a file, not a run directory (check {flag})")
  run = RunDir(wd)
  if not run.summary.is_file():
    raise RunDirError(
      f"{role} directory {wd} has no summary.json: not a finished run (train it first, or check "
      f"{flag})"
    )
  return run.load_summary()


def _check_out_dir(out: pathlib.Path) -> None:
  """Refuses an output folder that cannot be created: it, or a parent, is an existing file."""
  for p in (out, *out.parents):
    if p.exists():
      if not p.is_dir():
        what = "is a file" if p == out else f"is inside {p}, which is a file"
        raise RunDirError(f"report folder {out} {what}; pass another --out")
      return


def _figures(workdir: pathlib.Path, sub: str, split: str) -> list[Figure]:
  d = workdir / sub
  names = sorted(d.glob(f"{split}_*.png")) if d.is_dir() else []
  # Keep the report readable: the curves, the weights and the first two per-sample figures.
  keep = [p for p in names if not any(c.isdigit() for c in p.stem.rsplit("_", 1)[-1])]
  keep += [p for p in names if p.stem.rsplit("_", 1)[-1] in ("0", "1")]
  return [Figure(p, f"{workdir.name} / {sub}: {p.stem.replace('_', ' ')}") for p in keep]


def build_report(
  entries: Sequence[ReportEntry],
  out_dir: str | os.PathLike,
  *,
  title: str = "FL-I2MoE report",
  pure_settings: Sequence[tuple[str, str | os.PathLike]] = (),
) -> dict:
  """Builds the report of several datasets into `out_dir` (report.html, report.md, report_files/).

  Args:
    entries: one per dataset.
    out_dir: where the report goes.
    title: the page title.
    pure_settings: optional (setting, probed run directory) pairs of the synthetic generator's pure
      settings, shown as a ground-truth section (`pure_settings_table`).

  Returns:
    {"html": path, "md": path, "verdicts": [str]}.

  Raises:
    RunDirError: a run or baseline directory that is missing, a file or unfinished, or an `out_dir`
      that is (or lies inside) a file; raised before anything is written.
  """
  # Everything is read and checked before anything is written.
  summaries = {e.dataset: _summaries(e) for e in entries}
  _check_out_dir(pathlib.Path(out_dir))

  overview = Section("Overview", id="overview")
  sections = [
    overview,
    Section("Table A: task performance", tables=[table_a(summaries)], id="table-a"),
  ]
  verdicts = []
  for e in entries:
    sections += _dataset_sections(e, verdicts)
  if pure_settings:
    split = entries[0].split if entries else "test"
    sections.append(
      Section(
        "Ground truth: pure settings",
        paragraphs=[
          "The same generator with one mechanism deciding the label: the planted pair should be "
          "ranked first by the probe of the expert named after it."
        ],
        tables=[pure_settings_table(pure_setting_results(pure_settings, split), split)],
        id="ground-truth-pure",
      )
    )
  overview.paragraphs += verdicts or [
    "No explanation or probe outputs found: only Table A is shown."
  ]
  sections.append(_metadata_section(entries, summaries))
  paths = write_report(out_dir, title, sections)
  return {**paths, "verdicts": verdicts}


def _summaries(e: ReportEntry) -> dict:
  """Table A's rows of one dataset: the reference points, then the runs (RunDirError if one is not)."""
  fl = _run_summary(e.fl_workdir, "run")
  dense = _run_summary(e.dense_workdir, "baseline") if e.dense_workdir is not None else None
  i2moe = _run_summary(e.i2moe_workdir, "I2MoE run") if e.i2moe_workdir is not None else None
  refs = (_load(RunDir(e.fl_workdir).baselines(e.split)) or {}).get("models")
  return {**(refs or {}), "Dense Transformer": dense, "I2MoE": i2moe, "FL-I2MoE": fl}


def _present(*tables: Table | None) -> list[Table]:
  return [t for t in tables if t is not None]


def _dataset_sections(e: ReportEntry, verdicts: list[str]) -> list[Section]:
  """One dataset's explanations-and-probes section (and its evidence section); appends its verdicts."""
  wd = RunDir(e.fl_workdir)
  explain = _load_explain(wd, e.split)
  probe = _load_probe(wd, e.split)
  sec = Section(f"{e.dataset}: explanations and probes", id=f"dataset-{e.dataset}")
  sec.paragraphs.append(objective_line(e.dataset, _load(wd.config) or {}))
  if explain:
    sec.tables += _present(table_b(e.dataset, explain))
    sec.tables.append(table_b_experts(e.dataset, explain))
    verdict, c1_table = c1_verdict(e.dataset, explain)
    verdicts.append(verdict)
    sec.paragraphs.append(verdict)
    sec.tables += _present(c1_table, planted_positions_table(e.dataset, explain))
    sec.figures += _figures(wd.root, "explain", e.split)
  else:
    sec.paragraphs.append(
      f"No explanations yet: run `flmoe explain --workdir {wd.root} --split {e.split}`."
    )
  if probe:
    sec.tables.append(table_c(e.dataset, probe))
    sec.tables += _present(stability_table(e.dataset, probe))
    verdict = c2_verdict(e.dataset, probe)
    verdicts.append(verdict)
    sec.paragraphs.append(verdict)
    # Probes of the same run with another fill (the demo's marginal SII game: `*_marginal.json`).
    marginal = _load_probe(wd, e.split, MARGINAL_TAG)
    sec.tables += _present(ground_truth_table(e.dataset, probe, [marginal] if marginal else []))
    so = standout_table(e.dataset, probe)
    if so:
      sec.paragraphs.append(so[0])
      sec.tables.append(so[1])
    sec.figures += _figures(wd.root, "probe", e.split)
  else:
    sec.paragraphs.append(
      f"No probes yet: run `flmoe probe --workdir {wd.root} --split {e.split}`."
    )
  evidence = evidence_section(e.dataset, explain, probe)
  return [sec] + ([evidence] if evidence else [])


def _metadata_section(entries, summaries) -> Section:
  import jax

  import flmoe_jax

  try:
    import flax

    flax_version = flax.__version__
  except Exception:  # noqa: BLE001
    flax_version = "?"
  sec = Section("Run metadata", id="metadata")
  sec.paragraphs.append(
    f"META: created {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}; "
    f"flmoe_jax {flmoe_jax.__version__}, jax {jax.__version__}, flax {flax_version}; "
    f"backend {jax.default_backend()}"
  )
  rows = [["dataset", "model", "run directory", "seeds", "store", "encoders", "selection metric"]]
  for e in entries:
    for name, s in summaries[e.dataset].items():
      if not isinstance(s, TrainSummary):
        continue  # reference points (majority class, one modality) are not runs
      wd = {"FL-I2MoE": e.fl_workdir, "I2MoE": e.i2moe_workdir}.get(name, e.dense_workdir)
      rows.append(
        [
          e.dataset,
          name,
          str(wd),
          ", ".join(map(str, s.seeds)),
          pathlib.Path(s.store).name,
          _encoders(s.store),
          s.selection_metric,
        ]
      )
  sec.tables.append(Table("runs", "Runs", rows))
  for e in entries:
    cfg = _load(RunDir(e.fl_workdir).config) or {}
    m, loss = cfg.get("model", {}), cfg.get("loss", {})
    lambdas = ", ".join(
      f"lambda_{n} {loss.get(f'lambda_{n}', 0.0)}"
      + (f" (from {_extra_start_text(loss)})" if n == "decor" else "")
      for n in choices.EXTRA_LOSS_TERMS
    )
    sec.paragraphs.append(
      f"META: {e.dataset} FL-I2MoE config: hidden {m.get('hidden_dim')}, heads {m.get('num_heads')}, layers "
      f"{m.get('num_layers')}, dropout {m.get('dropout')}, lambda_int {loss.get('lambda_int')}, "
      f"{lambdas}, "
      f"gate warm-up {_gate_warmup_text(cfg.get('optim', {}))}, "
      f"lr {cfg.get('optim', {}).get('learning_rate')} "
      f"({_schedule_text(cfg.get('optim', {}))}), "
      f"epochs {cfg.get('train', {}).get('epochs')}, "
      f"batch {cfg.get('train', {}).get('batch_size')}"
    )
  return sec


def _encoders(store: str) -> str:
  """`modality: encoder` of a store, from its manifest ("-" when the manifest is unreadable)."""
  manifest = _load(pathlib.Path(store) / "manifest.json")
  if not manifest:
    return "-"
  return ", ".join(
    f"{m['name']}: {m.get('encoder') or '-'}" for m in manifest.get("modalities", [])
  )
