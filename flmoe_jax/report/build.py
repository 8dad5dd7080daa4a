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

from flmoe_jax.errors import RunDirError
from flmoe_jax.probes import standout as standout_lib
from flmoe_jax.report.render import Figure, Section, Table, write_report
from flmoe_jax.report.tables import pm, table_a

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
  """

  dataset: str
  fl_workdir: pathlib.Path
  dense_workdir: pathlib.Path | None = None
  split: str = "test"


def _load(path: pathlib.Path) -> dict | None:
  return json.loads(path.read_text()) if path.is_file() else None


def _f(x: float, digits: int = 2) -> str:
  return f"{x:.{digits}f}"


def _faith(block: dict, view: str, output: str) -> dict | None:
  for f in block.get("faithfulness", []):
    if f["view"] == view and f["output"] == output:
      return f
  return None


def table_b(dataset: str, explain: dict) -> Table | None:
  """Table B: comprehensiveness / sufficiency per K, identified vs random, AOPC and gaps (x100)."""
  fl = _faith(explain["model"], "mixture", "mixture")
  dense = _faith(explain["baseline"], "dense", "own") if explain.get("baseline") else None
  if fl is None:
    return None
  models = [("FL-I2MoE", fl)] + ([("Dense", dense)] if dense else [])
  header = ["K (%)"]
  for name, _ in models:
    header += [f"{name} comp id", f"{name} comp rnd", f"{name} suff id", f"{name} suff rnd"]
  rows = [header]
  for i, k in enumerate(fl["ks"]):
    row = [f"{k:g}"]
    for _, f in models:
      row += [
        pm(f[key][i]["mean"], f[key][i]["std"], 1)
        for key in ("comp", "comp_random", "suff", "suff_random")
      ]
    rows.append(row)
  row = ["AOPC"]
  for _, f in models:
    a = f["aopc"]
    row += [
      pm(a[key]["mean"], a[key]["std"], 1) for key in ("comp", "comp_random", "suff", "suff_random")
    ]
  rows.append(row)
  row = ["gap (comp: id-rnd, suff: rnd-id)"]
  for _, f in models:
    a = f["aopc"]
    row += [
      pm(a["comp_gap"]["mean"], a["comp_gap"]["std"], 1),
      "",
      pm(a["suff_gap"]["mean"], a["suff_gap"]["std"], 1),
      "",
    ]
  rows.append(row)
  return Table(
    f"table-b-{dataset}",
    f"Table B ({dataset}, {explain['settings']['split']} split, {explain['settings']['method']}, "
    f"{explain['settings']['fill']} fill): masking faithfulness x100, mean ± std over seeds",
    rows,
  )


def table_b_experts(dataset: str, explain: dict) -> Table:
  """Expert-wise faithfulness: each expert's own map, drop of its own output and of the mixture."""
  rows = [["map", "output", "comp AOPC", "comp gap", "suff AOPC", "suff gap"]]
  for f in explain["model"]["faithfulness"]:
    a = f["aopc"]
    rows.append(
      [
        f["view"],
        f["output"],
        pm(a["comp"]["mean"], a["comp"]["std"], 1),
        pm(a["comp_gap"]["mean"], a["comp_gap"]["std"], 1),
        pm(a["suff"]["mean"], a["suff"]["std"], 1),
        pm(a["suff_gap"]["mean"], a["suff_gap"]["std"], 1),
      ]
    )
  return Table(f"table-b-experts-{dataset}", f"Expert-wise faithfulness ({dataset}), x100", rows)


def _conc(block: dict, view: str) -> dict[str, dict]:
  return {c["modality"]: c for c in block.get("concentration", []) if c["view"] == view}


def c1_verdict(dataset: str, explain: dict) -> tuple[str, Table]:
  """C1: FL-I2MoE maps more concentrated (lower entropy, higher Gini) than the dense transformer's."""
  fl, dense = _conc(explain["model"], "mixture"), _conc(explain.get("baseline") or {}, "dense")
  rows = [["modality", "FL entropy", "dense entropy", "FL Gini", "dense Gini"]]
  wins = []
  for mod, c in fl.items():
    if mod not in dense:
      continue
    d = dense[mod]
    rows.append(
      [
        mod,
        _f(c["entropy"]["mean"], 3),
        _f(d["entropy"]["mean"], 3),
        _f(c["gini"]["mean"], 3),
        _f(d["gini"]["mean"], 3),
      ]
    )
    wins.append(
      c["entropy"]["mean"] < d["entropy"]["mean"] and c["gini"]["mean"] > d["gini"]["mean"]
    )
  overlaps = [
    np.mean([v["mean"] for v in s["jaccard"]]) for s in explain["model"].get("specificity", [])
  ]
  table = Table(
    f"c1-{dataset}",
    f"C1 evidence ({dataset}): concentration of the mixture map vs the dense map",
    rows,
  )
  if not wins:
    return f"C1 ({dataset}): not evaluated (no dense baseline explained)", table
  spec = f"; mean cross-expert top-K Jaccard overlap {np.mean(overlaps):.2f}" if overlaps else ""
  if all(wins):
    return (
      f"PASS: C1 ({dataset}): FL-I2MoE's map is more concentrated than the dense map on every modality{spec}.",
      table,
    )
  return (
    f"FAIL: C1 ({dataset}): FL-I2MoE's map is not more concentrated than the dense map on every modality{spec}.",
    table,
  )


def table_c(dataset: str, probe: dict) -> Table:
  """Table C: pair masking, drop in target probability (x100) and in the metric vs budget."""
  pmk = probe["pair_masking"]
  rows = [
    ["budget (pairs)"] + [f"{idx} {k}" for idx in ("SII", "RG") for k in ("ranked", "random")]
  ]
  for i, b in enumerate(pmk["budgets"]):
    row = [str(b)]
    for idx in ("SII", "RG"):
      blk = pmk[idx]
      row += [
        f"{100 * blk['ranked']['prob_drop'][i]:.1f} ({100 * blk['ranked']['metric_drop'][i]:.1f})",
        f"{100 * blk['random']['prob_drop'][i]:.1f} ({100 * blk['random']['metric_drop'][i]:.1f})",
      ]
    rows.append(row)
  return Table(
    f"table-c-{dataset}",
    f"Table C ({dataset}): pair masking in the full model, drop of the target probability x100 "
    f"(drop of {pmk['metric']} x100 in brackets); random = matched unique-token counts, {pmk['repeats']} repeats",
    rows,
  )


def c2_verdict(dataset: str, probe: dict) -> str:
  pmk = probe["pair_masking"]
  parts, ok = [], True
  for idx in ("SII", "RG"):
    beats = pmk[idx]["ranked_beats_random"]
    ok &= all(beats)
    parts.append(f"{idx}: ranked > random at {sum(beats)}/{len(beats)} budgets")
  tag = "PASS" if ok else "FAIL"
  verdict = (
    "ranked > random at every budget"
    if ok
    else "ranked pairs do not beat random pairs at every budget"
  )
  return f"{tag}: C2 ({dataset}): {verdict} ({'; '.join(parts)})."


def _game_fill(probe: dict, pair: dict) -> str:
  """The fill of the game that scored a planted pair (files before per-game fills: `fill`)."""
  settings = probe.get("settings", {})
  index = "SII" if str(pair.get("probe", "")).startswith("SII") else "RG"
  return settings.get("fills", {}).get(index) or settings.get("fill", "mean")


def ground_truth_table(dataset: str, probe: dict, others: Sequence[dict] = ()) -> Table | None:
  """Planted pairs recovered, per probe and scale; `others` are probes of the same run with other
  fills (e.g. the demo's marginal SII game), of which only the rows with another fill are shown."""
  planted = probe.get("planted")
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
      "in candidates",
    ]
  ]
  main_fill = {name: _game_fill(probe, p) for name, p in planted["pairs"].items()}
  for q in (probe, *others):
    for name, p in q.get("planted", {}).get("pairs", {}).items():
      fill = _game_fill(q, p)
      if q is not probe and fill == main_fill.get(name):
        continue
      for scale in ("logit", "prob", "logodds"):
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
              _f(p["in_candidates"], 2),
            ]
          )
  setting = planted.get("setting", "?")
  return Table(
    f"ground-truth-{dataset}",
    f"Planted pairs recovered ({dataset}, generator setting {setting!r}, per test sample; hit@1 ranks "
    "by the signed score, |.| hit@1 by its magnitude; called: first by the signed log-odds score with at "
    "least the probe's min_effect nats (docs/probes.md); fill: "
    "what 'absent' means in the probed game, mean fill or the marginal game over reference examples, "
    "docs/probes.md)",
    rows,
  )


def standout_table(
  dataset: str, probe: dict, *, rows_per_index: int = 3
) -> tuple[str, Table] | None:
  """Pairs that rank first across examples in a material share of them (the across-example null test).

  Returns a one-line summary and a table of the most frequent first places per index, or None for
  probe files written before the test existed.
  """
  so = probe.get("standout", {})
  if not all("dataset" in so.get(i, {}) for i in ("SII", "RG")):
    return None
  names = probe["settings"].get("modalities") or []
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
    ds = blk["dataset"]
    expert = probe["settings"]["experts"]["sii" if idx == "SII" else "rg"]
    parts.append(f"{idx} on {expert}: {standout_lib.describe(ds, names)}")
    for p in ds["pairs"][:rows_per_index]:
      rows.append(
        [
          idx,
          expert,
          blk["scale"],
          label(p["pair"]),
          f"{100 * p['rate']:.1f}% +/- {100 * p['se']:.1f} (n={p['n']})",
          f"{100 * p['chance']:.1f}%",
          f"{p['mean_abs']:.3g}" if "mean_abs" in p else "-",
          f"{p['p_chance_holm']:.2g}",
          "yes" if p["stands_out"] else "no",
        ]
      )
  first = so["SII"]["dataset"]
  summary = (
    f"Pairs that stand out across examples ({dataset}, {first['n_examples']} examples, ranked by "
    f"magnitude): first in significantly more than {100 * first['min_rate']:.0f}% of the examples "
    f"and more than chance (one-sided binomial, Holm, alpha {first['alpha']:g}): "
    + "; ".join(parts)
    + "."
  )
  table = Table(
    f"standout-{dataset}",
    f"Most frequent top pairs across examples ({dataset}): share of examples where the pair ranks "
    "first (+/- binomial SE), the chance rate (1 / candidate pairs), the pair's mean absolute score "
    "(its size beside the rank), the Holm-adjusted p-value "
    "against chance, and whether the pair stands out (first in significantly more than "
    f"{100 * first['min_rate']:.0f}% of the examples)",
    rows,
  )
  return summary, table


# Which expert's map should find each kind of planted write (the other views are shown for contrast).
_RELEVANT = {"synergy": "syn", "redundancy": "red", "uniq_text": "uni_0", "uniq_image": "uni_1"}


def planted_positions_table(dataset: str, explain: dict) -> Table | None:
  """Synthetic stores: how often each planted token/patch is in each map's top-K% (largest K)."""
  planted = explain.get("model", {}).get("planted") or []
  if not planted:
    return None
  ks = explain.get("settings", {}).get("ks") or [None]
  views: list[str] = []
  rows_by_pos: dict[tuple, dict] = {}
  for p in planted:
    if p["view"] not in views:
      views.append(p["view"])
    key = (p["mechanism"], p["kind"], p["modality"], p["position"])
    entry = rows_by_pos.setdefault(key, {"chance": p["chance"][-1]})
    entry[p["view"]] = p["hit_rate"][-1]["mean"]
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
    weight at the selected checkpoint, or None), "probe", "scale", "hit@1", "abs_hit@1", "chance"}.
    Runs without a summary or a planted probe are left out.
  """
  out = []
  for setting, wd in runs:
    wd = pathlib.Path(wd)
    summary, probe = _load(wd / "summary.json"), _load(wd / "probe" / f"{split}.json")
    if summary is None or probe is None or "planted" not in probe:
      continue
    p = next((q for q in probe["planted"]["pairs"].values() if q["kind"] == setting), None)
    if p is None:
      continue
    test = next(iter(summary["seeds"].values()))["test"]
    # The expert order of FL-I2MoE: uni_0..uni_{M-1}, syn, red (weight_i follows it).
    n_experts = sum(k.startswith("weight_") for k in test)
    names = [f"uni_{i}" for i in range(n_experts - 2)] + ["syn", "red"]
    expert = p.get("expert")
    weight = test.get(f"weight_{names.index(expert)}") if expert in names else None
    for scale in ("logit", "prob"):
      if scale in p:
        out.append(
          {
            "setting": setting,
            "accuracy": 100 * summary["mean_std"]["test"]["accuracy"]["mean"],
            "expert": expert,
            "weight": weight,
            "probe": p["probe"],
            "scale": scale,
            "hit@1": p[scale]["hit@1"],
            "abs_hit@1": p[scale].get("abs_hit@1"),
            "chance": p[scale].get("chance_hit@1"),
          }
        )
  return out


def pure_settings_table(results: Sequence[dict], split: str = "test") -> Table:
  """The table of `pure_setting_results`."""
  nan = float("nan")
  rows = [
    ["setting", "test accuracy", "target expert", "its mean weight (selected checkpoint)", "probe",
     "scale", "hit@1", "|.| hit@1", "chance"]
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
        _f(nan if r["chance"] is None else r["chance"], 3),
      ]
    )
  return Table(
    "ground-truth-pure",
    f"Planted pair recovered by its own expert in the generator's pure settings ({split} split, one "
    "seed; in `synergy` only the XOR pair decides the label, in `redundancy` only the copied pair)",
    rows,
  )


def objective_line(dataset: str, cfg: dict) -> str:
  """One sentence naming the training objective of a run (the paper's or this library's extension)."""
  loss, optim = cfg.get("loss", {}), cfg.get("optim", {})
  lam_int, lam_role = loss.get("lambda_int", 0.0), loss.get("lambda_role", 0.0)
  lam_miss, lam_decor = loss.get("lambda_missing", 0.0), loss.get("lambda_decor", 0.0)
  lam_red = loss.get("lambda_red_alone", 0.0)
  warm = optim.get("gate_warmup_steps", 0)
  warm_frac = optim.get("gate_warmup_fraction", 0.0)
  if not (lam_role or lam_miss or lam_decor or lam_red or warm or warm_frac):
    return f"Objective ({dataset}): the paper's (task + {lam_int} x noise-perturbation interaction losses)."
  parts = ["task"]
  if lam_int:
    parts.append(f"{lam_int} x the paper's interaction losses")
  for lam, name in (
    (lam_role, "role consistency"),
    (lam_miss, "missing-modality task loss"),
    (lam_decor, "uniqueness decorrelation"),
    (lam_red, "the redundancy expert's own task loss with one modality absent"),
  ):
    if lam:
      parts.append(f"{lam} x {name} (beyond the paper)")
  extra = ""
  if warm or warm_frac:
    extra = f"; gate frozen for the first {_gate_warmup_text(optim)} (beyond the paper)"
  if (loss.get("extra_start_step", 0) or loss.get("extra_start_fraction", 0.0)) and (
    lam_miss or lam_decor
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


def _extra_start_text(loss: dict) -> str:
  return _steps_or_share(
    loss.get("extra_start_step", 0), loss.get("extra_start_fraction", 0.0), "step {}"
  )


def _run_summary(workdir: str | os.PathLike, role: str) -> dict:
  """The summary.json of a finished run; RunDirError naming the directory when there is none.

  Args:
    workdir: the run directory.
    role: `run` or `baseline`, for the message.
  """
  wd = pathlib.Path(workdir)
  flag = "--baseline" if role == "baseline" else "--workdir"
  if not wd.exists():
    raise RunDirError(f"{role} directory {wd} does not exist (check {flag})")
  if not wd.is_dir():
    raise RunDirError(f"{role} directory {wd} is a file, not a run directory (check {flag})")
  path = wd / "summary.json"
  if not path.is_file():
    raise RunDirError(
      f"{role} directory {wd} has no summary.json: not a finished run (train it first, or check "
      f"{flag})"
    )
  try:
    summary = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise RunDirError(f"{path}: not valid JSON ({e}); rerun the training to rewrite it") from None
  if not isinstance(summary, dict):
    raise RunDirError(f"{path}: not a run summary (a JSON object); rerun the training")
  return summary


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
  summaries, verdicts, sections = {}, [], []
  # Everything is read and checked before anything is written.
  for e in entries:
    fl = _run_summary(e.fl_workdir, "run")
    dense = _run_summary(e.dense_workdir, "baseline") if e.dense_workdir is not None else None
    summaries[e.dataset] = {"Dense Transformer": dense, "FL-I2MoE": fl}
  _check_out_dir(pathlib.Path(out_dir))

  overview = Section("Overview", id="overview")
  sections.append(overview)
  sections.append(Section("Table A: task performance", tables=[table_a(summaries)], id="table-a"))

  for e in entries:
    wd = pathlib.Path(e.fl_workdir)
    explain = _load(wd / "explain" / f"{e.split}.json")
    probe = _load(wd / "probe" / f"{e.split}.json")
    sec = Section(f"{e.dataset}: explanations and probes", id=f"dataset-{e.dataset}")
    sec.paragraphs.append(objective_line(e.dataset, _load(wd / "config.json") or {}))
    if explain:
      tb = table_b(e.dataset, explain)
      if tb:
        sec.tables.append(tb)
      sec.tables.append(table_b_experts(e.dataset, explain))
      verdict, c1_table = c1_verdict(e.dataset, explain)
      verdicts.append(verdict)
      sec.paragraphs.append(verdict)
      sec.tables.append(c1_table)
      pp = planted_positions_table(e.dataset, explain)
      if pp:
        sec.tables.append(pp)
      sec.figures += _figures(wd, "explain", e.split)
    else:
      sec.paragraphs.append(
        f"No explanations yet: run `flmoe explain --workdir {wd} --split {e.split}`."
      )
    if probe:
      sec.tables.append(table_c(e.dataset, probe))
      verdict = c2_verdict(e.dataset, probe)
      verdicts.append(verdict)
      sec.paragraphs.append(verdict)
      # Probes of the same run with another fill (the demo's marginal SII game: `*_marginal.json`).
      marginal = _load(wd / "probe" / f"{e.split}_{MARGINAL_TAG}.json")
      gt = ground_truth_table(e.dataset, probe, [marginal] if marginal else [])
      if gt:
        sec.tables.append(gt)
      so = standout_table(e.dataset, probe)
      if so:
        sec.paragraphs.append(so[0])
        sec.tables.append(so[1])
      sec.figures += _figures(wd, "probe", e.split)
    else:
      sec.paragraphs.append(f"No probes yet: run `flmoe probe --workdir {wd} --split {e.split}`.")
    sections.append(sec)

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
  rows = [["dataset", "model", "run directory", "seeds", "store", "selection metric"]]
  for e in entries:
    for name, s in summaries[e.dataset].items():
      if s is None:
        continue
      wd = e.fl_workdir if name == "FL-I2MoE" else e.dense_workdir
      rows.append(
        [
          e.dataset,
          name,
          str(wd),
          ", ".join(s["seeds"]),
          pathlib.Path(s["store"]).name,
          s["selection_metric"],
        ]
      )
  sec.tables.append(Table("runs", "Runs", rows))
  for e in entries:
    cfg = _load(pathlib.Path(e.fl_workdir) / "config.json") or {}
    m = cfg.get("model", {})
    sec.paragraphs.append(
      f"META: {e.dataset} FL-I2MoE config: hidden {m.get('hidden_dim')}, heads {m.get('num_heads')}, layers "
      f"{m.get('num_layers')}, dropout {m.get('dropout')}, lambda_int {cfg.get('loss', {}).get('lambda_int')}, "
      f"lambda_role {cfg.get('loss', {}).get('lambda_role', 0.0)}, "
      f"lambda_missing {cfg.get('loss', {}).get('lambda_missing', 0.0)}, "
      f"lambda_decor {cfg.get('loss', {}).get('lambda_decor', 0.0)} "
      f"(from {_extra_start_text(cfg.get('loss', {}))}), "
      f"lambda_red_alone {cfg.get('loss', {}).get('lambda_red_alone', 0.0)}, "
      f"gate warm-up {_gate_warmup_text(cfg.get('optim', {}))}, "
      f"lr {cfg.get('optim', {}).get('learning_rate')} "
      f"({cfg.get('optim', {}).get('schedule', 'constant')} schedule), "
      f"epochs {cfg.get('train', {}).get('epochs')}, "
      f"batch {cfg.get('train', {}).get('batch_size')}"
    )
  return sec
