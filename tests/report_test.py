"""The report: tables and verdicts from run outputs, and a headless browser that loads every image."""

import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

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


def _summary(task="binary", acc=0.9):
  return {
    "name": "x",
    "model": "fl_i2moe",
    "store": "/s",
    "task": task,
    "selection_metric": "accuracy",
    "seeds": {"0": {}, "1": {}},
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
    "aopc": aopc,
  }


def _conc(view, ent, gini):
  return [
    {"view": view, "modality": m, "entropy": _ms(ent), "gini": _ms(gini)} for m in ("text", "image")
  ]


def make_run(root: pathlib.Path, *, ranked_beats=(True, True)):
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
  explain = {
    "settings": {"split": "test", "method": "attnxgrad", "fill": "mean", "ks": [5.0, 25.0]},
    "model": {
      "faithfulness": [_faith("mixture", "mixture", 40.0, 10.0), _faith("syn", "own", 20.0, 8.0)],
      "concentration": _conc("mixture", 0.6, 0.5),
      "specificity": [],
      "planted": planted,
    },
    "baseline": {
      "faithfulness": [_faith("dense", "own", 30.0, 10.0)],
      "concentration": _conc("dense", 0.7, 0.4),
    },
  }
  (fl / "explain" / "test.json").write_text(json.dumps(explain))
  side = lambda b: {"prob_drop": [0.1, 0.2], "metric_drop": [0.05, 0.1]}  # noqa: E731
  probe = {
    "pair_masking": {
      "budgets": [1, 2],
      "repeats": 10,
      "metric": "accuracy",
      "SII": {"ranked": side(0), "random": side(0), "ranked_beats_random": list(ranked_beats)},
      "RG": {"ranked": side(0), "random": side(0), "ranked_beats_random": [True, True]},
    },
    "planted": {
      "pairs": {
        "syn0": {
          "kind": "synergy",
          "probe": "SII",
          "in_candidates": 1.0,
          "logit": {"hit@1": 0.95, "mrr": 0.97},
        }
      }
    },
  }
  probe["settings"] = {"modalities": ["text", "image"], "experts": {"sii": "syn", "rg": "red"}}

  def dataset_test(pairs):
    n_pref = sum(p["prefers"] for p in pairs)
    return {
      "n_examples": 100,
      "alpha": 0.05,
      "min_rate": 0.1,
      "min_detectable_rate": 0.22,
      "n_preferred": n_pref,
      "pairs": pairs,
    }

  hit = {
    "pair": [0, 2, 1, 0],
    "n": 100,
    "rate": 0.92,
    "se": 0.027,
    "chance": 0.0123,
    "mean_abs": 4.9,
  }
  probe["standout"] = {
    "SII": {
      "scale": "logit",
      "dataset": dataset_test(
        [{**hit, "p_chance_holm": 1e-150, "prefers": True, "stands_out": True}]
      ),
    },
    "RG": {
      "scale": "prob",
      "dataset": dataset_test(
        [{**hit, "rate": 0.08, "p_chance_holm": 0.001, "prefers": True, "stands_out": False}]
      ),
    },
  }
  (fl / "probe" / "test.json").write_text(json.dumps(probe))
  _png(fl / "explain" / "test_masking.png")
  _png(fl / "probe" / "test_heatmap_0.png")
  return fl, dense


def test_tables_and_verdicts(tmp_path):
  fl, dense = make_run(tmp_path)
  out = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")
  assert out["verdicts"][0].startswith("PASS: C1 (synthetic)")
  assert out["verdicts"][1].startswith("PASS: C2 (synthetic): ranked > random at every budget")
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
  assert "| syn0 | synergy | SII | mean | logit | 0.950 |" in md  # the main probe (no `fills`)
  assert "| syn0 | synergy | SII | marginal | logit | 0.770 | 0.970 | 0.980 | - |" in md
  # The log-odds row carries the calls (first by sign and at least min_effect nats).
  assert "| syn0 | synergy | SII | marginal | logodds | 0.770 | 0.970 | 0.980 | 0.750 |" in md
  assert md.count("| red0 |") == 1  # same fill as the main probe's RG game: not repeated


def test_c2_fails_when_random_wins(tmp_path):
  fl, dense = make_run(tmp_path, ranked_beats=(True, False))
  out = build_report([ReportEntry("synthetic", fl, dense)], tmp_path / "report")
  assert (
    out["verdicts"][1].startswith("FAIL: C2")
    and "SII: ranked > random at 1/2 budgets" in out["verdicts"][1]
  )


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
  summary["seeds"] = {
    "0": {"test": {"weight_0": 0.2, "weight_1": 0.2, "weight_2": 0.55, "weight_3": 0.05}}
  }
  (wd / "summary.json").write_text(json.dumps(summary))
  stats = {"hit@1": 0.99, "abs_hit@1": 0.98, "mrr": 0.99, "chance_hit@1": 0.014}
  probe = {
    "settings": {"experts": {"sii": "syn", "rg": "red"}},
    "planted": {
      "pairs": {
        "syn0": {"kind": "synergy", "probe": "SII of the syn game", "expert": "syn", "logit": stats}
      }
    },
  }
  (wd / "probe" / "test.json").write_text(json.dumps(probe))
  out = build_report(
    [ReportEntry("synthetic", fl, dense)], tmp_path / "report", pure_settings=[("synergy", wd)]
  )
  md = out["md"].read_text()
  assert 'id="ground-truth-pure"' in out["html"].read_text()
  assert (
    "| synergy | 99.00 | syn | 0.55 | SII of the syn game | logit | 0.990 | 0.980 | 0.014 |" in md
  )


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
