"""Stability of pair rankings between two probe files: closed forms on hand-made files."""

import numpy as np
import pytest

from flmoe_jax.probes import stability
from flmoe_jax.probes.games import ProbeError


def _doc(values_by_row, *, seed=0, run_seed=0, split="test"):
  """A probe document whose examples score pairs (0, t, 1, t) with the given SII = RG values."""
  samples = []
  for row, vals in values_by_row.items():
    members = [[0, t, 1, t] for t in range(len(vals))]
    samples.append(
      {
        "row": row,
        **{
          role: {"members": members, "values": {index: {"logodds": list(vals)}}}
          for role, index in (("sii", "SII"), ("rg", "RG"))
        },
      }
    )
  return {
    "split": split,
    "run": {"seed": run_seed},
    "settings": {"seed": seed, "sii_rank_score": "logodds", "rg_rank_score": "logodds"},
    "samples": samples,
  }


def test_identical_reversed_and_partial_rankings():
  a = _doc({0: [5, 4, 3, 2, 1], 1: [1, 2, 3, 4, 5]})
  same = stability.compare(a, _doc({0: [5, 4, 3, 2, 1], 1: [1, 2, 3, 4, 5]}, seed=1), k=2)
  assert same["differs"] == {"seed": [0, 1]} and same["n_examples"] == 2
  for key in ("kendall_tau", "topk_overlap", "top1_agree"):
    assert same["SII"][key]["mean"] == 1.0
  rev = stability.compare(a, _doc({0: [1, 2, 3, 4, 5], 1: [5, 4, 3, 2, 1]}, run_seed=1), k=2)
  assert rev["differs"] == {"training seed": [0, 1]}
  assert rev["RG"]["kendall_tau"]["mean"] == -1.0 and rev["RG"]["topk_overlap"]["mean"] == 0.0
  # Row 0: one swap of the top two (tau = 1 - 2 * 1 / 10 = 0.8; top-2 the same set; top-1 differs);
  # row 1 is only in one file.
  part = stability.compare(a, _doc({0: [4, 5, 3, 2, 1], 7: [1, 2, 3, 4, 5]}), k=2)
  assert part["n_examples"] == 1
  assert part["SII"]["kendall_tau"]["mean"] == pytest.approx(0.8)
  assert part["SII"]["topk_overlap"]["mean"] == 1.0 and part["SII"]["top1_agree"]["mean"] == 0.0
  assert part["SII"]["n_pairs"] == 5


def test_pairs_are_matched_by_their_members_not_their_order():
  a = _doc({0: [5, 4, 3]})
  b = _doc({0: [5, 4, 3]})
  for role in ("sii", "rg"):  # the same pairs listed in another order, values permuted with them
    r = b["samples"][0][role]
    order = [2, 0, 1]
    r["members"] = [r["members"][i] for i in order]
    index = "SII" if role == "sii" else "RG"
    r["values"][index]["logodds"] = list(np.asarray(r["values"][index]["logodds"])[order])
  assert stability.compare(a, b)["SII"]["kendall_tau"]["mean"] == 1.0


def test_bad_comparisons_are_refused():
  a = _doc({0: [1, 2]})
  with pytest.raises(ProbeError, match="share no example"):
    stability.compare(a, _doc({3: [1, 2]}))
  with pytest.raises(ProbeError, match="different splits"):
    stability.compare(a, _doc({0: [1, 2]}, split="val"))
  with pytest.raises(ProbeError, match="k 0"):
    stability.compare(a, a, k=0)
