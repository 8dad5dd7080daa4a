"""Does any pair stand out? The probes' null-control statistics, per example and across a dataset.

Two questions with different answers on a trained model:

* **Per example, against the Monte Carlo error** (`per_example_separation`): is the top pair ahead of
  the runner-up by more than their combined standard errors? The standard error measures the
  estimator only. A deterministic model that has fitted label noise has small but real interactions,
  and enough draws resolve them: on the synthetic null control the top pair is "separated" in most
  examples although its interaction is four orders of magnitude below the planted one's.
* **Across examples, by first places** (`top_pair_test`): examples are the replicates, and a pair's
  statistic is the share of examples in which it ranks first, with its binomial standard error. Two
  exact one-sided binomial tests per pair, each Holm-adjusted over all pairs tested:
  * `prefers`: first more often than chance (1 / candidate pairs, averaged over the examples in
    which the pair is a candidate; the binomial with that mean is conservative for the varying
    per-example rates). Any consistent preference of the model passes with enough examples: the
    synthetic null model's position preferences (first in 5-6% of 500 examples against 1.4%) do.
  * `stands_out`: first in significantly more than `min_rate` (default 10%) of the examples, and
    more than chance. A planted pair that the probe finds in most examples stands out by far; on a
    model trained on labels independent of the inputs no pair should, at any number of examples.

Pairs are identified by their members' (modality, position), so the across-example test asks about
positions: natural for the synthetic benchmark, image patches and fixed layouts (ENRICO screens), only
loosely meaningful for text, whose positions hold different words in different examples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

from flmoe_jax import artifact, significance
from flmoe_jax.probes.config import DEFAULT_MIN_EFFECT, DEFAULT_MIN_RATE  # noqa: F401 (re-exported)

DEFAULT_ALPHA = 0.05


def _first_place_credit(values: np.ndarray, by: str, rtol: float) -> np.ndarray:
  """Credit [P] for ranking first in one example; ties at the top share one unit equally.

  Sharing keeps a constant model (all values equal) at exactly the chance rate instead of crediting
  whichever pair happens to come first.
  """
  v = np.abs(values) if by == "abs" else values
  top = v.max()
  tied = v >= top - (1e-12 + rtol * abs(top))
  return tied / tied.sum()


def top_pair_test(
  pair_keys: Sequence[Sequence[Hashable]],
  values: Sequence[np.ndarray],
  *,
  alpha: float = DEFAULT_ALPHA,
  min_rate: float = DEFAULT_MIN_RATE,
  by: str = "abs",
  rtol: float = 1e-6,
  keep: int = 5,
  min_value: float | None = None,
) -> dict:
  """Across examples: which pairs rank first more often than chance, and which stand out.

  Two one-sided binomial tests of each pair's first-place count, Holm-adjusted over all pairs:
  `prefers` against the chance rate (any consistent preference of the model, however weak), and
  `stands_out` against max(chance, `min_rate`) (first in a material share of the examples).

  Args:
    pair_keys: per example, one hashable key per candidate pair (e.g. its members' (modality,
      position) tuple); the same key in two examples is the same pair.
    values: per example, the pair scores [P_e], aligned with `pair_keys`.
    alpha: family-wise error rate of each Holm procedure over all pairs tested.
    min_rate: the first-place rate a pair must exceed (beyond its standard error) to stand out.
    by: `abs` ranks by magnitude (a pair may stand out in either direction), `signed` by value.
    rtol: values within `rtol` of the top (relative) tie for first place and share its credit.
    keep: pairs listed besides the preferred ones (the most frequent first places).
    min_value: with `by="signed"`, an example whose top score is below it calls no pair: nobody
      gets its first place (it still counts in `n_examples` and in every pair's `n`, so the rates
      are shares of all examples). None: every example has a first place.

  Returns:
    {"by", "alpha", "min_rate", "test", "n_examples", "n_skipped_non_finite" (examples with a NaN
     or infinite score, left out), "n_pairs", "n_preferred", "n_standouts",
     "min_detectable_rate", "min_value", "n_no_call" (examples whose top score is below
     `min_value`), "pairs": [{"pair", "n", "firsts", "rate", "se", "chance", "mean_abs",
     "p_chance", "p_chance_holm", "prefers", "p", "p_holm", "stands_out"}]}, pairs sorted by
    first-place rate: every preferred pair, then up to `keep` more. `rate` is the share of the
    examples in which the pair is a candidate where it ranks first, `se` its binomial standard
    error, `mean_abs` its mean absolute score over those examples (the size beside the rank);
    `min_detectable_rate` the smallest rate with which a pair present in every example
    would stand out (the test's resolution at this number of examples).
  """
  if by not in ("abs", "signed"):
    raise ValueError(f"by must be 'abs' or 'signed', got {by!r}")
  if min_value is not None and by != "signed":
    raise ValueError("min_value needs by='signed' (a call is a score of the index's own sign)")
  if not 0.0 <= min_rate < 1.0:
    raise ValueError(f"min_rate must be in [0, 1), got {min_rate}")
  if len(pair_keys) != len(values):
    raise ValueError(f"{len(pair_keys)} key lists for {len(values)} value arrays")
  t = _tally_first_places(pair_keys, values, by=by, rtol=rtol, min_value=min_value)
  firsts, n, chance, abs_sum = t.firsts, t.n, t.chance, t.abs_sum
  n_examples = t.n_examples
  ks = list(n)
  counts = np.array([firsts[k] for k in ks])
  ns = np.array([n[k] for k in ks])
  p0 = np.array([chance[k] for k in ks]) / np.maximum(ns, 1)
  p_chance = _binomial_tail(counts, ns, p0)
  p = _binomial_tail(counts, ns, np.maximum(p0, min_rate))
  p_chance_holm, p_holm = significance.holm(p_chance), significance.holm(p)
  prefers, stand = p_chance_holm < alpha, p_holm < alpha
  rate = counts / np.maximum(ns, 1)
  se = np.sqrt(rate * (1 - rate) / np.maximum(ns, 1))
  order = np.argsort(-rate, kind="stable")
  listed = [i for i in order if prefers[i]] + [i for i in order if not prefers[i]][:keep]
  listed.sort(key=lambda i: -rate[i])
  pairs = [
    {
      "pair": list(ks[i]) if isinstance(ks[i], tuple) else ks[i],
      "n": int(ns[i]),
      "firsts": float(counts[i]),
      "rate": float(rate[i]),
      "se": float(se[i]),
      "chance": float(p0[i]),
      "mean_abs": float(abs_sum[ks[i]] / ns[i]),
      "p_chance": float(p_chance[i]),
      "p_chance_holm": float(p_chance_holm[i]),
      "prefers": bool(prefers[i]),
      "p": float(p[i]),
      "p_holm": float(p_holm[i]),
      "stands_out": bool(stand[i]),
    }
    for i in listed
  ]
  p_typical = max(float(np.median(p0)), min_rate) if len(ks) else 0.0
  return {
    "by": by,
    "alpha": alpha,
    "min_rate": min_rate,
    "test": "one-sided binomial of first places vs chance / vs max(chance, min_rate), Holm",
    "n_examples": n_examples,
    "n_skipped_non_finite": t.n_skipped,
    "n_pairs": len(ks),
    "n_preferred": int(prefers.sum()),
    "n_standouts": int(stand.sum()),
    "min_detectable_rate": _min_detectable_rate(n_examples, p_typical, len(ks), alpha),
    "min_value": min_value,
    "n_no_call": t.n_no_call,
    "pairs": pairs,
  }


@dataclasses.dataclass
class _Tally:
  """Per pair key: first-place credit, examples it is a candidate in, summed chance and |score|."""

  firsts: dict[Hashable, float] = dataclasses.field(default_factory=dict)
  n: dict[Hashable, int] = dataclasses.field(default_factory=dict)
  chance: dict[Hashable, float] = dataclasses.field(default_factory=dict)
  abs_sum: dict[Hashable, float] = dataclasses.field(default_factory=dict)
  n_examples: int = 0
  n_skipped: int = 0
  n_no_call: int = 0


def _tally_first_places(pair_keys, values, *, by: str, rtol: float, min_value) -> _Tally:
  """Counts, over the examples, which pair ranks first (`top_pair_test`'s arguments)."""
  t = _Tally()
  for keys, v in zip(pair_keys, values):
    v = np.asarray(v, np.float64)
    keys = [tuple(k) if isinstance(k, list) else k for k in keys]
    if v.shape != (len(keys),):
      raise ValueError(f"values of shape {v.shape} for {len(keys)} pairs")
    if not len(keys):
      continue
    if not np.isfinite(v).all():  # a NaN score has no rank; the run reports NaN coalitions itself
      t.n_skipped += 1
      continue
    t.n_examples += 1
    credit = _first_place_credit(v, by, rtol)
    if min_value is not None and v.max() < min_value:
      credit = np.zeros_like(credit)
      t.n_no_call += 1
    for k, c, x in zip(keys, credit, np.abs(v)):
      t.firsts[k] = t.firsts.get(k, 0.0) + float(c)
      t.abs_sum[k] = t.abs_sum.get(k, 0.0) + float(x)
      t.n[k] = t.n.get(k, 0) + 1
      t.chance[k] = t.chance.get(k, 0.0) + 1.0 / len(keys)
  return t


def _binomial_tail(counts: np.ndarray, n: np.ndarray, p0: np.ndarray) -> np.ndarray:
  """P(X >= count), X ~ Binomial(n, p0), per pair.

  Fractional (tie-shared) counts round up, which can only make a pair look more unusual than it
  is, never less.
  """
  if not len(counts):
    return np.zeros(0)
  return stats.binom.sf(np.ceil(counts - 1e-9) - 1, n, p0)


def _min_detectable_rate(n: int, p0: float, m: int, alpha: float) -> float | None:
  """Smallest first-place rate of a pair in all `n` examples that Holm would flag (Bonferroni step)."""
  if n == 0 or m == 0:
    return None
  k = np.arange(n + 1)
  ok = np.nonzero(stats.binom.sf(k - 1, n, p0) * m < alpha)[0]
  return float(ok[0] / n) if len(ok) else None


def pair_label(pair: Sequence[int], modality_names: Sequence[str]) -> str:
  """`text 2 x image 0` for members [0, 2, 1, 0] (modality, position, modality, position)."""
  if not isinstance(pair, (list, tuple)) or len(pair) != 4:
    return str(pair)
  ma, pa, mb, pb = pair
  name = lambda m: modality_names[m] if 0 <= m < len(modality_names) else f"m{m}"  # noqa: E731
  return f"{name(ma)} {pa} x {name(mb)} {pb}"


def describe(result, modality_names: Sequence[str], *, max_named: int = 3) -> str:
  """One phrase for a `top_pair_test` result, as the CLI and the report print it.

  E.g. "1 (text 2 x image 0 (92%))", or "none (a pair first in 22% of examples would)", followed by
  ", and 3 other pair(s) first more often than chance only" when there are such pairs.

  Args:
    result: a `top_pair_test` dict, or its typed form in a probe report (`results.StandoutTest`).
    modality_names: the store's modality names.
    max_named: standouts named before "and N more".
  """
  if not isinstance(result, Mapping):
    result = artifact.to_plain(result)
  standouts = [p for p in result["pairs"] if p["stands_out"]]
  if standouts:
    named = ", ".join(
      f"{pair_label(p['pair'], modality_names)} ({100 * p['rate']:.0f}%)"
      for p in standouts[:max_named]
    )
    more = f" and {len(standouts) - max_named} more" if len(standouts) > max_named else ""
    text = f"{len(standouts)} ({named}{more})"
  else:
    mdr = result.get("min_detectable_rate")
    text = "none" + (f" (a pair first in {100 * mdr:.0f}% of examples would)" if mdr else "")
  weak = result.get("n_preferred", 0) - len(standouts)
  if weak > 0:
    text += f", and {weak} other pair(s) first more often than chance only"
  return text


def per_example_separation(values: np.ndarray, std_errors: np.ndarray) -> dict:
  """Per example, the top pair (by value) against the runner-up and its standard error.

  Returns {"separated": top1 - top2 > 2 sqrt(se1^2 + se2^2) (None for one pair), "significant":
  share of pairs with abs(value) > 3 se, "top_z": top1 / se1, "top_abs": abs(top1)}. Exact zeros (a
  constant model) are never significant: the standard error gets a floor relative to the largest value.
  """
  v = np.asarray(values, np.float64)
  se = np.asarray(std_errors, np.float64)
  order = np.argsort(-v, kind="stable")
  sep = None
  if len(v) >= 2:
    a, b = order[0], order[1]
    sep = bool(v[a] - v[b] > 2 * math.hypot(se[a], se[b]))
  floor = 1e-12 + 1e-6 * np.abs(v).max()
  return {
    "separated": sep,
    "significant": float(np.mean(np.abs(v) > 3 * np.maximum(se, floor))),
    "top_z": float(v[order[0]] / max(se[order[0]], floor)),
    "top_abs": float(abs(v[order[0]])),
  }


# Each probe role reads its own index: SII in the synergy game, RG in the redundancy game.
ROLE_INDEX = {"sii": "SII", "rg": "RG"}


def other_role(role: str) -> str:
  """The probe role a call of `role` is weighed against."""
  return "rg" if role == "sii" else "sii"


def gate_weight(record: dict, role: str) -> float:
  """The gate weight, at the example's clean input, of the expert whose game `role` probes (1 for
  the mixture's game, a dense model, and files written before the weights were recorded)."""
  return float((record.get("gate") or {}).get(role, 1.0))


def is_call(
  first: bool,
  value: float,
  rival: float,
  min_effect: float,
  weight: float = 1.0,
  rival_weight: float = 1.0,
) -> bool:
  """The call rule: first by its signed log-odds score, and its expert's share of it at least
  `min_effect` nats and above the other role's share of the same pair (`rival`, -inf where the pair
  is not a candidate there).

  An expert's share is its gate weight times its score: the mixture's logits are the gate-weighted
  sum of the experts', so with the gate held at the clean input an expert's interaction enters the
  model's log-odds times its weight (exactly for a binary task). An expert the gate all but ignores
  can rank a pair first with a large score of its own and still not move the model: not a call.
  """
  mine = weight * value
  theirs = rival_weight * rival if math.isfinite(rival) else rival
  return bool(first) and mine >= min_effect and mine > theirs


def called_values(record: dict, role: str, min_effect: float) -> np.ndarray:
  """One example's log-odds scores of `role`'s probe [P], lowered below `min_effect` where the
  example calls nothing.

  The example calls its first pair (by the signed score of the role's own index: SII of the synergy
  game, RG of the redundancy game) when its expert's share of that score (gate weight x score,
  `is_call`) is at least `min_effect` and larger than the other role's share of the same pair (where
  the pair is a candidate there too). Otherwise every
  score is capped below `min_effect`, so `top_pair_test(..., min_value=min_effect)` counts no first
  place; the ranking itself is unchanged.
  """
  rival_role = other_role(role)
  rival_index = ROLE_INDEX[rival_role]
  v = np.asarray(record[role]["values"][ROLE_INDEX[role]]["logodds"], np.float64)
  if not v.size or not np.isfinite(v).all():
    return v
  top = int(np.argmax(v))
  rival = -np.inf
  other = record.get(rival_role)
  if other is not None and "logodds" in other["values"].get(rival_index, {}):
    members = tuple(record[role]["members"][top])
    for m, w in zip(other["members"], other["values"][rival_index]["logodds"]):
      if tuple(m) == members:
        rival = float(w)
        break
  weights = gate_weight(record, role), gate_weight(record, rival_role)
  if is_call(True, float(v[top]), rival, min_effect, *weights):
    return v
  return np.minimum(v, min_effect - 1.0)


def probe_standout(
  samples: Sequence[dict],
  *,
  sii_scale: str,
  rg_scale: str,
  alpha: float = DEFAULT_ALPHA,
  min_rate: float = DEFAULT_MIN_RATE,
  min_effect: float = DEFAULT_MIN_EFFECT,
) -> dict:
  """Both statistics for the `samples` of a probe JSON (`W/probe/<split>.json`), per index.

  SII is read from the synergy probe and RG from the redundancy probe, each on its ranking scale;
  the calls ("dataset_called") on the log-odds scale, where they are recorded.

  Returns:
    {"SII": {...}, "RG": {...}}, each with the per-example summary ("scale",
    "frac_top_separated", "frac_pairs_significant", "median_top_z", "mean_abs_top") and
    "dataset": `top_pair_test` by magnitude, "dataset_signed": by the signed score, and
    "dataset_called": by the signed log-odds score, an example calling its first pair only when
    its expert's share of that score is at least `min_effect` (nats; `called_values`).
  """
  out = {}
  for role, name, scale in (("sii", "SII", sii_scale), ("rg", "RG", rg_scale)):
    per = [
      per_example_separation(r[role]["values"][name][scale], r[role]["std_errors"][name][scale])
      for r in samples
    ]
    sep = [x["separated"] for x in per if x["separated"] is not None]
    out[name] = {
      "scale": scale,
      "frac_top_separated": float(np.mean(sep)) if sep else None,
      "frac_pairs_significant": float(np.mean([x["significant"] for x in per])) if per else None,
      "median_top_z": float(np.median([x["top_z"] for x in per])) if per else None,
      "mean_abs_top": float(np.mean([x["top_abs"] for x in per])) if per else None,
    }
    keys = [[tuple(m) for m in r[role]["members"]] for r in samples]
    vals = [r[role]["values"][name][scale] for r in samples]
    out[name]["dataset"] = top_pair_test(keys, vals, alpha=alpha, min_rate=min_rate)
    # By sign: first places of the most positive score, the index's own kind (SII > 0 synergy,
    # RG > 0 redundancy). A pair the expert merely uses a lot can rank first by magnitude with the
    # other sign (a copied pair in the synergy expert has SII < 0); by sign it does not.
    out[name]["dataset_signed"] = top_pair_test(
      keys, vals, alpha=alpha, min_rate=min_rate, by="signed"
    )
    # Called: the same, on the shift-invariant log-odds scale and only where the top score is an
    # effect worth naming and larger than the other expert's score of its own kind on that pair. A
    # tiny positive SII of a pair the expert merely passes on ranks first as easily as a planted
    # XOR (its size tells them apart), and a copied pair can be a real AND in the synergy expert
    # while the redundancy expert's gap on it is several times larger (docs/probes.md).
    if samples and all("logodds" in r[role]["values"][name] for r in samples):
      out[name]["dataset_called"] = top_pair_test(
        keys,
        [called_values(r, role, min_effect) for r in samples],
        alpha=alpha,
        min_rate=min_rate,
        by="signed",
        min_value=min_effect,
      )
  return out
