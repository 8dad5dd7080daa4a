"""Planted ground truth in the probes (synthetic stores): where the planted pairs rank in each
example's games, how often each probe calls them, cross-talk between the probes, and how well each
index separates the planted kinds (docs/ground_truth.md, docs/probes.md).

The planted pairs and each example's planted bits come from the store (`ground_truth.json`,
`planted_bits.json`); nothing here regenerates data unless the store predates the stored bits.
"""

from __future__ import annotations

import math

import numpy as np

from flmoe_jax import choices
from flmoe_jax import metrics as metrics_lib
from flmoe_jax.data import synthetic
from flmoe_jax.errors import FlmoeError
from flmoe_jax.probes import standout as standout_lib
from flmoe_jax.probes.games import PlayerMap, ProbeError
from flmoe_jax.probes.results import round_sig

ROLES = ("sii", "rg")  # synergy probe (SII on the synergy expert), redundancy probe (RG on red)
SCALES = choices.SCORE_SCALES


def _rank(scores: np.ndarray, q: int) -> int:
  """1-based rank of entry q under descending order; ties count against q (a tie is no hit)."""
  return int(np.sum(scores > scores[q]) + np.sum(scores == scores[q]))


def _planted_bits(gt: dict, fs, split: str, rows: np.ndarray) -> dict | None:
  """The examples' planted bits: stored with the synthetic store; a store written before they were
  is regenerated from its ground truth (used only when the regenerated ids are the store's)."""
  bits = fs.planted_bits(split)
  if bits is not None:
    return bits
  try:
    data = synthetic.generate(synthetic.config_from_ground_truth(gt))[split]
  except (FlmoeError, KeyError, TypeError, ValueError):  # not regenerable: no sign analysis
    return None
  same = [data["ids"][int(r)] for r in rows] == [fs.split(split).ids[int(r)] for r in rows]
  return data["bits"] if same else None


def planted_setup(gt: dict, fs, split: str, rows: np.ndarray) -> dict | None:
  """Planted pairs (by modality position) and per-example signs of their terms (binary labels)."""
  names = fs.modality_names
  if tuple(gt.get("modality_names", ())) != tuple(names):
    return None
  fields = ("kind", "text_pos", "image_pos", "weight", "bits")
  pairs = {m["name"]: {f: m[f] for f in fields} for m in gt["planted_pairs"]}
  bits = _planted_bits(gt, fs, split, rows)
  agree = None
  if bits is not None and gt.get("label_type") == "binary":
    agree = {}
    for name, p in pairs.items():
      b = [np.asarray(bits[x], np.float64)[rows] for x in p["bits"]]
      if p["kind"] == "synergy":
        agree[name] = np.sign(p["weight"] * b[0] * b[1])
      elif p["kind"] == "redundancy":
        agree[name] = np.sign(p["weight"] * b[0])
      else:
        agree[name] = np.sign(p["weight"] * (b[0] + b[1]))
  return {
    "pairs": pairs,
    "term_sign": agree,
    "setting": gt.get("setting"),
    "label_type": gt.get("label_type"),
  }


_PLANTED_PROBES = {  # (role, index) whose ranking should find each planted kind
  "synergy": ("sii", "SII"),
  "redundancy": ("rg", "RG"),
  "complement": ("rg", "RG"),
}
# Cross-talk: the probe of the OTHER role, which should not find the pair (a redundant pair that is
# first by |SII| in the synergy expert's game would be read as a synergy).
# Read on the log-odds scale: shift-invariant (unlike the logit) and unsaturated (unlike the
# probability), so a pair is called there only for an effect of at least `min_effect` nats.
_CROSS_TALK_PROBES = {"synergy": ("rg", "RG", "logodds"), "redundancy": ("sii", "SII", "logodds")}


def _called(entry: dict, role: str, min_effect: float) -> bool:
  """Whether one example's probe of `role` calls the planted pair (`standout.is_call`)."""
  own = entry[role][f"{standout_lib.ROLE_INDEX[role]}_logodds"]
  rival_role = standout_lib.other_role(role)
  other = entry.get(rival_role)
  rival = other[f"{standout_lib.ROLE_INDEX[rival_role]}_logodds"]["value"] if other else -math.inf
  weights = standout_lib.gate_weight(entry, role), standout_lib.gate_weight(entry, rival_role)
  return standout_lib.is_call(own["rank"] == 1, own["value"], rival, min_effect, *weights)


def planted_sample(
  planted: dict, ci: int, pm: PlayerMap, scores: dict, gate: dict | None = None
) -> dict:
  """Ranks of the planted pairs among one example's candidate pairs (with the example's gate
  weights of the probed experts, `gate`, which its calls weigh)."""
  out = {}
  for name, p in planted["pairs"].items():
    try:
      pi, pj = pm.player("text", p["text_pos"]), pm.player("image", p["image_pos"])
    except ProbeError:
      continue
    entry = {"kind": p["kind"], **({"gate": gate} if gate else {})}
    for role in ROLES:
      cp, stats = scores[role]
      hit = np.flatnonzero((cp[:, 0] == pi) & (cp[:, 1] == pj))
      if hit.size == 0:
        entry[role] = None
        continue
      q = int(hit[0])
      res = {}
      for index in ("SII", "RG"):
        for si, scale in enumerate(SCALES):
          v = stats[index][0][:, si]
          res[f"{index}_{scale}"] = {
            "value": round_sig(v[q]),
            "se": round_sig(stats[index][1][q, si]),
            "rank": _rank(v, q),
            "abs_rank": _rank(np.abs(v), q),
          }
      res["n_pairs"] = len(cp)
      entry[role] = res
    if planted["term_sign"] is not None and planted["term_sign"].get(name) is not None:
      entry["term_sign"] = float(planted["term_sign"][name][ci])
    out[name] = entry
  return out


def planted_summary(
  planted: dict, records: list[dict], experts: dict[str, str], min_effect: float
) -> dict:
  """hit@1 / MRR of each planted pair under the probe meant to find it, and its cross-talk.

  On the log-odds scale also `called@1`: the share of examples in which the pair is first by its
  signed score and its expert's share of it is at least `min_effect` nats (`standout.is_call`).
  """
  summary = {"setting": planted["setting"], "label_type": planted["label_type"], "pairs": {}}
  for name, p in planted["pairs"].items():
    role, index = _PLANTED_PROBES[p["kind"]]
    entries = [r["planted"].get(name) for r in records if "planted" in r]
    present = [e for e in entries if e and e.get(role)]
    res = {
      "kind": p["kind"],
      "probe": f"{index} of the {experts[role]} game",
      "expert": experts[role],
      "text_pos": p["text_pos"],
      "image_pos": p["image_pos"],
      "n": len(entries),
      "in_candidates": round_sig(len(present) / max(len(entries), 1)),
    }
    for scale in SCALES:
      res[scale] = _ranking_stats(records, entries, p, role, index, scale, min_effect)
    if p["kind"] == "redundancy":
      comp = [n for n, q in planted["pairs"].items() if q["kind"] == "complement"]
      for scale in SCALES if comp else ():
        res[scale].update(_against_complement(records, name, comp[0], scale))
    if p["kind"] in _CROSS_TALK_PROBES:
      res["cross_talk"] = _cross_talk(entries, p["kind"], experts, min_effect)
    summary["pairs"][name] = res
  summary["type_auroc"] = type_auroc(planted, records)
  return summary


def _ranking_stats(
  records: list[dict],
  entries: list[dict | None],
  pair: dict,
  role: str,
  index: str,
  scale: str,
  min_effect: float,
) -> dict:
  """How the meant probe ranks one planted pair on one scale, over the probed examples.

  Args:
    records: the probe's per-example records.
    entries: per record with a `planted` block, the pair's entry (None where it was not scored).
    pair: the planted pair (`planted_setup`).
    role, index: the meant probe (`sii`/`SII` or `rg`/`RG`).
    scale: `logodds` or `prob`.
    min_effect: the call threshold in nats (log-odds scale only).
  """
  present = [e for e in entries if e and e.get(role)]
  key = f"{index}_{scale}"
  ranks = np.array([e[role][key]["rank"] if e and e.get(role) else np.inf for e in entries])
  abs_ranks = np.array([e[role][key]["abs_rank"] if e and e.get(role) else np.inf for e in entries])
  vals = np.array([e[role][key]["value"] for e in present])
  n_pairs = np.array([e[role]["n_pairs"] for e in present], np.float64)
  pct = (ranks[np.isfinite(ranks)] - 1) / np.maximum(n_pairs - 1, 1)
  out = {
    "hit@1": round_sig(np.mean(ranks == 1)),
    "mrr": round_sig(np.mean(1.0 / ranks)),
    "abs_hit@1": round_sig(np.mean(abs_ranks == 1)),
    "abs_mrr": round_sig(np.mean(1.0 / abs_ranks)),
    # Chance levels of a detector that ranks at random, and the mean rank percentile
    # (0 = always first, 0.5 = chance): the null control's numbers.
    "chance_hit@1": round_sig(np.mean(1.0 / n_pairs)) if n_pairs.size else None,
    "mean_rank_percentile": round_sig(pct.mean()) if pct.size else None,
    # Detector scores, planted pair = the one positive among the example's candidates, mean
    # over the examples where it is a candidate: the pair AUROC (share of the other pairs
    # ranked below it, 1 - the rank percentile) and the average precision (1 / rank).
    "pair_auroc": round_sig(1.0 - pct.mean()) if pct.size else None,
    "pair_ap": round_sig(np.mean(1.0 / ranks[np.isfinite(ranks)])) if pct.size else None,
    **global_detector(records, role, index, scale, pair),
    "mean_value": round_sig(vals.mean()) if vals.size else None,
  }
  if scale == "logodds":
    out["called@1"] = round_sig(
      np.mean([bool(e and e.get(role) and _called(e, role, min_effect)) for e in entries])
    )
  signs = np.array([e.get("term_sign", np.nan) for e in entries], np.float64)
  if np.isfinite(signs).any():
    # Samples where the planted term pushes towards the predicted class: there the signed
    # ranking is the right test (DATA 3.4: signs depend on agreement with the prediction).
    pred_pos = np.array([r["target"] == [1] for r in records if "planted" in r])
    agree = (signs > 0) == pred_pos
    out["agree_fraction"] = round_sig(agree.mean())
    out["hit@1_when_term_agrees"] = round_sig(np.mean(ranks[agree] == 1)) if agree.any() else None
  return out


def _against_complement(records: list[dict], name: str, comp: str, scale: str) -> dict:
  """How often the redundant pair's RG beats the complement pair's, where both were scored."""
  both = [
    (
      r["planted"][name]["rg"][f"RG_{scale}"]["value"],
      r["planted"][comp]["rg"][f"RG_{scale}"]["value"],
    )
    for r in records
    if r.get("planted", {}).get(name, {}).get("rg") and r.get("planted", {}).get(comp, {}).get("rg")
  ]
  if not both:
    return {}
  a = np.array(both)
  return {
    "beats_complement": round_sig(np.mean(a[:, 0] > a[:, 1])),
    "mean_complement_value": round_sig(a[:, 1].mean()),
  }


def _cross_talk(
  entries: list[dict | None], kind: str, experts: dict[str, str], min_effect: float
) -> dict:
  """Where the OTHER role's probe ranks the planted pair (it should not find it)."""
  role, index, scale = _CROSS_TALK_PROBES[kind]
  key = f"{index}_{scale}"
  scored = [e for e in entries if e and e.get(role)]
  ranked = [e[role][key] for e in scored]
  return {
    "probe": f"{index} ({scale} scale) of the {experts[role]} game",
    "expert": experts[role],
    "n": len(ranked),
    # Share of examples in which the pair is the first of all candidates under that probe.
    "hit@1": round_sig(np.mean([r["rank"] == 1 for r in ranked])) if ranked else None,
    "abs_hit@1": round_sig(np.mean([r["abs_rank"] == 1 for r in ranked])) if ranked else None,
    # What the other role's probe would call (first, a share of at least min_effect nats, above the
    # meant probe's score of the pair).
    "called@1": (
      round_sig(np.mean([_called(e, role, min_effect) for e in scored])) if ranked else None
    ),
    "min_effect": min_effect,
    "mean_value": round_sig(np.mean([r["value"] for r in ranked])) if ranked else None,
  }


def global_detector(records: list[dict], role: str, index: str, scale: str, pair: dict) -> dict:
  """The detector scores on the sample-averaged score map: each cross-modal pair's score averaged
  over the examples where it is a candidate, the planted pair the one positive among them.

  Returns:
    {"global_auroc": share of the other pairs whose mean score is below the planted pair's (ties
    half), "global_ap": 1 / its rank (one positive), "global_pairs": pairs in the map}, or {} when
    the planted pair is never a candidate.
  """
  sums: dict[tuple[int, int], list[float]] = {}
  for r in records:
    block = r.get(role)
    if not block or "planted" not in r:
      continue
    vals = block["values"][index][scale]
    for (mi, pi, mj, pj), v in zip(block["members"], vals):
      key = (pi, pj) if mi <= mj else (pj, pi)  # (text position, image position)
      acc = sums.setdefault(key, [0.0, 0.0])
      acc[0] += v
      acc[1] += 1.0
  planted_key = (pair["text_pos"], pair["image_pos"])
  if planted_key not in sums:
    return {}
  mean = {k: total / count for k, (total, count) in sums.items()}
  q = mean.pop(planted_key)
  others = np.fromiter(mean.values(), np.float64, len(mean))
  below = np.sum(others < q) + 0.5 * np.sum(others == q)
  return {
    "global_auroc": round_sig(below / max(others.size, 1)),
    "global_ap": round_sig(1.0 / (1 + np.sum(others >= q))),
    "global_pairs": int(others.size + 1),
  }


def type_auroc(planted: dict, records: list[dict]) -> dict | None:
  """Each probe as a classifier of the pair's type: SII of the synergy game, planted synergy vs
  planted redundant pairs (and RG of the redundancy game, the other way round), over examples.

  Returns:
    {"SII": {scale: AUROC}, "RG": {scale: AUROC}, "n_synergy", "n_redundancy"} (0.5 = no
    separation, 1 = every synergy pair above every redundant one), or None without both kinds.
  """
  names = {
    k: [n for n, q in planted["pairs"].items() if q["kind"] == k] for k in ("synergy", "redundancy")
  }
  if not (names["synergy"] and names["redundancy"]):
    return None
  out = {}
  for role, index, positive in (("sii", "SII", "synergy"), ("rg", "RG", "redundancy")):
    out[index] = {}
    for scale in SCALES:
      vals = {
        k: [
          r["planted"][n][role][f"{index}_{scale}"]["value"]
          for r in records
          for n in names[k]
          if r.get("planted", {}).get(n, {}).get(role)
        ]
        for k in names
      }
      y = [k == positive for k in names for _ in vals[k]]
      x = [v for k in names for v in vals[k]]
      auroc = metrics_lib.binary_auroc(np.asarray(y, bool), np.asarray(x, np.float64))
      out[index][scale] = None if math.isnan(auroc) else round_sig(auroc)
  # Examples scored by the SII game, per kind (not the last loop's leftovers).
  for k in names:
    out[f"n_{k}"] = sum(
      bool(r.get("planted", {}).get(n, {}).get("sii")) for r in records for n in names[k]
    )
  return out
