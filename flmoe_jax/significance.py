"""The statistics behind the report's verdicts: paired tests over examples (C2) and seed intervals (C1).

**Is a ranking better than its control?** Paired tests over examples, with family-wise error control.

Pair masking (`pipeline._masking_summary`) compares, per example, the drop of the target probability
when the top-b ranked pairs are masked with the drop when random tokens are masked instead (the same
number of tokens per modality, averaged over the control's repeats). Examples are the replicates: the
per-example difference d_i = ranked drop - control drop is the statistic, and the question "does the
ranking beat the control at budget b" is a one-sided paired t-test of mean(d) > 0 over the N examples.
Every budget of every index is one hypothesis; Holm's step-down adjustment over all of them keeps the
chance of any false "beats" at alpha, whatever their dependence.

The t-test is a statement about the mean difference. With few examples it has little power, and its
normal approximation is poor: a verdict needs at least `MIN_EXAMPLES` (the report says NOT SHOWN below).

**Does one model's number differ from another's?** Training seeds are the replicates: `diff_ci` gives
the Welch interval of a difference of two means over seeds (each model's seeds independent), `mean_ci`
the t interval of one mean, `diff_test` Welch's one-sided tests of the difference beyond a margin, in
either direction. With fewer than two seeds of either there is no interval or test (None).

A claim that *every* one of several differences goes one way is an intersection-union test: it holds
at level alpha when each difference is significant at alpha on its own (Berger 1982), so it needs no
multiplicity adjustment; the claim that *some* difference goes the other way does (Holm).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

DEFAULT_ALPHA = 0.05
# Fewer examples than this and no verdict is drawn from the paired test (too little power, and the
# t distribution of a mean of so few skewed differences is not to be trusted).
MIN_EXAMPLES = 30
TEST_NAME = "one-sided paired t-test over examples (ranked drop - control drop > 0), Holm-adjusted"


def holm(p: np.ndarray) -> np.ndarray:
  """Holm step-down adjusted p-values [m] (family-wise error control for any dependence)."""
  p = np.asarray(p, np.float64)
  m = len(p)
  order = np.argsort(p, kind="stable")
  adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
  out = np.empty(m)
  out[order] = adj
  return out


def paired_greater(diff: np.ndarray) -> dict[str, np.ndarray]:
  """One-sided paired t-tests of mean > 0, one per column.

  Args:
    diff: float [N, K]: per example (rows), the paired difference of each hypothesis (columns).

  Returns:
    {"n": N, "mean": [K], "se": [K], "t": [K], "p": [K] (mean > 0), "p_less": [K] (mean < 0)}. A
    column of identical differences has se 0 and t 0: p is 0 when its mean is positive, else 1 (and
    the mirror for p_less). N < 2 gives p = p_less = 1 (nothing can be shown).
  """
  d = np.asarray(diff, np.float64)
  n = d.shape[0]
  mean = d.mean(0) if n else np.zeros(d.shape[1])
  if n < 2:
    ones = np.ones(d.shape[1])
    return {
      "n": n,
      "mean": mean,
      "se": np.zeros_like(mean),
      "t": 0 * ones,
      "p": ones,
      "p_less": ones,
    }
  se = d.std(0, ddof=1) / np.sqrt(n)
  safe = np.where(se > 0, se, 1.0)
  t = np.where(se > 0, mean / safe, 0.0)  # JSON has no infinity; p carries the degenerate case
  p = np.where(se > 0, stats.t.sf(t, n - 1), (mean <= 0).astype(np.float64))
  p_less = np.where(se > 0, stats.t.cdf(t, n - 1), (mean >= 0).astype(np.float64))
  return {"n": n, "mean": mean, "se": se, "t": t, "p": p, "p_less": p_less}


def beats_control(
  ranked: np.ndarray, control: np.ndarray, *, alpha: float = DEFAULT_ALPHA
) -> list[dict[str, list]]:
  """Does each ranking beat its control at each budget? Paired tests, Holm over all of them.

  Args:
    ranked: float [N, I, B]: per example, the drop when the top-b pairs of ranking i are masked.
    control: float [N, I, B]: the same examples' drop under the control (mean over its repeats).
    alpha: family-wise error rate of the I x B "beats" calls (and, separately, of the "worse" ones).

  Returns:
    Per ranking i, lists over budgets: `gap` (mean of ranked - control) and `gap_se`, `t`, one-sided
    `p` and Holm-adjusted `p_holm` (ranked > control), `p_less_holm` (ranked < control), and
    `beats` (p_holm < alpha).
  """
  ranked, control = np.asarray(ranked, np.float64), np.asarray(control, np.float64)
  n, n_i, n_b = ranked.shape
  t = paired_greater((ranked - control).reshape(n, n_i * n_b))
  p_holm = holm(t["p"]).reshape(n_i, n_b)
  p_less_holm = holm(t["p_less"]).reshape(n_i, n_b)
  out = []
  for i in range(n_i):
    sl = slice(i * n_b, (i + 1) * n_b)
    out.append(
      {
        "gap": t["mean"][sl].tolist(),
        "gap_se": t["se"][sl].tolist(),
        "t": t["t"][sl].tolist(),
        "p": t["p"][sl].tolist(),
        "p_holm": p_holm[i].tolist(),
        "p_less_holm": p_less_holm[i].tolist(),
        "beats": [bool(p < alpha) for p in p_holm[i]],
      }
    )
  return out


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float] | None:
  """t interval of a mean over seeds: (mean, low, high), or None for fewer than two finite values."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  if len(v) < 2:
    return None
  half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
  return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def proportion_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
  """Wilson score interval (low, high) of a binomial proportion successes / n (e.g. an accuracy)."""
  ci = stats.binomtest(int(successes), int(n)).proportion_ci(
    confidence_level=level, method="wilson"
  )
  return float(ci.low), float(ci.high)


def diff_ci(a, b, level: float = 0.95) -> tuple[float, float, float] | None:
  """Welch interval of mean(a) - mean(b) over independent seeds: (difference, low, high).

  Args:
    a: per-seed values of the first model.
    b: per-seed values of the second.
    level: coverage of the interval.

  Returns:
    None when either side has fewer than two finite values. Two sets of identical values give a
    zero-width interval at their difference.
  """
  w = _welch(a, b)
  if w is None:
    return None
  d, se, dof = w
  if se == 0:
    return d, d, d
  half = stats.t.ppf(0.5 + level / 2, dof) * se
  return d, float(d - half), float(d + half)


def _welch(a, b) -> tuple[float, float, float] | None:
  """(mean(a) - mean(b), its Welch standard error, Welch-Satterthwaite degrees of freedom) over the
  finite values; None when either side has fewer than two. Identical values give se 0 and dof
  len(a) + len(b) - 2."""
  a = np.asarray([x for x in a if x is not None and np.isfinite(x)], np.float64)
  b = np.asarray([x for x in b if x is not None and np.isfinite(x)], np.float64)
  if len(a) < 2 or len(b) < 2:
    return None
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  d = float(a.mean() - b.mean())
  if va + vb == 0:
    return d, 0.0, float(len(a) + len(b) - 2)
  dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  return d, float(np.sqrt(va + vb)), float(dof)


def diff_test(a, b, margin: float = 0.0) -> dict[str, float] | None:
  """Welch's one-sided tests of d = mean(a) - mean(b) beyond a margin, over independent seeds.

  Args:
    a: per-seed values of the first model.
    b: per-seed values of the second.
    margin: the smallest difference that counts (>= 0).

  Returns:
    {"diff", "se", "dof", "p_lower" (H0: d >= -margin), "p_higher" (H0: d <= margin)}, or None when
    either side has fewer than two finite values. Two sets of identical values (se 0) give p 0 where
    the difference is beyond the margin, else 1.
  """
  w = _welch(a, b)
  if w is None:
    return None
  d, se, dof = w
  if se == 0:
    p_lower, p_higher = float(d >= -margin), float(d <= margin)
  else:
    p_lower = float(stats.t.cdf((d + margin) / se, dof))
    p_higher = float(stats.t.sf((d - margin) / se, dof))
  return {"diff": d, "se": se, "dof": dof, "p_lower": p_lower, "p_higher": p_higher}
