"""Scoring maps, pair rankings and reference points against known answers."""

import types

import numpy as np
import pytest

from flmoe_jax import baselines
from flmoe_jax.data.store import ModalitySpec, SplitArrays, TaskSpec, open_store, write_store
from flmoe_jax.explain.pipeline import _evidence_scores
from flmoe_jax.probes.evidence import pair_evidence


def test_map_scores_on_the_evidence():
  # One sample, one view, 4 candidate positions; evidence at positions 1 and 2.
  maps = np.array([[[0.2, 1.0, 0.5, 0.3]]], np.float32)
  attr = types.SimpleNamespace(maps=(maps, maps), candidates=(np.ones((1, 4), bool),) * 2)
  masks = [np.array([[False, True, True, False]]), np.zeros((1, 4), bool)]
  s = _evidence_scores(attr, masks, (25, 50, 75))  # [B, V, M, 2 + nK]
  # Mass share 1.5 / 2.0; top-1 {1}, top-2 {1, 2}, top-3 {1, 2, 3}: precision 1, 1, 2/3; chance 1/2.
  np.testing.assert_allclose(s[0, 0, 0], [0.75, 1.0, 1.0, 2 / 3, 0.5], rtol=1e-6)
  assert np.isnan(s[0, 0, 1]).all()  # no evidence in the second modality: left out, not zero
  # Non-candidate positions count for nothing, evidence or not.
  attr2 = types.SimpleNamespace(maps=(maps,), candidates=(np.array([[True, False, True, True]]),))
  s2 = _evidence_scores(attr2, [masks[0]], (50,))
  np.testing.assert_allclose(s2[0, 0, 0], [0.5 / 1.0, 0.5, 1 / 3], rtol=1e-6)


def test_pair_scores_on_the_evidence():
  def rec(values):
    # Candidate pairs (text 1, image 0), (text 1, image 3), (text 2, image 3).
    return {
      "members": [[0, 1, 1, 0], [0, 1, 1, 3], [0, 2, 1, 3]],
      "values": {"SII": {"logodds": values}, "RG": {"logodds": values}},
    }

  samples = [
    {"row": 5, "n_players": [4, 4], "sii": rec([0.1, 0.9, 0.2]), "rg": rec([0.9, 0.1, None])},
    {"row": 7, "n_players": [4, 4], "sii": rec([0.5, 0.1, 0.2]), "rg": rec([None, None, None])},
  ]
  report = {
    "settings": {
      "modalities": ["text", "image"],
      "sii_rank_score": "logodds",
      "rg_rank_score": "logodds",
      "experts": {"sii": "syn", "rg": "red"},
    },
    "samples": samples,
  }
  text = np.zeros((2, 4), bool)
  image = np.zeros((2, 4), bool)
  text[:, 1] = True  # token 1 is the attribute word of both examples
  image[:, 3] = True  # patch 3 holds the shape
  seen = []

  def masks(rows):
    seen.append(list(rows))
    return {"text": text, "image": image}

  ev = types.SimpleNamespace(rule="test rule", masks=masks)
  out = pair_evidence(report, ev)
  assert seen == [[5, 7]] and out["rule"] == "test rule"
  sii = out["sii"]
  # Example 1: top (1, 3) is evidence; example 2: top (1, 0) is not. Chance: 1 of 3 candidates.
  assert (sii["n"], sii["hits"]) == (2, 1)
  assert sii["chance_candidates"] == pytest.approx(1 / 3)
  assert sii["chance_all_pairs"] == pytest.approx(1 / 4 * 1 / 4)
  z = (1 - 2 / 3) / np.sqrt(2 * (1 / 3) * (2 / 3))
  assert sii["z"] == pytest.approx(z)
  rg = out["rg"]
  # Example 2 has no finite RG value: left out; example 1's top (1, 0) is not evidence.
  assert (rg["n"], rg["hits"], rg["chance_candidates"]) == (1, 0, pytest.approx(1 / 2))


def _store(tmp_path, task, labels_fn, n_text, text_dim, signal):
  """A text + image store whose text features carry `signal(y)` and whose image is noise.

  Args:
    labels_fn: (rng, n) -> labels.
    signal: labels [n, ...] -> [n, text_dim] added to every text token.
  """
  rng = np.random.default_rng(0)

  def split(n):
    y = labels_fn(rng, n)
    text = rng.normal(size=(n, n_text, text_dim)).astype(np.float32) + signal(y)[:, None, :]
    mask = np.ones((n, n_text), bool)
    if n_text > 2:
      mask[:, -1] = False  # a padding position, left out of the mean pooling
    return SplitArrays(
      {"text": text, "image": rng.normal(size=(n, 2, 4)).astype(np.float32)},
      {"text": mask, "image": np.ones((n, 2), bool)},
      y,
      [f"e{i}" for i in range(n)],
    )

  path = write_store(
    tmp_path / "store",
    modalities=[
      ModalitySpec("text", text_dim, n_text),
      ModalitySpec("image", 4, 2, kind="patches"),
    ],
    task=task,
    splits={"train": split(600), "test": split(300)},
  )
  return open_store(path)


def _multiclass_labels(rng, n):
  y = rng.integers(0, 3, n)
  y[: n // 2] = 0  # class 0 is the majority
  return y


def test_reference_points(tmp_path):
  # The text tells the class (3 sd between classes on one dimension); the image tells nothing.
  fs = _store(
    tmp_path,
    TaskSpec("multiclass", 3),
    _multiclass_labels,
    3,
    8,
    lambda y: np.eye(8)[0] * 3.0 * y[:, None],
  )
  y = np.asarray(fs.split("test").labels)
  major = baselines.majority_class(fs)["mean_std"]["test"]
  assert major["accuracy"]["mean"] == pytest.approx((y == 0).mean())
  text = baselines.single_modality(fs, "text")["mean_std"]["test"]["accuracy"]["mean"]
  image = baselines.single_modality(fs, "image")["mean_std"]["test"]["accuracy"]["mean"]
  assert text > 0.95
  assert image < (y == 0).mean() + 0.08  # no signal: about the majority rate
  with pytest.raises(Exception, match="no modality"):
    baselines.single_modality(fs, "audio")


def test_reference_points_of_a_multilabel_store(tmp_path):
  # Label 0 is carried by most examples; the text tells every label.
  fs = _store(
    tmp_path,
    TaskSpec("multilabel", 3),
    lambda rng, n: (rng.random((n, 3)) < [0.7, 0.2, 0.4]).astype(np.uint8),
    2,
    6,
    lambda y: np.concatenate([3.0 * y, np.zeros((len(y), 3))], 1),
  )
  y = np.asarray(fs.split("test").labels)
  major = baselines.majority_class(fs)["mean_std"]["test"]
  # Only label 0 is predicted, for every example: its exact match is the share with labels {0}.
  want = (y == [1, 0, 0]).all(1).mean()
  assert major["exact_match"]["mean"] == pytest.approx(want)
  text = baselines.single_modality(fs, "text")["mean_std"]["test"]
  assert text["micro_f1"]["mean"] > 0.95
