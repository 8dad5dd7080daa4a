"""A tiny FL-I2MoE learns a planted interaction and its probe finds the planted pair.

Trains for a few seconds on a small pure-setting store (6 tokens x 4 patches, no decoys, 1,000
training examples; label = the XOR of one text and one image bit, or one bit copied into both
modalities) with the role objective of `configs/synthetic.py`, then probes every cross-modal pair
of 64 test examples. The thresholds are real: a model that has not learnt the interaction ranks the
planted pair first in about 1 of 18 examples (the chance level the probe reports).

Then it probes the top 2 x top 2 pairs of the default token map (the game's Shapley values): seed 0
keeps the planted pair a candidate in 0.88 (synergy) and 1.00 (redundancy) of the examples, and
ranks it first in all of them.

Measured (2-core CPU, this recipe): synergy SII hit@1 0.98 / 0.61 / 1.00 for model seeds 0 / 1 / 2;
redundancy RG hit@1 1.00 / 0.97 / 0.97. Cross-talk, called by the other role's probe (first by sign,
at least 0.25 nats on the log-odds scale, above the meant expert's score of the pair): the copied pair
by SII on `syn` 0 / 0 / 0% (first by signed SII in 39 / 1.6 / 0%, at <= 0.14 nats), the XOR pair by RG
on `red` 0 / 1.6 / 0%. The test uses seed 0. (At this tiny size the paper's
objective also finds the XOR pair: SII hit@1 0.72 at seed 0; the roles separate less well at the larger
stores of docs/ground_truth.md.)
"""

import pathlib

import pytest

from flmoe_jax import config as config_lib
from flmoe_jax import train
from flmoe_jax.data import synthetic
from flmoe_jax.probes.config import ProbeConfig
from flmoe_jax.probes.pipeline import run_probe

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = 64


def _train_and_probe(root: pathlib.Path, setting: str) -> tuple[dict, dict]:
  store = synthetic.write_synthetic_store(
    synthetic.PlantedConfig(
      n_train=1000,
      n_val=64,
      n_test=SAMPLES,
      text_len=6,
      min_text_len=5,
      image_len=4,
      dim=8,
      n_distractors=0,
      setting=setting,
      bayes_mc_samples=100,
    ),
    root / "store",
  )
  cfg = config_lib.load_config(
    str(ROOT / "configs/tiny.py"),
    [
      "train.epochs=6",
      "train.batch_size=32",
      "optim.learning_rate=3e-3",
      "model.dropout=0.0",
      # The role objective of configs/synthetic.py, its gate frozen for the first half.
      "loss.lambda_role=1.0",
      "loss.lambda_int=0.0",
      "loss.lambda_missing=1.0",
      "loss.lambda_decor=1.0",
      "optim.gate_warmup_fraction=0.5",
    ],
  )
  with cfg.unlocked():
    cfg.store = str(store)
    cfg.synthetic = {}
  summary = train.train_and_evaluate(cfg, root / "run")
  planted = {}
  for pairs, kw in (("all", {}), ("topk", {"k": 2, "tag": "topk"})):
    cfg = ProbeConfig(samples=SAMPLES, pairs=pairs, draws=8, figures=False, **kw)
    planted[pairs] = run_probe(cfg, root / "run", log=None).planted["pairs"]
  return summary.seeds[0], planted


@pytest.mark.parametrize(
  "setting, pair, scale, min_hit",
  [
    # SII (logit scale) of the synergy expert's game on the XOR pair.
    ("synergy", "syn0", "logit", 0.75),
    # The redundancy gap (probability scale) of the redundancy expert's game on the copied pair.
    ("redundancy", "red0", "prob", 0.9),
  ],
)
def test_tiny_model_learns_the_planted_pair_and_the_probe_ranks_it_first(
  tmp_path, setting, pair, scale, min_hit
):
  result, by_mode = _train_and_probe(tmp_path, setting)
  # The interaction is learnt (Bayes accuracy is ~100% on these stores)...
  assert result.test["accuracy"] >= 0.9, result.test
  planted = by_mode["all"][pair]
  assert planted["n"] == SAMPLES
  hit, chance = planted[scale]["hit@1"], planted[scale]["chance_hit@1"]
  # ...and the expert named after it ranks the planted pair first in most examples, far above the
  # chance level of a random ranking over the 16-20 candidate pairs (~0.06).
  assert chance < 0.1, chance
  assert hit >= min_hit, (planted["probe"], hit, chance)
  # The other role's probe does not call it: a copied pair can rank first by a tiny positive SII of
  # the synergy expert (39% of these examples), but not with an effect of 0.25 nats that also beats
  # the redundancy expert's gap on it.
  cross = planted["cross_talk"]
  assert cross["n"] == SAMPLES and cross["called@1"] <= 0.1, cross
  # With the top 2 tokens x top 2 patches of the default map (the game's own Shapley values) the
  # planted pair stays a candidate, and so first, in most examples: 4 of the 16-20 pairs, where a
  # random 2 x 2 would keep it in about 1 of 5 examples and attention x gradient kept the copied
  # pair in 81% (docs/ground_truth.md 5.10).
  top = by_mode["topk"][pair]
  assert top["in_candidates"] >= min_hit and top[scale]["hit@1"] >= min_hit, top
