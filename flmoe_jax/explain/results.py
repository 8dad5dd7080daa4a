"""Typed, versioned results of `flmoe explain` (`{"format": "flmoe-explain", "version": 3, ...}`).

Every number is a `MeanStd`: its per-seed `values` (in the order of the report's `seeds`), their
mean and their sample std (ddof=1; null for a single seed). Faithfulness numbers are x100
(percentage points of target probability), as in the paper's tables. Gaps are computed per seed and
then averaged, so the std of a gap is the std of the per-seed gaps.

`ExplainReport.to_json()` / `ExplainReport.from_json()` (the package's one codec, `flmoe_jax.artifact`)
round-trip exactly; the reader refuses other formats and unknown versions instead of guessing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from flmoe_jax.artifact import Artifact
from flmoe_jax.errors import ExplainError

FORMAT = "flmoe-explain"
# Version 2 adds the concentration of the unnormalised maps (`MapStats.entropy_raw`, `gini_raw`) and
# the trapezoid AOPC (`FaithCurve.aopc_trapezoid`); version-1 files read with those fields None.
# Version 3 adds the evidence scores of stores with a pixel ground truth (`ModelReport.evidence`).
VERSION = 3
READS = (1, 2, 3)


@dataclasses.dataclass(frozen=True)
class MeanStd:
  """A number over seeds.

  Attributes:
    mean: mean over seeds (None if no finite value).
    std: sample std (ddof=1) over seeds; None for fewer than two values.
    values: per-seed values.
  """

  mean: float | None
  std: float | None
  values: tuple[float, ...]

  @classmethod
  def of(cls, values: Sequence[float]) -> MeanStd:
    """Aggregates per-seed values (non-finite values are kept in `values` but not averaged)."""
    vals = tuple(float(v) for v in values)
    fin = [v for v in vals if math.isfinite(v)]
    mean = float(np.mean(fin)) if fin else None
    std = float(np.std(fin, ddof=1)) if len(fin) > 1 else None
    return cls(mean=mean, std=std, values=vals)

  def fmt(self, digits: int = 2) -> str:
    """`mean +/- std` (or `mean`, or `n/a`)."""
    if self.mean is None:
      return "n/a"
    if self.std is None:
      return f"{self.mean:.{digits}f}"
    return f"{self.mean:.{digits}f} +/- {self.std:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class FaithCurve:
  """Masking faithfulness of one map (view) measured on one output, x100.

  Attributes:
    view: whose map: an expert name, `mixture` or `dense`.
    output: where the drop is measured: `own` (the view's own output: expert e's probabilities, or
      the mixture's for the mixture view) or `mixture`.
    ks: budgets K in percent.
    comp, comp_random, suff, suff_random: per K.
    comp_gap: per K, identified - random comprehensiveness (higher = more faithful).
    suff_gap: per K, random - identified sufficiency (higher = more faithful).
    aopc: AOPC (mean over K) of the six quantities above, keyed by their names.
    aopc_trapezoid: the same as a normalised trapezoid area over K (None in version-1 files).
  """

  view: str
  output: str
  ks: tuple[float, ...]
  comp: tuple[MeanStd, ...]
  comp_random: tuple[MeanStd, ...]
  suff: tuple[MeanStd, ...]
  suff_random: tuple[MeanStd, ...]
  comp_gap: tuple[MeanStd, ...]
  suff_gap: tuple[MeanStd, ...]
  aopc: dict[str, MeanStd]
  aopc_trapezoid: dict[str, MeanStd] | None = None


@dataclasses.dataclass(frozen=True)
class MapStats:
  """Concentration of one view's map on one modality (means over samples, then over seeds).

  Attributes:
    view: expert name, `mixture` or `dense`.
    modality: modality name.
    entropy: normalised entropy (lower = more concentrated).
    gini: Gini coefficient (higher = more concentrated).
    top_mass: per K, the share of the map's mass on its top-K% tokens.
    mass_share: share of the view's raw importance on this modality.
    entropy_raw: normalised entropy of the unnormalised map (None in version-1 files).
    gini_raw: Gini coefficient of the unnormalised map (None in version-1 files).
  """

  view: str
  modality: str
  entropy: MeanStd
  gini: MeanStd
  top_mass: tuple[MeanStd, ...]
  mass_share: MeanStd
  entropy_raw: MeanStd | None = None
  gini_raw: MeanStd | None = None


@dataclasses.dataclass(frozen=True)
class PairStats:
  """Overlap of two views' maps on one modality (lower = more specific).

  Attributes:
    a: first view (e.g. `syn`, or `baseline:dense`).
    b: second view.
    modality: modality name.
    jaccard: per K, top-K% Jaccard overlap.
    cosine: cosine similarity of the maps.
  """

  a: str
  b: str
  modality: str
  jaccard: tuple[MeanStd, ...]
  cosine: MeanStd


@dataclasses.dataclass(frozen=True)
class PlantedHits:
  """Synthetic stores: how often a planted position is in a view's top-K% tokens.

  Attributes:
    mechanism: planted mechanism name (ground_truth.json).
    kind: synergy | redundancy | complement | uniq_text | uniq_image.
    modality: modality of the position.
    position: token/patch index.
    view: expert name or `mixture`.
    hit_rate: per K, fraction of samples with the position in the top-K% set.
    chance: per K, the expected rate of a random top-K% set (mean of m / n_candidates).
  """

  mechanism: str
  kind: str
  modality: str
  position: int
  view: str
  hit_rate: tuple[MeanStd, ...]
  chance: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class EvidenceHits:
  """Stores with a label-free evidence rule (easy-vqa's shape patches and attribute words): how much
  of a view's map lies on the evidence positions of each example.

  Attributes:
    view: expert name or `mixture`.
    modality: the modality.
    mass_share: mean share of the map's |attribution| mass (over candidate positions) on evidence
      positions, 0-1.
    precision: per K, mean share of the view's top-K% positions that are evidence positions, 0-1.
    chance: mean share of candidate positions that are evidence (what a uniform map and a random
      top-K% set score on both), 0-1.
    num_examples: examples per seed with at least one evidence position in the modality.
  """

  view: str
  modality: str
  mass_share: MeanStd
  precision: tuple[MeanStd, ...]
  chance: float
  num_examples: int


@dataclasses.dataclass(frozen=True)
class ModelReport:
  """Everything measured for one run directory.

  Attributes:
    workdir: the run directory.
    name: the run's config name.
    kind: `fl_i2moe` or `dense`.
    seeds: the seeds (order of every `MeanStd.values`).
    expert_names: the model's experts.
    num_examples: samples explained per seed.
    faithfulness: one curve per (view, output).
    concentration: one entry per (view, modality).
    specificity: cross-expert overlaps (experts only; empty for a single-expert model).
    expert_weights: mean gate weight per expert, in `expert_names` order.
    planted: planted-position hit rates (synthetic stores only), else empty.
    evidence: evidence scores per (view, modality) (stores with an evidence rule), else empty.
    config: the run's training config (its config.json).
  """

  workdir: str
  name: str
  kind: str
  seeds: tuple[int, ...]
  expert_names: tuple[str, ...]
  num_examples: int
  faithfulness: tuple[FaithCurve, ...]
  concentration: tuple[MapStats, ...]
  specificity: tuple[PairStats, ...]
  expert_weights: tuple[MeanStd, ...]
  planted: tuple[PlantedHits, ...] = ()
  evidence: tuple[EvidenceHits, ...] = ()
  config: dict[str, Any] = dataclasses.field(default_factory=dict)

  def curve(self, view: str, output: str = "own") -> FaithCurve:
    """The faithfulness curve of a view on an output."""
    for c in self.faithfulness:
      if c.view == view and c.output == output:
        return c
    raise ExplainError(f"no curve for view {view!r} on output {output!r}")


@dataclasses.dataclass(frozen=True)
class ExplainSettings:
  """How the explanation was computed (everything needed to rerun it).

  Attributes:
    split: store split.
    method: attribution method.
    ks: budgets K in percent.
    fill: `mean` or `zero`.
    target: `pred` or `true`.
    samples: samples per seed (None = the whole split).
    seeds: the seeds requested (`all` or a comma-separated list).
    repeats: random-control repeats.
    random_seed: seed of the random-control key (folded with the batch index).
    batch_size: batch size.
    steps_per_call: the memory knob (None = all at once).
    ig_steps: IG steps (method `ig`).
    ig_baseline: IG baseline (method `ig`).
  """

  split: str
  method: str
  ks: tuple[float, ...]
  fill: str
  target: str
  samples: int | None
  seeds: str
  repeats: int
  random_seed: int
  batch_size: int
  steps_per_call: int | None
  ig_steps: int
  ig_baseline: str


@dataclasses.dataclass(frozen=True)
class ExplainReport(Artifact):
  """The document written to `W/explain/<split>.json` (`save`, `load`: the `Artifact` codec).

  Attributes:
    settings: how it was computed.
    store: the feature store's path.
    evidence_rule: how the store's evidence positions are found ("" = no evidence rule).
    model: the explained run.
    baseline: the dense-transformer baseline run (`--baseline`), or None.
    comparison: baseline map (`baseline:dense`) vs each expert map and the mixture map, per
      modality, over paired seeds; empty without a baseline.
    seed_pairs: (model seed, baseline seed) pairs used for `comparison`.
    figures: PNG file names written next to the JSON.
    created: ISO time stamp.
    flmoe_version: package version.
  """

  settings: ExplainSettings
  store: str
  model: ModelReport
  baseline: ModelReport | None = None
  comparison: tuple[PairStats, ...] = ()
  seed_pairs: tuple[tuple[int, int], ...] = ()
  figures: tuple[str, ...] = ()
  created: str = ""
  flmoe_version: str = ""
  evidence_rule: str = ""

  FORMAT: ClassVar[str] = FORMAT
  VERSION: ClassVar[int] = VERSION
  READS: ClassVar[tuple[int, ...]] = READS
  ERROR: ClassVar[type[Exception]] = ExplainError
  REMEDY: ClassVar[str] = "rerun `flmoe explain`"
