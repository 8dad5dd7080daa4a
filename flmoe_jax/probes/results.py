"""Typed probe results and their JSON form (STYLE 2.8: JSON, not pickle; baseline value in its own field).

* `InteractionValues`: exact interaction indices of every coalition up to `max_order` (SV, SII, Möbius).
* `PairScores`: per-pair scores (SII, redundancy gap) with standard errors, exact or Monte Carlo.
* `ProbeReport`: the probe stage's artifact (`flmoe probe`), the typed form of `W/probe/<split>.json`.

Array-valued fields are float arrays with the game's trailing output shape (`()` for a scalar game);
JSON stores them as nested lists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, ClassVar, Self

import numpy as np

from flmoe_jax import artifact, atomic
from flmoe_jax.errors import ProbeError

PROBE_FORMAT = "flmoe-probe"
# 2: pairs ranked on the target's log-odds by default; pair masking's `random` control draws from the
# candidate pairs' tokens, `random_all` from all tokens, and each carries a paired test against the
# ranked pairs (1: ranked by logit / probability, one control from all tokens, no test).
# 3: every SE of the marginal game includes the reference draw (2: SII's and RG-additive's only),
# and the planted pairs' detector scores include the sample-averaged map's (`global_auroc`).
# 4: each example records its probed experts' gate weights (`gate`), and calls weigh each expert's
# score by its weight (3 and 2 read unchanged: their calls weigh nothing, the new numbers are absent).
PROBE_VERSION = 4


def _tolist(a: Any) -> Any:
  a = np.asarray(a)
  return a.item() if a.ndim == 0 else a.tolist()


def round_sig(x: Any, digits: int = 6) -> Any:
  """Rounds floats (nested lists) to `digits` significant digits: smaller JSON, same information."""
  a = np.asarray(x, np.float64)
  if a.ndim == 0:
    return float(f"{float(a):.{digits}g}")
  return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(a).tolist()


def round_tree(x: Any) -> Any:
  """`round_sig` on every float of a nested dict / list (ints, bools, strings and None pass through)."""
  if isinstance(x, dict):
    return {k: round_tree(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [round_tree(v) for v in x]
  return round_sig(x) if isinstance(x, float) else x


class _JsonResult:
  """Base of the result dataclasses: their dict / JSON form (`flmoe_jax.artifact`'s codec).

  A subclass sets `_KIND`, the dict's `kind`; the dict holds `kind`, then the fields in declaration
  order. A missing field without a default is a `MissingFieldError` (a KeyError).
  """

  _KIND: ClassVar[str]

  def to_dict(self) -> dict:
    return {"kind": self._KIND, **artifact.to_plain(self)}

  @classmethod
  def from_dict(cls, d: dict) -> Self:
    return artifact.from_plain(cls, {k: v for k, v in d.items() if k != "kind"})

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), allow_nan=False)


@dataclasses.dataclass(frozen=True)
class InteractionValues(_JsonResult):
  """Interaction indices of all coalitions of size min_order..max_order (exact enumeration).

  Attributes:
    index: `SV`, `SII` or `Moebius`.
    max_order: largest coalition size reported.
    min_order: smallest coalition size reported (0 includes the empty set's index value).
    n_players: n.
    interactions: the coalitions, sorted tuples, in (size, lexicographic) order.
    values: float [len(interactions), *out_shape].
    baseline_value: v(∅) [*out_shape] (kept apart from the index values, shapiq #321).
    grand_value: v(N) [*out_shape].
    budget: number of coalitions evaluated (2^n).
    estimator: `exact`.
    seed: None (exact enumeration draws nothing).
    exact: True.
    outputs: names of the trailing output axis, if any.
  """

  index: str
  max_order: int
  min_order: int
  n_players: int
  interactions: tuple[tuple[int, ...], ...]
  values: np.ndarray
  baseline_value: np.ndarray
  grand_value: np.ndarray
  budget: int
  estimator: str = "exact"
  seed: int | None = None
  exact: bool = True
  outputs: tuple[str, ...] = ()

  _KIND = "interaction_values"

  @property
  def dict_values(self) -> dict[tuple[int, ...], Any]:
    """{coalition: value} (floats for scalar games)."""
    return {t: _tolist(v) for t, v in zip(self.interactions, self.values)}

  def __getitem__(self, coalition: tuple[int, ...]) -> Any:
    return self.dict_values[tuple(sorted(coalition))]


@dataclasses.dataclass(frozen=True)
class PairScores(_JsonResult):
  """Scores of player pairs (i, j) of one game.

  Attributes:
    pairs: int [P, 2] player ids.
    values: {index name: float [P, *out_shape]}; names among `SII` (Grabisch-Roubens, docs/method.md 5.2),
      `RG` (redundancy gap E[D_ij - max(D_i, D_j)], docs/method.md 5.3) and `RG-additive`
      (E[D_ij - D_i - D_j] = -SII).
    std_errors: same keys and shapes; standard error of the Monte Carlo mean (0 when exact).
    baseline_value: v(∅) [*out_shape], kept apart from the scores.
    grand_value: v(N) [*out_shape].
    n_players: n.
    budget: coalitions evaluated (4 per draw and pair, or 2^n when exact).
    n_samples: background coalitions drawn per pair (0 when exact).
    estimator: `exact`, `monte-carlo` or `monte-carlo-antithetic`.
    seed: the seed or raw key data the draws came from (None when exact).
    exact: whether the values are exact.
    outputs: names of the trailing output axis, if any.
  """

  pairs: np.ndarray = dataclasses.field(metadata={"dtype": np.int64, "shape": (-1, 2)})
  values: dict[str, np.ndarray]
  std_errors: dict[str, np.ndarray]
  baseline_value: np.ndarray
  grand_value: np.ndarray
  n_players: int
  budget: int
  n_samples: int
  estimator: str
  seed: Any
  exact: bool
  outputs: tuple[str, ...] = ()

  _KIND = "pair_scores"

  @property
  def index(self) -> tuple[str, ...]:
    return tuple(self.values)

  def value(self, index: str = "SII", output: str | None = None) -> np.ndarray:
    """float [P] (or [P, *out]) of one index, optionally one named output."""
    v = np.asarray(self.values[index])
    return v[..., self.outputs.index(output)] if output is not None else v

  def dict_values(self, index: str = "SII") -> dict[tuple[int, int], Any]:
    """{(i, j): value}."""
    return {(int(i), int(j)): _tolist(v) for (i, j), v in zip(self.pairs, self.values[index])}

  def ranking(self, index: str = "SII", output: str | None = None) -> np.ndarray:
    """Pair indices sorted by descending score (ties: lower pair index first), int [P]."""
    v = self.value(index, output)
    if v.ndim != 1:
      raise ValueError(f"ranking needs a scalar score per pair; shape {v.shape}, pass `output`")
    return np.argsort(-v, kind="stable")


# --------------------------------------------------------------------------------------------------
# The probe stage's artifact: W/probe/<split>[_<tag>].json.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProbeRun:
  """Which model was probed.

  Attributes:
    workdir: the run directory.
    seed: the training seed probed.
    which: `best` or `latest` checkpoint.
    checkpoint: the checkpoint's scalar metadata (epoch, step, best metric, ...).
    config_name: the run config's name.
    store: the feature store's path.
    model: the model class.
  """

  workdir: str
  seed: int
  which: str
  checkpoint: dict[str, Any]
  config_name: str
  store: str
  model: str


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
  """How a probe was computed: its options as resolved for the run (everything to rerun it).

  Attributes:
    samples: examples probed.
    budget: coalitions evaluated per example and expert.
    n_draws: Monte Carlo draws per pair.
    pairs: `all` cross-modal pairs or the `topk` x `topk` tokens of an attribution map.
    k: tokens per modality of `topk`.
    n_random_pairs: random pairs added to the candidates.
    n_pairs_padded: candidate pairs per example, padded to one shape.
    seed: the Monte Carlo seed.
    antithetic: antithetic draws.
    estimator: `monte-carlo` or `monte-carlo-antithetic`.
    exact: whether the scores are exact.
    max_coalitions_per_call: the memory knob as resolved.
    fill: the `--fill` option.
    fills: what "absent" means in each game: {`SII` | `RG` | `pair_masking`: `mean` | `zero` |
      `marginal`}.
    se_includes_references: per index, the indices whose standard errors include the draw of the
      marginal game's reference examples.
    references: reference examples of the marginal game (None without it).
    reference_rows: their train-split rows.
    target_source: `pred` or `true`.
    attribution: the map that picks `topk` tokens (None for `all`).
    mask_budgets: pair-masking budgets.
    mask_repeats: random draws per control.
    sii_rank_score: the scale SII ranks pairs on.
    rg_rank_score: the scale the redundancy gap ranks pairs on.
    standout_min_rate: the first-place rate a pair must exceed to stand out.
    min_effect: the smallest signed score (nats of log-odds) that calls a pair.
    attention: the experts' attention implementation.
    indices: the pair indices recorded per example.
    scales: the score scales recorded per example.
    experts: the expert of each game: {`sii`: name, `rg`: name}.
    modalities: the store's modality names.
    kinds: per modality `tokens` | `patches`.
    map_orders: random orders of the `shapley` map (None for the other maps; absent before it).
  """

  samples: int
  budget: int
  n_draws: int
  pairs: str
  k: int
  n_random_pairs: int
  n_pairs_padded: int
  seed: int
  antithetic: bool
  estimator: str
  exact: bool
  max_coalitions_per_call: int
  fill: str
  fills: dict[str, str]
  se_includes_references: dict[str, tuple[str, ...]]
  references: int | None
  reference_rows: tuple[int, ...] | None
  target_source: str
  attribution: str | None
  mask_budgets: tuple[int, ...]
  mask_repeats: int
  sii_rank_score: str
  rg_rank_score: str
  standout_min_rate: float
  min_effect: float
  attention: str
  indices: tuple[str, ...]
  scales: tuple[str, ...]
  experts: dict[str, str]
  modalities: tuple[str, ...]
  kinds: tuple[str, ...]
  map_orders: int | None = None

  def rank_score(self, index: str) -> str:
    """The scale pairs are ranked on by `SII` or `RG`."""
    return self.sii_rank_score if index == "SII" else self.rg_rank_score

  def expert(self, index: str) -> str:
    """The expert whose game `SII` or `RG` scores."""
    return self.experts["sii" if index == "SII" else "rg"]


@dataclasses.dataclass(frozen=True)
class MaskingCurve:
  """One pair-masking curve, per budget: what masking the ranked pairs' tokens does.

  Probabilities and metrics are on their own 0-1 scale (the report shows them x100).

  Attributes:
    prob_drop: mean drop of the target probability over the examples.
    prob_drop_se: its standard error over the examples.
    metric: the task metric with the tokens masked.
    metric_drop: clean metric minus `metric`.
  """

  prob_drop: tuple[float, ...]
  prob_drop_se: tuple[float, ...]
  metric: tuple[float, ...]
  metric_drop: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ControlCurve(MaskingCurve):
  """A random control's curve (means over its repeats) and the paired test of the ranked pairs
  against it, per budget (the test fields are None in a file without the test).

  Attributes:
    metric_std: std of the metric over the repeats.
    gap: mean per-example drop of the ranked pairs minus this control's.
    gap_se: its standard error.
    t: the paired t statistic.
    p: one-sided p-value (ranked drop > control drop).
    p_holm: `p` Holm-adjusted over the budgets.
    p_less_holm: Holm-adjusted p-value of the opposite side (ranked drop < control drop).
    beats: `p_holm` < alpha.
  """

  metric_std: tuple[float, ...] | None = None
  gap: tuple[float, ...] | None = None
  gap_se: tuple[float, ...] | None = None
  t: tuple[float, ...] | None = None
  p: tuple[float, ...] | None = None
  p_holm: tuple[float, ...] | None = None
  p_less_holm: tuple[float, ...] | None = None
  beats: tuple[bool, ...] | None = None


@dataclasses.dataclass(frozen=True)
class IndexMasking:
  """Pair masking of the pairs one index ranks first (docs/method.md 6).

  Attributes:
    expert: the expert whose game ranked the pairs.
    rank_score: the scale the pairs were ranked on (e.g. `logodds`).
    ranked: the top-ranked pairs' curve.
    random: random tokens of the candidate pairs, matched in count per modality (the paired test's
      control).
    random_all: random tokens of all tokens, matched in count.
    mean_unique_tokens: per budget and modality, the mean number of distinct tokens masked.
  """

  expert: str
  rank_score: str
  ranked: MaskingCurve
  random: ControlCurve
  random_all: ControlCurve
  mean_unique_tokens: tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class PairMasking:
  """Pair-level masking faithfulness against random pairs (the C2 claim), per index.

  Attributes:
    budgets: numbers of top pairs masked.
    repeats: random draws per control and budget.
    metric: the task metric reported beside the probability drop.
    clean_metric: the metric on the unmasked examples.
    clean_prob: mean target probability on the unmasked examples.
    n: examples.
    controls: what each control draws.
    test: the paired test, in words.
    alpha: its level.
    min_examples: the fewest examples the test is read on.
    SII: pairs ranked by the synergy expert's Shapley interaction index.
    RG: pairs ranked by the redundancy expert's redundancy gap.
  """

  budgets: tuple[int, ...]
  repeats: int
  metric: str
  clean_metric: float
  clean_prob: float
  n: int
  controls: dict[str, str]
  test: str
  alpha: float
  min_examples: int
  SII: IndexMasking
  RG: IndexMasking

  def index(self, name: str) -> IndexMasking:
    """The block of index `name` (`SII` or `RG`)."""
    return {"SII": self.SII, "RG": self.RG}[name]


@dataclasses.dataclass(frozen=True)
class StandoutPair:
  """One pair of an across-example first-place test (`standout.top_pair_test`).

  Attributes:
    pair: its members (modality, position, modality, position).
    n: examples in which it is a candidate.
    firsts: its first places (ties share the credit).
    rate: firsts / n, 0-1.
    se: binomial standard error of `rate`.
    chance: the rate a pair ranked at random would have (mean of 1 / candidates).
    mean_abs: its mean absolute score over those examples (its size beside the rank).
    p_chance: one-sided binomial p-value against `chance`.
    p_chance_holm: Holm-adjusted over the pairs.
    prefers: `p_chance_holm` < alpha (first more often than chance).
    p: one-sided binomial p-value against max(chance, min_rate).
    p_holm: Holm-adjusted over the pairs.
    stands_out: `p_holm` < alpha (first in a material share of the examples).
  """

  pair: tuple[int, ...]
  n: int
  firsts: float
  rate: float
  se: float
  chance: float
  mean_abs: float
  p_chance: float
  p_chance_holm: float
  prefers: bool
  p: float
  p_holm: float
  stands_out: bool


@dataclasses.dataclass(frozen=True)
class StandoutTest:
  """Which pairs rank first across examples more often than chance, and which stand out.

  Attributes:
    by: `abs` (magnitude) or `signed` ranking.
    alpha: family-wise error rate of each Holm procedure.
    min_rate: the first-place rate a pair must exceed to stand out.
    test: the test, in words.
    n_examples: examples tested.
    n_skipped_non_finite: examples left out for a NaN or infinite score.
    n_pairs: distinct pairs.
    n_preferred: pairs first more often than chance.
    n_standouts: pairs that stand out.
    min_detectable_rate: the smallest rate a pair present in every example would stand out with.
    min_value: `dataset_called`: the smallest top score that calls a pair (None: every example).
    n_no_call: examples whose top score is below `min_value`.
    pairs: the preferred pairs, then the most frequent first places, by rate.
  """

  by: str
  alpha: float
  min_rate: float
  test: str
  n_examples: int
  n_skipped_non_finite: int
  n_pairs: int
  n_preferred: int
  n_standouts: int
  min_detectable_rate: float | None
  min_value: float | None
  n_no_call: int
  pairs: tuple[StandoutPair, ...]


@dataclasses.dataclass(frozen=True)
class IndexStandout:
  """The standout statistics of one index (`standout.probe_standout`).

  Attributes:
    scale: the scale the index ranks pairs on.
    frac_top_separated: share of examples whose top pair beats the runner-up by 2 SE (None: no
      example with two pairs).
    frac_pairs_significant: mean share of pairs with |score| > 3 SE.
    median_top_z: median of the top score over its SE.
    mean_abs_top: mean |top score|.
    dataset: the first-place test by magnitude.
    dataset_signed: by the signed score (the index's own kind first).
    dataset_called: by the signed log-odds score, calls only (None without log-odds values).
  """

  scale: str
  frac_top_separated: float | None
  frac_pairs_significant: float | None
  median_top_z: float | None
  mean_abs_top: float | None
  dataset: StandoutTest
  dataset_signed: StandoutTest
  dataset_called: StandoutTest | None = None


@dataclasses.dataclass(frozen=True)
class ProbeTiming:
  """Wall time and throughput of the probe.

  Attributes:
    total_s: the whole probe, compilation included, in seconds.
    mc_s: the Monte Carlo games, in seconds.
    expert_evaluations: model passes over coalitions.
    expert_evaluations_per_s: steady-state passes per second (compilation excluded).
  """

  total_s: float
  mc_s: float
  expert_evaluations: int
  expert_evaluations_per_s: int


@dataclasses.dataclass(frozen=True)
class ProbeReport(artifact.Artifact):
  """The probe stage's artifact, `W/probe/<split>[_<tag>].json` (`save`, `load`: `flmoe_jax.artifact`).

  The sections the report's verdicts and tables read are typed (`run`, `settings`, `pair_masking`,
  `standout`, `timing`); the per-example records, the planted and evidence scores and the stability
  blocks are JSON objects whose keys docs/probes.md lists.

  Attributes:
    run: the probed model.
    split: the store split.
    settings: the options as resolved for this probe.
    samples: one record per example: its games' pair scores with standard errors on every scale.
    pair_masking: pair-level masking against random pairs.
    standout: per index, whether any pair ranks first across examples more than chance allows.
    timing: wall time and throughput.
    planted: synthetic stores: how the planted pairs rank (else None).
    evidence: stores with an evidence rule: top pairs against the evidence positions (else None).
    stability: `--stability`: the rankings under a new Monte Carlo seed and training seed.
  """

  run: ProbeRun
  split: str
  settings: ProbeSettings
  samples: tuple[dict[str, Any], ...]
  pair_masking: PairMasking
  standout: dict[str, IndexStandout]
  timing: ProbeTiming
  planted: dict[str, Any] | None = None
  evidence: dict[str, Any] | None = None
  stability: dict[str, Any] | None = None

  FORMAT: ClassVar[str] = PROBE_FORMAT
  VERSION: ClassVar[int] = PROBE_VERSION
  READS: ClassVar[tuple[int, ...]] = (2, 3, PROBE_VERSION)
  ERROR: ClassVar[type[Exception]] = ProbeError
  INDENT: ClassVar[int | None] = None  # one example record per probed example: no indentation
  REMEDY: ClassVar[str] = "rerun `flmoe probe`"


# One atomic writer for the package (`flmoe_jax.atomic`); the name the probe figures use.
write_bytes_atomic = atomic.write_bytes


def read_probe(path: str | os.PathLike) -> dict:
  """Reads a `W/probe/<split>.json` file as its document dict, checked against `ProbeReport`.

  Raises:
    ProbeError: no such file, not a probe file, an unknown version or a malformed document.
  """
  p = pathlib.Path(path)
  if not p.is_file():
    raise ProbeError(f"{p}: no probe results (run `flmoe probe` first)")
  return ProbeReport.load(p).to_dict()
