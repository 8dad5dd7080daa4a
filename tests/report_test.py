"""The report: tables and verdicts from run outputs, and a headless browser that loads every image."""

import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from flmoe_jax import significance
from flmoe_jax.report import ReportEntry, build_report
from flmoe_jax.report.render import Figure, Section, Table, write_report


def _png(path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(2, 2))
  ax.imshow(np.arange(9).reshape(3, 3))
  fig.savefig(path)
  plt.close(fig)
  return path


def _ms(mean, std=0.0):
  return {"mean": mean, "std": std, "values": [mean]}


def _seed(seed, **test):
  """A seed's result: its test metrics `test` (accuracy 0.9 by default)."""
  test = {"accuracy": 0.9} | test
  return dict(
    seed=seed, best_epoch=1, selection_metric="accuracy", best_val=test, test=test
  ) | dict(steps=10, num_parameters=100)


def _summary(task="binary", acc=0.9):
  return {
    "name": "x",
    "model": "fl_i2moe",
    "store": "/s",
    "task": task,
    "selection_metric": "accuracy",
    "seeds": {"0": _seed(0), "1": _seed(1)},
    "mean_std": {
      "test": {"accuracy": _ms(acc, 0.01), "macro_f1": _ms(acc), "auroc": _ms(0.95)},
      "best_val": {"accuracy": _ms(acc)},
    },
  }


def _faith(view, output, comp, rnd):
  ks = [5, 10]
  blk = lambda v: [_ms(v), _ms(v + 1)]  # noqa: E731
  aopc = {
    k: _ms(v)
    for k, v in dict(
      comp=comp,
      comp_random=rnd,
      suff=rnd,
      suff_random=comp,
      comp_gap=comp - rnd,
      suff_gap=comp - rnd,
    ).items()
  }
  return {
    "view": view,
    "output": output,
    "ks": ks,
    "comp": blk(comp),
    "comp_random": blk(rnd),
    "suff": blk(rnd),
    "suff_random": blk(comp),
    "comp_gap": blk(comp - rnd),
    "suff_gap": blk(comp - rnd),
    "aopc": aopc,
    # Trapezoid areas: distinct values (aopc + 0.5), so that the row can only come from this field.
    "aopc_trapezoid": {k: _ms(v["mean"] + 0.5) for k, v in aopc.items()},
  }


def _model(kind="fl_i2moe", **sections):
  """An explain file's model block: `sections` (faithfulness, concentration, ...) over defaults."""
  return {
    "workdir": "w",
    "name": "x",
    "kind": kind,
    "seeds": [0, 1, 2],
    "expert_names": ["uni_0", "uni_1", "syn", "red"] if kind == "fl_i2moe" else ["dense"],
    "num_examples": 100,
    "faithfulness": [],
    "concentration": [],
    "specificity": [],
    "expert_weights": [],
    **sections,
  }


def _explain_doc(model, baseline):
  """A complete `flmoe-explain` document (the report reads typed artifacts only)."""
  settings = {"split": "test", "method": "attnxgrad", "fill": "mean", "ks": [5.0, 25.0]}
  settings |= dict(target="pred", samples=100, seeds="all", repeats=5, random_seed=0)
  settings |= dict(batch_size=8, steps_per_call=None, ig_steps=16, ig_baseline="mean")
  doc = {"format": "flmoe-explain", "version": 3, "settings": settings, "store": "/s"}
  return doc | {"model": model, "baseline": baseline}


_PROBE_SETTINGS = dict(
  samples=100, budget=5184, n_draws=16, pairs="all", k=8, n_random_pairs=64, n_pairs_padded=81,
  seed=0, antithetic=True, estimator="monte-carlo-antithetic", exact=False,
  max_coalitions_per_call=4096, fill="mean", fills={"SII": "mean", "RG": "mean", "pair_masking": "mean"},
  se_includes_references={"SII": [], "RG": []}, references=None, reference_rows=None,
  target_source="pred", attribution=None, mask_budgets=[1, 2], mask_repeats=10,
  sii_rank_score="logodds", rg_rank_score="logodds", standout_min_rate=0.1, min_effect=0.25,
  attention="einsum", indices=["SII", "RG", "RG-additive", "RG-full"],
  scales=["logit", "prob", "logodds", "logprob"], experts={"sii": "syn", "rg": "red"},
  modalities=["text", "image"], kinds=["tokens", "patches"],
)  # fmt: skip


def _probe_doc(settings=None, **sections):
  """A complete `flmoe-probe` document: `sections` and `settings` over minimal defaults."""
  run = dict(workdir="w", seed=0, which="best", checkpoint={}, config_name="x", store="/s")
  timing = dict(total_s=1.0, mc_s=0.5, expert_evaluations=10, expert_evaluations_per_s=20)
  doc = {"format": "flmoe-probe", "version": 2, "run": run | {"model": "FLI2MoE"}}
  doc |= {"split": "test", "settings": _PROBE_SETTINGS | (settings or {}), "samples": []}
  doc |= {"standout": {}, "timing": timing}
  return doc | sections


def _seeds(mean, spread=0.01):
  """Three seeds around `mean` (sample std = `spread`)."""
  v = [mean - spread, mean, mean + spread]
  return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "values": v}


def _conc(view, ent, gini, raw=True, spread=0.01):
  """Concentration rows of one view; `ent` is a number or {modality: number}."""
  out = []
  for m in ("text", "image"):
    e = ent[m] if isinstance(ent, dict) else ent
    row = {"view": view, "modality": m, "entropy": _seeds(e, spread), "gini": _seeds(gini, spread)}
    row |= {"top_mass": [], "mass_share": _seeds(0.5, spread)}
    if raw:
      row |= {"entropy_raw": _seeds(e + 0.1, spread), "gini_raw": _seeds(gini - 0.1, spread)}
    out.append(row)
  return out


def _spec(a, b, jac):
  return {
    "a": a,
    "b": b,
    "modality": "text",
    "jaccard": [_seeds(jac), _seeds(jac)],
    "cosine": _seeds(0.5),
  }


def pair_masking(n: int, gaps, seed: int = 0) -> dict:
  """A probe's pair-masking block over n examples whose ranked drop exceeds a random control's by
  `gaps` [index (SII, RG), budget] on average (per-example noise SD 0.05), tested as the probe does."""
  rng = np.random.default_rng(seed)
  control = rng.uniform(0.0, 0.2, size=(n, 2, 2))
  ranked = control + np.asarray(gaps, float)[None] + rng.normal(0.0, 0.05, size=(n, 2, 2))
  tests = significance.beats_control(ranked, control)
  block = lambda x: {  # noqa: E731
    "prob_drop": x.mean(0).tolist(),
    "prob_drop_se": (x.std(0) / np.sqrt(n)).tolist(),
    "metric": (0.9 - x.mean(0) / 2).tolist(),
    "metric_drop": (x.mean(0) / 2).tolist(),
  }
  out = {
    "budgets": [1, 2],
    "repeats": 10,
    "metric": "accuracy",
    "clean_metric": 0.9,
    "clean_prob": 0.8,
    "n": n,
    "alpha": significance.DEFAULT_ALPHA,
    "min_examples": significance.MIN_EXAMPLES,
    "test": significance.TEST_NAME,
    "controls": {"random": "random tokens of the candidate pairs", "random_all": "random tokens"},
  }
  for i, idx in enumerate(("SII", "RG")):
    out[idx] = {
      "expert": "syn" if idx == "SII" else "red",
      "rank_score": "logodds",
      "mean_unique_tokens": [[1.0, 1.0], [2.0, 2.0]],
      "ranked": block(ranked[:, i]),
      "random": {**block(control[:, i]), **tests[i]},
      "random_all": block(control[:, i] / 2),
    }
  return out


def make_run(root: pathlib.Path, *, n_examples: int = 100, gaps=((0.1, 0.1), (0.1, 0.1))):
  fl, dense = root / "fl", root / "dense"
  for d in (fl / "explain", fl / "probe", dense):
    d.mkdir(parents=True)
  (fl / "summary.json").write_text(json.dumps(_summary(acc=0.97)))
  (dense / "summary.json").write_text(json.dumps(_summary(acc=0.93)))
  (fl / "config.json").write_text(
    json.dumps(
      {
        "model": {"hidden_dim": 32},
        "loss": {"lambda_int": 0.0, "lambda_role": 1.0},
        "optim": {"gate_warmup_steps": 500},
      }
    )
  )
  hit = lambda v: {"mean": v, "std": None, "values": [v]}  # noqa: E731
  planted = [
    {"mechanism": "syn0", "kind": "synergy", "modality": "text", "position": 2, "view": view,
     "hit_rate": [hit(0.5), hit(v)], "chance": [0.2, 0.3]}
    for view, v in (("syn", 0.81), ("mixture", 0.56))
  ]  # fmt: skip
  explain = _explain_doc(
    _model(
      faithfulness=[_faith("mixture", "mixture", 40.0, 10.0), _faith("syn", "own", 20.0, 8.0)],
      concentration=_conc("mixture", 0.6, 0.5) + _conc("syn", 0.5, 0.6),
      specificity=[_spec("syn", "red", 0.2)],
      planted=planted,
    ),
    _model(
      "dense",
      faithfulness=[_faith("dense", "own", 30.0, 10.0)],
      concentration=_conc("dense", 0.7, 0.4),
    ),
  )
  (fl / "explain" / "test.json").write_text(json.dumps(explain))
  probe = _probe_doc(
    pair_masking=pair_masking(n_examples, gaps),
    planted={
      "pairs": {
        "syn0": {
          "kind": "synergy",
          "probe": "SII",
          "in_candidates": 1.0,
          "logit": {"hit@1": 0.95, "mrr": 0.97},
          "logodds": {
            "hit@1": 0.9,
            "mrr": 0.95,
            "pair_auroc": 0.987,
            "pair_ap": 0.95,
            "global_auroc": 0.996,
            "called@1": 0.85,
          },
        }
      },
      "type_auroc": {
        "SII": {"logodds": 0.93},
        "RG": {"logodds": 0.88},
        "n_synergy": 100,
        "n_redundancy": 100,
      },
    },
  )

  def dataset_test(pairs, by="abs"):
    n_pref = sum(p["prefers"] for p in pairs)
    return {
      "by": by,
      "alpha": 0.05,
      "min_rate": 0.1,
      "test": "one-sided binomial",
      "n_examples": 100,
      "n_skipped_non_finite": 0,
      "n_pairs": 81,
      "n_preferred": n_pref,
      "n_standouts": sum(p["stands_out"] for p in pairs),
      "min_detectable_rate": 0.22,
      "min_value": None,
      "n_no_call": 0,
      "pairs": pairs,
    }

  hit = {
    "pair": [0, 2, 1, 0],
    "n": 100,
    "firsts": 92.0,
    "rate": 0.92,
    "se": 0.027,
    "chance": 0.0123,
    "mean_abs": 4.9,
    "p_chance": 1e-152,
    "p": 1e-40,
    "p_holm": 1e-38,
  }

  def index_standout(scale, pairs):
    per_example = dict(
      frac_top_separated=0.8, frac_pairs_significant=0.3, median_top_z=10.0, mean_abs_top=5.0
    )
    test = dataset_test(pairs)
    signed = dataset_test(pairs, by="signed")
    return {"scale": scale, **per_example, "dataset": test, "dataset_signed": signed}

  probe["standout"] = {
    "SII": index_standout(
      "logit", [{**hit, "p_chance_holm": 1e-150, "prefers": True, "stands_out": True}]
    ),
    "RG": index_standout(
      "prob",
      [
        {
          **hit,
          "rate": 0.08,
          "p_chance_holm": 0.001,
          "p_holm": 0.4,
          "prefers": True,
          "stands_out": False,
        }
      ],
    ),
  }
  (fl / "probe" / "test.json").write_text(json.dumps(probe))
  _png(fl / "explain" / "test_masking.png")
  _png(fl / "probe" / "test_heatmap_0.png")
  return fl, dense


def test_tables_and_verdicts(tmp_path):
  fl, dense = make_run(tmp_path)
  out = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")
  assert out["verdicts"][0].startswith("PASS: C1 (synthetic)")
  c2 = out["verdicts"][1]
  assert c2.startswith(
    "PASS: C2 (synthetic): ranked pairs hurt the model more than random pairs at every budget"
  )
  assert "n = 100 examples" in c2 and "paired t-test" in c2 and "SII: b=1: +" in c2
  html = out["html"].read_text()
  for tid in (
    "table-a",
    "table-b-synthetic",
    "table-c-synthetic",
    "ground-truth-synthetic",
    "planted-positions-synthetic",
    "standout-synthetic",
  ):
    assert f'id="{tid}"' in html
  # The across-example null test: the standout is named, the null index says what it could resolve.
  assert (
    "SII on syn: 1 (text 2 x image 0 (92%)); RG on red: none (a pair first in 22% of examples "
    "would), and 1 other pair(s) first more often than chance only." in html
  )
  md = out["md"].read_text()
  assert (
    "| SII | syn | logit | text 2 x image 0 | 92.0% +/- 2.7 (n=100) | 1.2% | 4.9 | 1e-150 | yes |"
    in md
  )
  # The planted-position row: relevant map `syn`, the largest K's hit rates per view, the chance.
  assert "| syn0 | synergy | text | 2 | syn | 0.81 | 0.56 | 0.30 |" in md
  assert "role consistency (beyond the paper); gate frozen for the first 500 steps" in md
  assert "97.00 ± 1.00" in html and "93.00 ± 1.00" in html  # Table A, x100
  assert html.count("data:image/png;base64,") == 2
  md = out["md"].read_text()
  assert "| dataset | model | metric |" in md and "report_files/test_masking.png" in md
  assert (tmp_path / "report" / "report_files" / "test_heatmap_0.png").exists()


def test_ground_truth_table_shows_the_detector_scores(tmp_path):
  fl, dense = make_run(tmp_path)
  md = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")["md"].read_text()
  assert (
    "| syn0 | synergy | SII | mean | logodds | 0.900 | nan | 0.950 | 0.850 | nan | 0.987 | 0.950 "
    "| 0.996 | 1.00 |" in md
  )
  assert "type AUROC over 100 synergy and 100 redundant" in md and "synergy game 0.93" in md


def test_ground_truth_table_shows_a_second_fill(tmp_path):
  # A marginal-fill probe of the same run (the demo's `test_marginal.json`) adds its SII rows only.
  fl, dense = make_run(tmp_path)
  probe = json.loads((fl / "probe" / "test.json").read_text())
  probe["settings"]["fills"] = {"SII": "marginal", "RG": "mean", "pair_masking": "mean"}
  probe["planted"]["pairs"]["syn0"]["logit"] = {"hit@1": 0.77, "abs_hit@1": 0.97, "mrr": 0.98}
  probe["planted"]["pairs"]["syn0"]["logodds"] = {
    "hit@1": 0.77,
    "abs_hit@1": 0.97,
    "mrr": 0.98,
    "called@1": 0.75,
  }
  probe["planted"]["pairs"]["red0"] = {
    "kind": "redundancy",
    "probe": "RG of the red game",
    "in_candidates": 1.0,
    "prob": {"hit@1": 0.5, "mrr": 0.6},
  }
  (fl / "probe" / "test_marginal.json").write_text(json.dumps(probe))
  main = json.loads((fl / "probe" / "test.json").read_text())
  main["planted"]["pairs"]["red0"] = probe["planted"]["pairs"]["red0"]
  (fl / "probe" / "test.json").write_text(json.dumps(main))
  md = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")["md"].read_text()
  assert "| syn0 | synergy | SII | mean | logit | 0.950 |" in md  # the main probe (mean fills)
  assert "| syn0 | synergy | SII | marginal | logit | 0.770 | 0.970 | 0.980 | - |" in md
  # The log-odds row carries the calls (first by sign and at least min_effect nats).
  assert "| syn0 | synergy | SII | marginal | logodds | 0.770 | 0.970 | 0.980 | 0.750 |" in md
  assert md.count("| red0 |") == 1  # same fill as the main probe's RG game: not repeated


def _c2(tmp_path, **kwargs) -> str:
  fl, dense = make_run(tmp_path, **kwargs)
  return build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")["verdicts"][1]


def _c1(tmp_path, fl_conc=None, dense_conc=None):
  fl, dense = make_run(tmp_path)
  explain = json.loads((fl / "explain" / "test.json").read_text())
  if fl_conc is not None:
    explain["model"]["concentration"] = fl_conc
  if dense_conc is not None:
    explain["baseline"]["concentration"] = dense_conc
  (fl / "explain" / "test.json").write_text(json.dumps(explain))
  return build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")["verdicts"][0]


def test_c1_passes_with_every_view_concentrated_and_states_its_statistics(tmp_path):
  c1 = _c1(tmp_path)  # mixture 0.6 and syn 0.5 vs dense 0.7, three seeds each, std 0.01
  assert c1.startswith("PASS: C1 (synthetic)")
  assert "8 cells" in c1 and "8 more concentrated, 0 less, 0 not resolved" in c1
  assert "3 vs 3 seeds" in c1 and "PASS needs all 8: an intersection-union test" in c1
  assert "higher at Holm-adjusted p < 0.05 over the 8 cells" in c1
  assert "Jaccard overlap of the experts' maps 0.20 [" in c1  # specificity, with its seed interval


def test_c1_fails_when_one_expert_map_is_flatter_on_one_modality(tmp_path):
  """The mixture beats the dense map; one expert's text map is flatter: the claim fails for it."""
  fl_conc = _conc("mixture", 0.6, 0.5) + _conc("syn", {"text": 0.8, "image": 0.5}, 0.6)
  c1 = _c1(tmp_path, fl_conc=fl_conc)
  assert c1.startswith("FAIL: C1 (synthetic)") and "syn 2/2/0" in c1 and "mixture 4/0/0" in c1


def test_c1_higher_cells_are_adjusted_over_the_cells(tmp_path):
  """One cell 0.04 above the dense map (3 seeds, std 0.01): significant on its own (p 0.01), not
  after Holm over 8 cells; one such cell in 8 is what chance gives, so no FAIL."""
  fl_conc = _conc("mixture", 0.6, 0.5) + _conc("syn", {"text": 0.74, "image": 0.5}, 0.6)
  one = significance.diff_test([0.73, 0.74, 0.75], [0.69, 0.70, 0.71], 0.01)
  assert one["p_higher"] < 0.05  # unadjusted: "significantly less concentrated"
  c1 = _c1(tmp_path, fl_conc=fl_conc)
  assert (
    c1.startswith("NOT SHOWN: C1 (synthetic): not every FL-I2MoE map") and "syn 2/0/2" in c1
  )  # text: both map forms


def test_c1_pass_is_an_intersection_union_test(tmp_path):
  """Every cell 0.04 below the dense map (3 seeds, std 0.01): each one-sided test has p 0.01, so
  all of them together hold at 5% (Berger's intersection-union test) and C1 passes, where
  simultaneous Bonferroni intervals over the 8 cells (the earlier rule) still include 0."""
  fl_conc = _conc("mixture", 0.66, 0.5) + _conc("syn", 0.66, 0.6)
  a, b = [0.65, 0.66, 0.67], [0.69, 0.70, 0.71]
  assert significance.diff_ci(a, b, 1 - 0.05 / 8)[2] > 0
  assert significance.diff_test(a, b, 0.01)["p_lower"] < 0.05
  c1 = _c1(tmp_path, fl_conc=fl_conc)
  assert c1.startswith("PASS: C1 (synthetic)") and "8 more concentrated, 0 less" in c1


def test_diff_test_is_welchs_one_sided_test_beyond_the_margin():
  from scipy import stats

  a, b = [0.61, 0.64, 0.6, 0.66], [0.7, 0.69, 0.73]
  got = significance.diff_test(a, b, 0.01)
  shifted = [x + 0.01 for x in a]  # H0: d >= -0.01  <=>  mean(a + 0.01) >= mean(b)
  want = stats.ttest_ind(shifted, b, equal_var=False, alternative="less").pvalue
  assert got["p_lower"] == pytest.approx(want, rel=1e-9)
  want = stats.ttest_ind([x - 0.01 for x in a], b, equal_var=False, alternative="greater")
  assert got["p_higher"] == pytest.approx(want.pvalue, rel=1e-9)
  assert got["diff"] == pytest.approx(np.mean(a) - np.mean(b))
  assert significance.diff_test(a, [0.7], 0.01) is None
  same = significance.diff_test([0.5, 0.5], [0.6, 0.6], 0.01)  # se 0: decided by the difference
  assert same["p_lower"] == 0.0 and same["p_higher"] == 1.0


def test_c1_ignores_a_negligible_difference_of_two_flat_maps(tmp_path):
  """Seeds alike to 5 digits give a zero-width interval; 1e-5 of entropy is no difference."""
  flat = lambda v: {"mean": v, "std": 0.0, "values": [v, v]}  # noqa: E731
  rows = lambda view, v: [  # noqa: E731
    {
      "view": view,
      "modality": m,
      **{k: flat(v) for k in ("entropy", "gini", "entropy_raw", "gini_raw", "mass_share")},
      "top_mass": [],
    }
    for m in ("text", "image")
  ]
  c1 = _c1(tmp_path, fl_conc=rows("mixture", 0.99999), dense_conc=rows("dense", 0.99998))
  assert c1.startswith("NOT SHOWN: C1") and "0 more concentrated, 0 less, 4 not resolved" in c1


def test_c1_is_not_shown_when_the_seeds_disagree_or_are_too_few(tmp_path):
  wide = _conc("mixture", 0.6, 0.5, spread=0.2) + _conc("syn", 0.5, 0.6, spread=0.2)
  assert _c1(tmp_path / "a", fl_conc=wide).startswith(
    "NOT SHOWN: C1 (synthetic): not every FL-I2MoE map is significantly more concentrated"
  )
  one = [
    {
      **r,
      **{
        k: {"mean": r[k]["mean"], "std": None, "values": [r[k]["mean"]]}
        for k in r
        if k not in ("view", "modality", "top_mass")
      },
    }
    for r in _conc("dense", 0.7, 0.4)
  ]
  assert _c1(tmp_path / "b", dense_conc=one).startswith(
    "NOT SHOWN: C1 (synthetic): needs at least two training seeds of each model"
  )


def test_c1_of_an_explain_file_without_the_raw_maps_asks_for_a_rerun(tmp_path):
  c1 = _c1(tmp_path, dense_conc=_conc("dense", 0.7, 0.4, raw=False))
  assert c1.startswith(
    "NOT SHOWN: C1 (synthetic): the explain file has no concentration of the unnormalised"
  )


def test_c2_fails_when_random_wins(tmp_path):
  c2 = _c2(tmp_path, gaps=((0.1, -0.1), (0.1, 0.1)))
  assert c2.startswith("FAIL: C2") and "SII: b=1: +" in c2 and "b=2: -" in c2


def test_c2_is_not_shown_on_too_few_examples_however_large_the_gap(tmp_path):
  """20 examples whose ranked pairs beat random ones by 10 SEs: no verdict, the sample is too small."""
  c2 = _c2(tmp_path, n_examples=20)
  assert c2.startswith(
    "NOT SHOWN: C2 (synthetic): 20 examples probed, the paired test needs at least 30"
  )


def test_c2_is_not_shown_when_the_gap_is_noise(tmp_path):
  """Ranked no better than random in truth: larger mean drops by chance must not pass."""
  c2 = _c2(tmp_path, gaps=((0.0, 0.0), (0.0, 0.0)), n_examples=60)
  assert c2.startswith(
    "NOT SHOWN: C2 (synthetic): ranked pairs do not beat random pairs significantly"
  )


def test_c2_of_a_probe_file_without_the_paired_test_asks_for_a_rerun(tmp_path):
  fl, dense = make_run(tmp_path)
  probe = json.loads((fl / "probe" / "test.json").read_text())
  for idx in ("SII", "RG"):
    untested = {k: [0.0, 0.0] for k in ("prob_drop", "prob_drop_se", "metric", "metric_drop")}
    probe["pair_masking"][idx]["random"] = untested
  (fl / "probe" / "test.json").write_text(json.dumps(probe))
  out = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")
  assert out["verdicts"][1].startswith(
    "NOT SHOWN: C2 (synthetic): the probe file has no paired test"
  )
  assert 'class="verdict notshown"' in out["html"].read_text()


_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const ids = [...document.querySelectorAll('table')].map(t => t.id).join(',');
  const pre = document.createElement('pre'); pre.id = 'check';
  pre.textContent = JSON.stringify({images: imgs.length, loaded: ok, tables: ids});
  document.body.appendChild(pre);
});
</script>"""


def test_report_in_headless_browser(tmp_path):
  browser = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
  )
  if browser is None:
    pytest.skip("no headless Chromium found (make test installs Debian's chromium when it can)")
  fl, dense = make_run(tmp_path)
  out = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")
  # A copy of the page with a check script: the report itself carries no script.
  page = tmp_path / "check.html"
  page.write_text(out["html"].read_text().replace("</body>", _CHECK + "</body>"))
  flags = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--user-data-dir={tmp_path / 'profile'}",
    "--virtual-time-budget=5000",
  ]
  dom = subprocess.run(
    [browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
  ).stdout
  start = dom.index('<pre id="check">') + len('<pre id="check">')
  result = json.loads(dom[start : dom.index("</pre>", start)].replace("&quot;", '"'))
  assert result["images"] == 2 and result["loaded"] == 2, result
  for tid in ("table-a", "table-b-synthetic", "table-c-synthetic"):
    assert tid in result["tables"].split(",")


def test_render_escapes_and_unique_figure_names(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir(), b.mkdir()
  sec = Section(
    "S <1>",
    paragraphs=["x < y"],
    tables=[Table("t", "cap", [["h|1"], ["<b>"]])],
    figures=[Figure(_png(a / "f.png"), "one"), Figure(_png(b / "f.png"), "two")],
  )
  out = write_report(tmp_path / "r", "T", [sec])
  html = out["html"].read_text()
  assert "S &lt;1&gt;" in html and "&lt;b&gt;" in html and "x &lt; y" in html
  assert len(list((tmp_path / "r" / "report_files").iterdir())) == 2
  assert "h\\|1" in out["md"].read_text()


def test_pure_settings_section(tmp_path):
  fl, dense = make_run(tmp_path)
  wd = tmp_path / "pure_syn"
  (wd / "probe").mkdir(parents=True)
  summary = _summary(acc=0.99)
  summary["seeds"] = {"0": _seed(0, weight_0=0.2, weight_1=0.2, weight_2=0.55, weight_3=0.05)}
  (wd / "summary.json").write_text(json.dumps(summary))
  stats = {"hit@1": 0.99, "abs_hit@1": 0.98, "mrr": 0.99, "chance_hit@1": 0.014}
  probe = _probe_doc(
    settings={"sii_rank_score": "logit"},
    pair_masking=pair_masking(100, ((0.1, 0.1), (0.1, 0.1))),
    planted={
      "pairs": {
        "syn0": {
          "kind": "synergy",
          "probe": "SII of the syn game",
          "expert": "syn",
          "logit": stats,
          "logodds": {**stats, "called@1": 0.62},
        }
      }
    },
  )
  (wd / "probe" / "test.json").write_text(json.dumps(probe))
  out = build_report(
    [ReportEntry("synthetic", fl, dense)], tmp_path / "report", pure_settings=[("synergy", wd)]
  )
  md = out["md"].read_text()
  assert 'id="ground-truth-pure"' in out["html"].read_text()
  assert (
    "| synergy | 99.00 | syn | 0.55 | SII of the syn game | logit | 0.990 | 0.980 | - | 0.014 |"
    in md
  )
  # The calls (the expert's share of the score) are on the log-odds scale.
  assert "| SII of the syn game | logodds | 0.990 | 0.980 | 0.620 | 0.014 |" in md


def test_pm_with_one_seed():
  from flmoe_jax.report.tables import pm

  assert pm(0.9, 0.01) == "90.00 ± 1.00"
  assert pm(0.9, None) == "90.00"  # one seed: no spread to show (explain writes std None)


def test_objective_line_names_every_term_beyond_the_paper():
  from flmoe_jax.report.build import objective_line

  paper = objective_line("x", {"loss": {"lambda_int": 0.5}})
  assert "the paper's" in paper and "beyond" not in paper
  ours = objective_line(
    "x",
    {
      "loss": {"lambda_int": 0.0, "lambda_role": 1.0, "lambda_missing": 1.0, "lambda_decor": 0.5},
      "optim": {"gate_warmup_steps": 500},
    },
  )
  for part in (
    "1.0 x role consistency",
    "1.0 x missing-modality task loss",
    "0.5 x uniqueness decorrelation",
    "first 500 steps",
  ):
    assert part in ours, (part, ours)
  assert "from step" not in ours
  late = objective_line(
    "x", {"loss": {"lambda_role": 1.0, "lambda_missing": 1.0, "extra_start_step": 500}}
  )
  assert "the missing-modality and decorrelation terms from step 500" in late
  frac = objective_line(
    "x", {"loss": {"lambda_role": 1.0, "lambda_missing": 1.0, "extra_start_fraction": 0.6}}
  )
  assert "the missing-modality and decorrelation terms from 60% of the steps" in frac
  # A term alone is enough to leave the paper's objective, and it is named.
  syn = objective_line("x", {"loss": {"lambda_int": 0.5, "lambda_syn_residual": 1.0}})
  assert "1.0 x the synergy expert's task loss at full weight" in syn and "the paper's (" not in syn


def test_schedule_text_names_the_shares_of_warm_up_and_decay():
  from flmoe_jax.report.build import _schedule_text

  assert _schedule_text({}) == "constant schedule"
  assert _schedule_text({"schedule": "warmup_cosine", "warmup_fraction": 0.05}) == (
    "warmup_cosine schedule: warm-up 5%, cosine decay to 0"
  )
  wsd = {"schedule": "warmup_stable_decay", "warmup_fraction": 0.0, "decay_fraction": 0.3}
  assert _schedule_text(wsd) == (
    "warmup_stable_decay schedule: warm-up 0%, cosine decay to 0 over the last 30%"
  )


def test_stability_table_when_the_probe_has_one(tmp_path):
  fl, dense = make_run(tmp_path)
  probe = json.loads((fl / "probe" / "test.json").read_text())
  ms = lambda m, se: {"mean": m, "se": se}  # noqa: E731
  block = {"scale": "logodds", "kendall_tau": ms(0.91, 0.01), "topk_overlap": ms(0.8, 0.02),
           "top1_agree": ms(0.75, 0.04), "n_pairs": 81.0}  # fmt: skip
  probe["stability"] = {
    "monte_carlo": {
      "k": 5,
      "differs": {"seed": [0, 1]},
      "n_examples": 100,
      "SII": block,
      "RG": block,
    }
  }
  (fl / "probe" / "test.json").write_text(json.dumps(probe))
  out = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")
  md = out["md"].read_text()
  assert 'id="stability-synthetic"' in out["html"].read_text()
  assert "seed 0 -> 1" in md and "0.91 ± 0.01" in md and "top-5 overlap" in md


def test_evidence_section_and_reference_points(tmp_path):
  fl, dense = make_run(tmp_path)
  explain = json.loads((fl / "explain" / "test.json").read_text())
  ev = lambda view, share, prec: {  # noqa: E731
    "view": view,
    "modality": "image",
    "mass_share": _ms(share, 0.02),
    "precision": [_ms(prec, 0.01), _ms(prec - 0.1, 0.01)],
    "chance": 0.25,
    "num_examples": 200,
  }
  explain["model"]["evidence"] = [ev("syn", 0.61, 0.9), ev("mixture", 0.55, 0.8)]
  explain["baseline"]["evidence"] = [ev("dense", 0.42, 0.7)]
  explain["evidence_rule"] = "image: shape patches"
  (fl / "explain" / "test.json").write_text(json.dumps(explain))
  probe = json.loads((fl / "probe" / "test.json").read_text())
  probe["evidence"] = {
    "rule": "image: shape patches",
    "sii": {
      "expert": "syn",
      "index": "SII",
      "scale": "logodds",
      "n": 40,
      "hits": 30,
      "top_pair_rate": 0.75,
      "chance_candidates": 0.3,
      "chance_all_pairs": 0.05,
      "z": 6.2,
      "p_value": 2.8e-10,
    },
  }
  (fl / "probe" / "test.json").write_text(json.dumps(probe))
  refs = {
    "models": {
      "majority class": {
        "task": "binary",
        "seeds": ["-"],
        "mean_std": {"test": {"accuracy": {"mean": 0.36, "std": None}}},
      },
    }
  }
  (fl / "baselines").mkdir()
  (fl / "baselines" / "test.json").write_text(json.dumps(refs))
  out = build_report([ReportEntry("easyvqa", fl, dense)], tmp_path / "report")
  md = out["md"].read_text()
  assert "image: shape patches" in md
  assert (
    "| FL-I2MoE | syn | image | 0.610 ± 0.020 | 0.900 ± 0.010 | 0.800 ± 0.010 | 0.250 | 200 |" in md
  )
  assert "| dense | dense | image | 0.420 ± 0.020 |" in md
  assert "| SII | syn | logodds | 40 | 30 (75%) | 30% | 5.0% | 6.20 | 2.8e-10 |" in md
  assert "| easyvqa | majority class | accuracy | 36.00 | - |" in md  # Table A, beside the models
  assert 'id="evidence-easyvqa"' in out["html"].read_text()
  # Without evidence scores there is no such section.
  out2 = build_report([ReportEntry("synthetic", *make_run(tmp_path / "b"))], tmp_path / "r2")
  assert "evidence-" not in out2["html"].read_text()


def test_table_b_shows_the_trapezoid_aopc_beside_the_mean(tmp_path):
  fl, dense = make_run(tmp_path)
  md = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")["md"].read_text()
  mean_row = next(line for line in md.splitlines() if line.startswith("| AOPC |"))
  trap_row = next(line for line in md.splitlines() if line.startswith("| AOPC (trapezoid) |"))
  mean = [float(c.split("±")[0]) for c in mean_row.strip("|").split("|")[1:]]
  trap = [float(c.split("±")[0]) for c in trap_row.strip("|").split("|")[1:]]
  assert len(trap) == 8 and np.allclose(np.subtract(trap, mean), 0.5)


def test_proportion_ci_is_the_wilson_interval():
  """Closed-form Wilson bounds: 0 of 10 gives (0, z^2 / (n + z^2)); 4,749 of 5,000 the interval
  computed by hand from (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.96."""
  low, high = significance.proportion_ci(0, 10)
  assert low == pytest.approx(0.0, abs=1e-12)
  assert high == pytest.approx(1.959964**2 / (10 + 1.959964**2), rel=1e-5)
  low, high = significance.proportion_ci(4749, 5000)
  assert (low, high) == (pytest.approx(0.943395, abs=2e-6), pytest.approx(0.955515, abs=2e-6))
  narrow = significance.proportion_ci(4749, 5000, level=0.5)
  assert low < narrow[0] < 4749 / 5000 < narrow[1] < high
