"""Pair rankings against a label-free evidence rule (easy-vqa: attribute words x shape patches).

On a store with an evidence rule (`flmoe_jax.data.evidence`), a pair joins evidence when its text
token is an evidence token and its image patch an evidence patch. For each probe (SII of the synergy
expert, RG of the redundancy expert) this module counts the examples whose top pair (the probe's own
ranking: signed value on its rank scale, as for the planted pairs) joins evidence, against two
chances: the share of evidence pairs among the example's candidate pairs (what a random ranking of
the same candidates would score) and among all its cross-modal pairs (what a random pair would).
The test: hits H over n examples against the per-example candidate chances p_i, a one-sided normal
approximation of the Poisson-binomial, z = (H - sum p_i) / sqrt(sum p_i (1 - p_i)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

ROLES = (("sii", "SII"), ("rg", "RG"))


def pair_evidence(report: Mapping, evidence) -> dict:
  """The evidence summary of a probe report.

  Args:
    report: a probe report (`run_probe`'s dict: settings, samples with `row`, per role `members`
      [n, 4] as (modality, position, modality, position) and `values[index][scale]` [n]).
    evidence: the store split's `flmoe_jax.data.evidence.Evidence`.

  Returns:
    {"rule", and per role: {"expert", "index", "scale", "n", "hits", "top_pair_rate",
    "chance_candidates", "chance_all_pairs", "z", "p_value"}} (rates 0-1; n = examples with at least
    one candidate pair of finite value).
  """
  settings = report["settings"]
  samples = report["samples"]
  text, image = settings["modalities"]
  masks = evidence.masks([s["row"] for s in samples])
  out: dict = {"rule": evidence.rule}
  for role, index in ROLES:
    scale = settings[f"{role}_rank_score"]
    hits, p_cand, p_all = [], [], []
    for k, s in enumerate(samples):
      rec = s.get(role)
      if not rec:
        continue
      members = np.asarray(rec["members"], int).reshape(-1, 4)
      values = np.asarray([np.nan if v is None else v for v in rec["values"][index][scale]], float)
      ok = np.isfinite(values) & (members[:, 0] == 0) & (members[:, 2] == 1)
      if not ok.any():
        continue
      ev = masks[text][k][members[:, 1]] & masks[image][k][members[:, 3]]
      top = int(np.argmax(np.where(ok, values, -np.inf)))
      hits.append(bool(ev[top]))
      p_cand.append(float(ev[ok].mean()))
      n_text, n_image = s["n_players"]
      p_all.append(masks[text][k].sum() / max(n_text, 1) * masks[image][k].sum() / max(n_image, 1))
    n = len(hits)
    entry = {"expert": settings["experts"][role], "index": index, "scale": scale, "n": n}
    if n:
      h, p = float(np.sum(hits)), np.asarray(p_cand)
      var = float(np.sum(p * (1 - p)))
      z = (h - p.sum()) / math.sqrt(var) if var > 0 else math.nan
      entry.update(
        hits=int(h),
        top_pair_rate=h / n,
        chance_candidates=float(p.mean()),
        chance_all_pairs=float(np.mean(p_all)),
        z=z,
        p_value=0.5 * math.erfc(z / math.sqrt(2)) if math.isfinite(z) else math.nan,
      )
    out[role] = entry
  return out
