"""`flmoe probe` end to end on a tiny trained run: typed JSON, figures, untouched run, clear errors."""

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flmoe_jax import cli, train
from flmoe_jax import config as config_lib
from flmoe_jax.data import synthetic
from flmoe_jax.probes import games, results, shapley
from flmoe_jax.probes import planted as planted_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A 1-epoch tiny FL-I2MoE on a small planted store (seconds; the probe needs any trained run)."""
  root = tmp_path_factory.mktemp("probe")
  store = synthetic.write_synthetic_store(
    synthetic.PlantedConfig(
      n_train=64,
      n_val=16,
      n_test=16,
      text_len=8,
      min_text_len=6,
      image_len=4,
      dim=16,
      n_distractors=0,
      bayes_mc_samples=100,
    ),
    root / "store",
  )
  cfg = config_lib.load_config(str(ROOT / "configs/tiny.py"), ["train.epochs=1"])
  with cfg.unlocked():
    cfg.store = str(store)
    cfg.synthetic = {}
    cfg.train.progress = False
  train.train_and_evaluate(cfg, root / "run")
  return root / "run"


def _digest(run: pathlib.Path) -> dict:
  return {
    str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(run.rglob("*"))
    if p.is_file() and "probe" not in p.parts
  }


def _probe(capsys, run, *extra):
  code = cli.main(
    [
      "probe",
      "--workdir",
      str(run),
      "--samples",
      "3",
      "--draws",
      "4",
      "--repeats",
      "2",
      "--mask-budgets",
      "1,2",
      *extra,
    ]
  )
  out = capsys.readouterr()
  return code, out.out, out.err


def test_probe_writes_typed_json_and_figures_and_leaves_the_run_alone(tiny_run, capsys):
  before = _digest(tiny_run)
  code, out, err = _probe(capsys, tiny_run, "--pairs", "all", "--seed", "3")
  assert code == 0, err
  assert "RG-ranked vs random pair masking" in out
  d = results.read_probe(tiny_run / "probe" / "test.json")
  assert d["format"] == "flmoe-probe" and d["version"] == 4
  s = d["settings"]
  assert s["seed"] == 3 and s["pairs"] == "all" and s["n_draws"] == 4 and s["exact"] is False
  assert s["budget"] == 4 * 4 * s["n_pairs_padded"]
  assert len(d["samples"]) == 3
  rec = d["samples"][0]
  for role, expert in (("sii", "syn"), ("rg", "red")):
    r = rec[role]
    assert r["expert"] == expert
    n_pairs = len(r["players"])
    assert n_pairs == rec["n_players"][0] * rec["n_players"][1]  # all cross-modal pairs
    for index in ("SII", "RG", "RG-additive"):
      for scale in ("logit", "prob", "logodds", "logprob"):
        assert len(r["values"][index][scale]) == n_pairs
        assert len(r["std_errors"][index][scale]) == n_pairs
    assert set(r["baseline_value"]) == {"logit", "prob", "logodds", "logprob"}  # v(∅) on its own
    # Two classes: the log-odds of the target is log(p / (1 - p)), its log-probability log p.
    for end in ("baseline_value", "grand_value"):
      p = r[end]["prob"]
      assert r[end]["logodds"] == pytest.approx(np.log(p / (1 - p)), rel=1e-3, abs=1e-3)
      assert r[end]["logprob"] == pytest.approx(np.log(p), rel=1e-3, abs=1e-3)
  pm = d["pair_masking"]
  assert pm["budgets"] == [1, 2] and len(pm["SII"]["ranked"]["prob_drop"]) == 2
  assert {"syn0", "red0", "comp"} <= set(d["planted"]["pairs"])
  for index, scale in (("SII", s["sii_rank_score"]), ("RG", s["rg_rank_score"])):
    ds = d["standout"][index]["dataset"]  # the across-example null-control test
    assert d["standout"][index]["scale"] == scale
    assert ds["n_examples"] == 3 and ds["n_pairs"] >= n_pairs  # pairs by (modality, position)
    rates = [p["rate"] for p in ds["pairs"]]
    assert (
      rates == sorted(rates, reverse=True) and sum(p["firsts"] for p in ds["pairs"]) <= 3 + 1e-6
    )
  names = {pathlib.Path(p).name for p in d.get("figures", [])} | {
    p.name for p in (tiny_run / "probe").glob("*.png")
  }
  assert "test_pair_masking.png" in names and "test_heatmap_0.png" in names
  assert _digest(tiny_run) == before  # checkpoints, metrics, config untouched
  assert not list((tiny_run / "probe").glob(".*tmp"))  # no leftovers of the atomic writes
  # Same seed -> same numbers (explicit keys, no hidden RNG state).
  code, _, _ = _probe(
    capsys, tiny_run, "--pairs", "all", "--seed", "3", "--no-figures", "--tag", "again"
  )
  again = results.read_probe(tiny_run / "probe" / "test_again.json")
  assert again["samples"][1]["sii"]["values"] == d["samples"][1]["sii"]["values"]


def test_probe_topk_and_random_modes(tiny_run, capsys):
  code, _, err = _probe(
    capsys, tiny_run, "--pairs", "topk", "--k", "2", "--no-figures", "--tag", "topk"
  )
  assert code == 0, err
  d = json.loads((tiny_run / "probe" / "test_topk.json").read_text())
  assert all(len(r["sii"]["players"]) == 4 for r in d["samples"])
  assert d["settings"]["map_orders"] == 8
  assert d["settings"]["attribution"] == "shapley" and d["settings"]["attention"] == "einsum"
  assert d["settings"]["sii_rank_score"] == d["settings"]["rg_rank_score"] == "logodds"
  pm = d["pair_masking"]
  for idx in ("SII", "RG"):  # two controls, each with its paired test at every budget
    for control in ("random", "random_all"):
      assert len(pm[idx][control]["p_holm"]) == len(pm["budgets"]) == 2
  assert pm["n"] == 3 < pm["min_examples"]
  # The fused attention path gives the same pairs and values (the attribution maps that pick the
  # top-k tokens still come from the einsum path, which alone returns attention).
  code, _, err = _probe(
    capsys, tiny_run, "--pairs", "topk", "--k", "2", "--no-figures", "--tag", "xla",
    "--attention", "xla",
  )  # fmt: skip
  assert code == 0, err
  fused = json.loads((tiny_run / "probe" / "test_xla.json").read_text())
  assert fused["settings"]["attention"] == "xla"
  for a, b in zip(d["samples"], fused["samples"], strict=True):
    assert a["sii"]["players"] == b["sii"]["players"]
    np.testing.assert_allclose(
      b["sii"]["values"]["SII"]["logit"], a["sii"]["values"]["SII"]["logit"], rtol=1e-3, atol=1e-5
    )
  code, _, err = _probe(
    capsys,
    tiny_run,
    "--pairs",
    "topk",
    "--k",
    "2",
    "--no-figures",
    "--tag",
    "gxi",
    "--attribution",
    "grad_x_input",
    "--rg-rank-score",
    "prob",
  )
  assert code == 0, err
  gxi = json.loads((tiny_run / "probe" / "test_gxi.json").read_text())
  assert (
    gxi["settings"]["rg_rank_score"] == "prob" and gxi["pair_masking"]["RG"]["rank_score"] == "prob"
  )
  code, _, err = _probe(
    capsys,
    tiny_run,
    "--pairs",
    "random",
    "--n-random-pairs",
    "3",
    "--no-figures",
    "--tag",
    "random",
    "--rg-expert",
    "mixture",
  )
  assert code == 0, err
  d = json.loads((tiny_run / "probe" / "test_random.json").read_text())
  assert all(len(r["rg"]["players"]) == 3 for r in d["samples"])
  assert d["samples"][0]["rg"]["expert"] == "mixture"


def test_probe_marginal_fill(tiny_run, capsys):
  # Same pairs and draws, two fills: the grand coalition (nothing absent) is the same, the empty one
  # (everything from the references) is not, and the references are recorded.
  common = ("--pairs", "all", "--no-figures", "--samples", "2")
  code, _, err = _probe(capsys, tiny_run, *common, "--tag", "allmean")
  assert code == 0, err
  code, _, err = _probe(
    capsys, tiny_run, *common, "--tag", "allmarg", "--fill", "marginal", "--references", "3"
  )
  assert code == 0, err
  mean, marg = (
    json.loads((tiny_run / "probe" / f"test_{t}.json").read_text()) for t in ("allmean", "allmarg")
  )
  assert marg["settings"]["fill"] == "marginal" and marg["settings"]["references"] == 3
  rows = marg["settings"]["reference_rows"]
  assert len(set(rows)) == 3 and all(0 <= r < 64 for r in rows)
  assert mean["settings"]["references"] is None
  # The empty coalition of the marginal game, rebuilt here from the recorded reference rows: the
  # mean over the 3 references of the score with every player taken from the reference.
  from flmoe_jax import runs
  from flmoe_jax.explain import masking

  run = runs.load_run(tiny_run)
  ref = run.store.gather("train", np.asarray(rows))
  fills = masking.reference_fills(run.model, ref["x"], ref["mask"], run.store.means())
  for a, b in zip(mean["samples"], marg["samples"], strict=True):
    assert a["sii"]["players"] == b["sii"]["players"]
    data = run.store.gather("test", np.asarray([b["row"]]))
    target = jnp.zeros((1, 2)).at[0, b["target"][0]].set(1.0)
    for role, expert in (("sii", "syn"), ("rg", "red")):
      np.testing.assert_allclose(
        b[role]["grand_value"]["logit"], a[role]["grand_value"]["logit"], rtol=1e-5
      )
      game = games.model_game(
        run.model, data["x"], data["mask"], kinds=run.kinds, task_type="binary", expert=expert,
        fill=fills, target=target,
      )  # fmt: skip
      empty = float(game(jnp.zeros((1, game.n_players), bool))[0])
      np.testing.assert_allclose(b[role]["baseline_value"]["logit"], empty, rtol=1e-4, atol=1e-5)
  # In both games every SE includes the draw of the references: the linear indices' from the
  # per-reference values, RG's and RG-full's by the jackknife. RG-full is exact given the
  # references (MC SE 0): its SE is the reference draw's alone, positive here, 0 under the mean fill.
  every = ["SII", "RG", "RG-additive", "RG-full"]
  assert marg["settings"]["se_includes_references"] == {"SII": every, "RG": every}
  for a, b in zip(mean["samples"], marg["samples"], strict=True):
    assert max(a["rg"]["std_errors"]["RG-full"]["logodds"]) == 0
    assert min(b["rg"]["std_errors"]["RG-full"]["logodds"]) > 0
  assert marg["timing"]["expert_evaluations"] == 3 * mean["timing"]["expert_evaluations"]
  assert marg["settings"]["fills"] == {"SII": "marginal", "RG": "marginal", "pair_masking": "mean"}
  # The marginal SII game alone: the RG game is the mean-fill one, value for value.
  code, _, err = _probe(
    capsys, tiny_run, *common, "--tag", "siimarg", "--sii-fill", "marginal", "--references", "3"
  )
  assert code == 0, err
  one = json.loads((tiny_run / "probe" / "test_siimarg.json").read_text())
  assert one["settings"]["fills"] == {"SII": "marginal", "RG": "mean", "pair_masking": "mean"}
  assert one["settings"]["se_includes_references"] == {"SII": every, "RG": []}
  for a, b, c in zip(mean["samples"], marg["samples"], one["samples"], strict=True):
    assert c["rg"]["values"] == a["rg"]["values"] and c["sii"]["values"] == b["sii"]["values"]
  assert one["timing"]["expert_evaluations"] == 2 * mean["timing"]["expert_evaluations"]


@pytest.mark.parametrize(
  "extra, match",
  [
    (["--fill", "marginal", "--references", "0"], "--references must be an int >= 1"),
    (["--rg-fill", "marginal", "--references", "0"], "--references must be an int >= 1"),
    (
      ["--fill", "marginal", "--max-coalitions-per-call", "4"],
      "cannot fit one coalition on 32 references",
    ),
    (["--budget", "10"], "budget 10 is too small"),
    (["--split", "nope"], "no split 'nope'"),
    (["--max-coalitions-per-call", "0"], "cannot fit one coalition"),
    (["--sii-expert", "bogus"], "not in"),
    (["--mask-budgets", "0"], "mask budgets"),
    (["--standout-min-rate", "1.5"], "standout-min-rate must be in"),
  ],
)
def test_probe_bad_input_is_one_line_exit_2(tiny_run, capsys, extra, match):
  code, _, err = _probe(capsys, tiny_run, *extra)
  assert code == 2
  assert err.startswith("flmoe: error:") and match in err, err
  assert len(err.strip().splitlines()) == 1


def test_probe_bad_attention_is_refused_before_loading(tmp_path):
  from flmoe_jax.probes import ProbeConfig, ProbeError

  with pytest.raises(ProbeError, match="--attention 'flash' not in"):
    ProbeConfig(attention="flash")


def test_probe_missing_run_is_one_line(tmp_path, capsys):
  code, _, err = _probe(capsys, tmp_path / "nothing")
  assert code == 2 and "not a run directory" in err


def test_planted_summary_counts_cross_talk_under_the_other_role():
  """A redundant pair first by SII in the synergy game in 2 of 4 examples (by |SII| in 2): 0.5/0.5;
  called (first and >= 0.25 nats) in 1."""

  def entry(rank, abs_rank, value):
    res = {
      f"{i}_{s}": {"value": value, "se": 0.0, "rank": rank, "abs_rank": abs_rank}
      for i in ("SII", "RG")
      for s in ("logit", "prob", "logodds", "logprob")
    }
    return {**res, "n_pairs": 20}

  planted = {
    "setting": "redundancy",
    "label_type": "binary",
    "term_sign": None,
    "pairs": {"red0": {"kind": "redundancy", "text_pos": 1, "image_pos": 2}},
  }
  sii = [(1, 1, 0.3), (5, 1, -0.4), (1, 2, 0.1), (7, 9, -0.05)]
  records = [
    {
      "target": [1],
      "planted": {"red0": {"kind": "redundancy", "sii": entry(*s), "rg": entry(1, 1, 0.2)}},
    }
    for s in sii
  ]
  experts = {"sii": "syn", "rg": "red"}
  out = planted_lib.planted_summary(planted, records, experts, 0.25)["pairs"]["red0"]
  assert out["prob"]["hit@1"] == 1.0  # the meant probe (RG of red) finds it every time
  # ...but calls it only where the gap reaches 0.25 nats: never (0.2).
  assert out["logodds"]["hit@1"] == 1.0 and out["logodds"]["called@1"] == 0.0
  ct = out["cross_talk"]
  assert ct["expert"] == "syn" and ct["n"] == 4 and "logodds" in ct["probe"]
  assert ct["hit@1"] == 0.5 and ct["abs_hit@1"] == 0.5
  # First with 0.3 and with 0.1 nats: only the first reaches the effect floor.
  assert ct["called@1"] == 0.25
  assert ct["mean_value"] == pytest.approx(np.mean([s[2] for s in sii]), abs=1e-6)
  # With a lower floor the 0.1 example is still not called: the redundancy game's gap on the same
  # pair (0.2) is larger, so the pair goes to that expert.
  low = planted_lib.planted_summary(planted, records, experts, 0.05)["pairs"]["red0"]
  assert low["cross_talk"]["called@1"] == 0.25
  assert low["logodds"]["called@1"] == 0.75  # RG 0.2 beats every SII of the pair but 0.3
  for r in records:  # without the redundancy game's score there is no rival
    del r["planted"]["red0"]["rg"]
  alone = planted_lib.planted_summary(planted, records, experts, 0.05)["pairs"]["red0"]
  assert alone["cross_talk"]["called@1"] == 0.5


def _probe_edited(monkeypatch, run, tag, edit):
  """`run_probe` with the defaults on `run`, its model edited by `edit` after loading."""
  from flmoe_jax import runs
  from flmoe_jax.probes import pipeline

  real = runs.load_run

  def load(*args, **kwargs):
    loaded = real(*args, **kwargs)
    edit(loaded.model)
    return loaded

  monkeypatch.setattr(runs, "load_run", load)
  cfg = pipeline.ProbeConfig(
    samples=3, draws=4, pairs="all", mask_budgets=(1, 2), mask_repeats=2, figures=False, tag=tag
  )
  return pipeline.run_probe(cfg, run, log=None).to_dict()


def _default_scale_values(d: dict) -> dict[str, np.ndarray]:
  """SII and RG of every pair of every example, on the scale the probe ranks pairs by."""
  s = d["settings"]
  return {
    index: np.concatenate(
      [np.asarray(r[role]["values"][index][s[f"{role}_rank_score"]]) for r in d["samples"]]
    )
    for role, index in (("sii", "SII"), ("rg", "RG"))
  }


def _edit_heads(model, fn):
  """Applies fn(kernel [H, C], bias [C]) -> (kernel, bias) to the syn and red experts' heads."""
  head = model.experts.stacked.head
  kernel, bias = np.array(head.kernel[...]), np.array(head.bias[...])
  for e in (model.expert_names.index("syn"), model.expert_names.index("red")):
    kernel[e], bias[e] = fn(kernel[e], bias[e])
  head.kernel[...], head.bias[...] = jnp.asarray(kernel), jnp.asarray(bias)


def test_default_ranking_ignores_a_shift_common_to_every_class(tiny_run, monkeypatch):
  """Softmax ignores a vector added to every class column of a head; so must the pair ranking.

  Under cross-entropy that common part gets no gradient and keeps its random init, so a score that
  moves with it ranks pairs by noise (the raw logit does).
  """
  base = _probe_edited(monkeypatch, tiny_run, "noshift", lambda m: None)
  rng = np.random.default_rng(0)

  def shift(k, b):  # the same column added to every class: [H, 1] and a common bias
    return k + rng.normal(size=(k.shape[0], 1)).astype(np.float32) * 3.0, b + 1.5

  shifted = _probe_edited(monkeypatch, tiny_run, "shift", lambda m: _edit_heads(m, shift))
  before, after = _default_scale_values(base), _default_scale_values(shifted)
  for index in ("SII", "RG"):
    np.testing.assert_allclose(after[index], before[index], rtol=1e-3, atol=1e-5)

  def logit_sii(d):
    return np.concatenate([np.asarray(r["sii"]["values"]["SII"]["logit"]) for r in d["samples"]])

  # The raw logit is not invariant: the same edit moves its SII (what the default must avoid).
  assert np.abs(logit_sii(shifted) - logit_sii(base)).max() > 1e-2


def test_pipeline_sii_of_each_example_equals_the_exact_index_of_its_game(tiny_run):
  """The probe's batched, padded Monte Carlo SII against the exact SII of the same model game,
  built here one example at a time (catches mis-indexed players, pairs or examples)."""
  from flmoe_jax import runs
  from flmoe_jax.probes import pipeline

  cfg = pipeline.ProbeConfig(
    samples=3, draws=512, pairs="all", mask_budgets=(1,), mask_repeats=1, figures=False,
    tag="exactcheck",
  )  # fmt: skip
  d = pipeline.run_probe(cfg, tiny_run, log=None).to_dict()
  run = runs.load_run(tiny_run)
  scale = d["settings"]["sii_rank_score"]
  for rec in d["samples"]:
    data = run.store.gather("test", np.asarray([rec["row"]]))
    target = np.zeros((1, 2), np.float32)
    target[0, rec["target"]] = 1.0
    game = games.model_game(
      run.model, data["x"], data["mask"], kinds=run.kinds, task_type="binary", expert="syn",
      score=scale, means=run.store.means(), target=jnp.asarray(target),
    )  # fmt: skip
    # The record's players are this game's players, member for member.
    pm = game.players
    members = [[int(pm.modality[i]), int(pm.position[i]), int(pm.modality[j]), int(pm.position[j])]
               for i, j in rec["sii"]["players"]]  # fmt: skip
    assert members == rec["sii"]["members"]
    exact = shapley.pair_scores(
      game, rec["sii"]["players"], budget=2**pm.n_players, key=jax.random.key(0), exact=True
    ).values["SII"]
    mc = np.asarray(rec["sii"]["values"]["SII"][scale])
    se = np.asarray(rec["sii"]["std_errors"]["SII"][scale])
    assert np.all(np.abs(mc - exact) <= 4 * se + 1e-6), (mc, exact, se)
    # ...with SEs small enough that another pair's value would not pass.
    spread = np.abs(exact[:, None] - exact[None, :])
    assert np.median(se) < 0.25 * np.median(spread[spread > 0])
    # The redundancy gap from the full input: min(v(N - i), v(N - j)) - v(N - ij) of the red game.
    rg_scale = d["settings"]["rg_rank_score"]
    red = games.model_game(
      run.model, data["x"], data["mask"], kinds=run.kinds, task_type="binary", expert="red",
      score=rg_scale, means=run.store.means(), target=jnp.asarray(target),
    )  # fmt: skip
    pr = np.asarray(rec["rg"]["players"])
    every = np.arange(red.n_players)
    coal = [[~np.isin(every, p) for p in ps] for ps in (pr[:, :1], pr[:, 1:], pr)]  # N-i, N-j, N-ij
    v = np.asarray(red(jnp.asarray(np.concatenate(coal)))).reshape(3, len(pr))
    want = np.minimum(v[0], v[1]) - v[2]
    np.testing.assert_allclose(rec["rg"]["values"]["RG-full"][rg_scale], want, rtol=1e-4, atol=1e-6)
    assert rec["rg"]["std_errors"]["RG-full"][rg_scale] == [0.0] * len(pr)  # exact


def test_type_auroc_separates_planted_synergy_from_redundancy():
  """SII of the synergy game as a classifier of the pair's type: 7 of 9 (syn, red) pairs ordered."""
  from flmoe_jax.probes import pipeline

  def entry(sii, rg):
    return {
      role: {f"{i}_{s}": {"value": v, "rank": 1, "abs_rank": 1} for s in pipeline.SCALES}
      for role, i, v in (("sii", "SII", sii), ("rg", "RG", rg))
    }

  planted = {"pairs": {"syn0": {"kind": "synergy"}, "red0": {"kind": "redundancy"}}}
  records = [
    {"planted": {"syn0": entry(s, 0.0), "red0": entry(r, g)}}
    for s, r, g in ((1.0, 0.0, 1.0), (2.0, -1.0, 2.0), (3.0, 2.5, 3.0))
  ]
  out = planted_lib.type_auroc(planted, records)
  assert out["SII"]["logodds"] == pytest.approx(7 / 9)
  assert out["RG"]["logodds"] == 1.0  # every redundant pair's RG above every synergy pair's 0
  assert out["n_synergy"] == out["n_redundancy"] == 3
  assert planted_lib.type_auroc({"pairs": {"syn0": {"kind": "synergy"}}}, records) is None


def test_stability_probes_again_and_records_the_agreement(tiny_run, capsys):
  code, _, err = _probe(
    capsys, tiny_run, "--pairs", "all", "--no-figures", "--tag", "stab", "--stability"
  )
  assert code == 0, err
  d = json.loads((tiny_run / "probe" / "test_stab.json").read_text())
  again = json.loads((tiny_run / "probe" / "test_stab-stability-mc.json").read_text())
  assert again["settings"]["seed"] == d["settings"]["seed"] + 1
  blk = d["stability"]["monte_carlo"]
  assert blk["differs"] == {"seed": [0, 1]} and blk["n_examples"] == 3
  # The agreement recomputed here from the two files' values.
  from flmoe_jax.probes import stability

  assert stability.compare(d, again) == blk
  for index in ("SII", "RG"):
    want = np.mean([len(r["sii"]["players"]) for r in d["samples"]])
    assert blk[index]["n_pairs"] == pytest.approx(want, abs=0.05)  # rounded to 0.1


def test_i2moe_trains_fills_table_a_and_is_refused_by_the_token_probes(tiny_run, capsys, tmp_path):
  """The original I2MoE: a run beside FL-I2MoE in Table A; token probes/explanations say no."""
  cfg = config_lib.load_config(
    str(ROOT / "configs/tiny.py"), ["train.epochs=1", "model.kind=i2moe"]
  )
  with cfg.unlocked():
    cfg.store = str(tiny_run.parent / "store")
    cfg.synthetic = {}
    cfg.train.progress = False
  train.train_and_evaluate(cfg, tmp_path / "i2moe")
  summary = json.loads((tmp_path / "i2moe" / "summary.json").read_text())
  assert summary["model"] == "i2moe"
  for cmd in (["probe"], ["explain", "--split", "test"]):
    code = cli.main([*cmd, "--workdir", str(tmp_path / "i2moe")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pools each modality into one vector" in err[0], err
  code = cli.main(
    [
      "report",
      "--workdir",
      str(tiny_run),
      "--i2moe",
      str(tmp_path / "i2moe"),
      "--out",
      str(tmp_path / "r"),
    ]
  )
  assert code == 0
  md = (tmp_path / "r" / "report.md").read_text()
  acc = 100 * summary["mean_std"]["test"]["accuracy"]["mean"]
  assert f"| I2MoE | accuracy | {acc:.2f}" in md


def test_global_detector_ranks_the_planted_pair_on_the_sample_averaged_map():
  """Three candidate pairs; the planted one (text 1 x image 2) is first in no single example but
  first on the mean over the examples: global AUROC 1, AP 1, while the per-example rank is not."""

  def record(vals):
    members = [[0, 1, 1, 2], [0, 0, 1, 2], [0, 1, 1, 0]]
    return {"planted": {}, "rg": {"members": members, "values": {"RG": {"logodds": vals}}}}

  records = [record([1.0, 1.5, 0.0]), record([1.0, 0.0, 1.5]), record([1.0, 0.2, 0.1])]
  pair = {"text_pos": 1, "image_pos": 2}
  out = planted_lib.global_detector(records, "rg", "RG", "logodds", pair)
  # Means: planted 1.0, others 0.567 and 0.533.
  assert out == {"global_auroc": 1.0, "global_ap": 1.0, "global_pairs": 3}
  # A pair tied with the planted one on the averaged map counts half below, and against it in AP.
  tied = [record([1.0, 0.5, 0.0]), record([1.0, 1.5, 0.0])]  # means 1.0, 1.0, 0.0
  out = planted_lib.global_detector(tied, "rg", "RG", "logodds", pair)
  assert out["global_auroc"] == pytest.approx(0.75) and out["global_ap"] == pytest.approx(0.5)
  # Never a candidate: nothing to score.
  never = {"text_pos": 5, "image_pos": 5}
  assert planted_lib.global_detector(records, "rg", "RG", "logodds", never) == {}


def test_records_carry_the_probed_experts_gate_weights_and_planted_calls_weigh_them(
  tiny_run, capsys
):
  code, _, err = _probe(
    capsys, tiny_run, "--pairs", "all", "--no-figures", "--samples", "3", "--tag", "gate"
  )
  assert code == 0, err
  doc = json.loads((tiny_run / "probe" / "test_gate.json").read_text())
  from flmoe_jax import runs

  run = runs.load_run(tiny_run)
  names = list(run.model.expert_names)
  for rec in doc["samples"]:
    data = run.store.gather("test", np.asarray([rec["row"]]))
    xs = [jnp.asarray(x, jnp.float32) for x in data["x"]]
    w = np.asarray(run.model.forward_projected(run.model.project(xs), data["mask"]).weights)[0]
    assert rec["gate"]["sii"] == pytest.approx(w[names.index("syn")], rel=1e-3)
    assert rec["gate"]["rg"] == pytest.approx(w[names.index("red")], rel=1e-3)
  # The planted entries carry them, and a call needs the weighted share above the floor.
  entry = {
    "rg": {"RG_logodds": {"value": 1.0, "rank": 1}},
    "sii": {"SII_logodds": {"value": 0.0, "rank": 9}},
  }
  assert planted_lib._called(entry, "rg", 0.25)
  assert not planted_lib._called({**entry, "gate": {"sii": 0.9, "rg": 0.1}}, "rg", 0.25)
  first = next(iter(doc["samples"][0]["planted"].values()))
  assert first["gate"] == doc["samples"][0]["gate"]
