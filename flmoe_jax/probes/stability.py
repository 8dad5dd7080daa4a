"""Stability of the pair rankings: the same examples probed twice, under another draw of something.

Two probe files of one split (`W/probe/<split>*.json`) that differ in the Monte Carlo seed
(`--seed`: stability across draws) or in the training seed (`--run-seed`: stability across
training) rank the candidate pairs of each example they share. Per example and probe role (the
SII and RG games, each on its ranking scale), over the pairs both files scored:

* Kendall's tau-b of the two score vectors (1 = the same order, 0 = unrelated);
* top-k overlap: |top-k of one & top-k of the other| / k (k capped at the number of pairs);
* top-1 agreement: the same pair first in both.

`compare` returns their means over examples with standard errors. A ranking whose top pairs move
under a new MC seed is noise at that budget; one that moves under a new training seed explains
that model, not the task.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from flmoe_jax.probes.games import ProbeError

ROLES = (("sii", "SII", "sii_rank_score"), ("rg", "RG", "rg_rank_score"))


def _scores(rec: dict, role: str, index: str, scale: str) -> dict[tuple[int, ...], float]:
  """{(modality, position, modality, position): score} of one example's candidate pairs."""
  r = rec[role]
  return {tuple(m): v for m, v in zip(r["members"], r["values"][index][scale], strict=True)}


def _mean_se(x: list[float]) -> dict[str, float | None]:
  a = np.asarray([v for v in x if math.isfinite(v)], np.float64)
  if a.size == 0:
    return {"mean": None, "se": None}
  se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else None
  return {"mean": round(float(a.mean()), 6), "se": None if se is None else round(se, 6)}


def compare(a: dict, b: dict, *, k: int = 5) -> dict:
  """Agreement of two probe files' pair rankings on the examples they share.

  Args:
    a: a probe document (`results.read_probe`).
    b: another probe document of the same split and store.
    k: the top-k of the overlap.

  Returns:
    {"k", "differs": {setting: [a, b]} (what was redrawn), "n_examples", and per index (`SII`,
    `RG`): {"scale", "kendall_tau", "topk_overlap", "top1_agree": {"mean", "se"} over examples,
    "n_pairs" (mean number of shared pairs)}}.

  Raises:
    ProbeError: different splits, or no example in common.
  """
  if int(k) < 1:
    raise ProbeError(f"k {k} must be >= 1")
  sa, sb = a["settings"], b["settings"]
  if a.get("split") != b.get("split"):
    raise ProbeError(f"the two probes are of different splits ({a.get('split')}, {b.get('split')})")
  rows_b = {r["row"]: r for r in b["samples"]}
  shared = [(r, rows_b[r["row"]]) for r in a["samples"] if r["row"] in rows_b]
  if not shared:
    raise ProbeError("the two probes share no example")
  out = {
    "k": int(k),
    "differs": {
      key: [x, y]
      for key, x, y in (
        ("training seed", a.get("run", {}).get("seed"), b.get("run", {}).get("seed")),
        *((key, sa.get(key), sb.get(key)) for key in ("seed", "n_draws", "fill", "pairs")),
      )
      if x != y
    },
    "n_examples": len(shared),
  }
  for role, index, scale_key in ROLES:
    scale = sa[scale_key]
    if sb[scale_key] != scale:
      raise ProbeError(
        f"the two probes rank {index} on different scales ({scale}, {sb[scale_key]})"
      )
    taus, overlaps, tops, sizes = [], [], [], []
    for ra, rb in shared:
      x, y = _scores(ra, role, index, scale), _scores(rb, role, index, scale)
      keys = [m for m in x if m in y]
      if len(keys) < 2:
        continue
      va, vb = np.array([x[m] for m in keys]), np.array([y[m] for m in keys])
      tau = stats.kendalltau(va, vb).statistic
      taus.append(float(tau) if np.isfinite(tau) else math.nan)
      kk = min(int(k), len(keys))
      top_a = set(np.argsort(-va, kind="stable")[:kk])
      top_b = set(np.argsort(-vb, kind="stable")[:kk])
      overlaps.append(len(top_a & top_b) / kk)
      tops.append(float(np.argmax(va) == np.argmax(vb)))
      sizes.append(len(keys))
    out[index] = {
      "scale": scale,
      "kendall_tau": _mean_se(taus),
      "topk_overlap": _mean_se(overlaps),
      "top1_agree": _mean_se(tops),
      "n_pairs": round(float(np.mean(sizes)), 1) if sizes else 0,
    }
  return out
