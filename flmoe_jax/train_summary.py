"""The training stage's artifacts: `SeedResult` (`seed_<s>/result.json`) and `TrainSummary` (`summary.json`).

Metrics are on their own scale (accuracy, F1 and AUROC in 0-1; `weight_<e>`: the mean gate weight of
expert e at the selected checkpoint); `Moments.std` is the population std over seeds (np.std, ddof=0,
as the reference code reports it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from flmoe_jax import artifact
from flmoe_jax.errors import RunDirError


@dataclasses.dataclass(frozen=True)
class SeedResult:
  """One finished seed.

  Attributes:
    seed: the training seed.
    best_epoch: the epoch of the selected (best-validation) checkpoint.
    selection_metric: the validation metric that selected it.
    best_val: validation metrics of the selected checkpoint.
    test: test metrics of the selected checkpoint (empty for a store without a test split).
    steps: optimizer steps taken.
    num_parameters: trainable parameters.
    converted_from_reference: the weights came from `flmoe convert`, not from training.
  """

  seed: int
  best_epoch: int
  selection_metric: str
  best_val: dict[str, float]
  test: dict[str, float]
  steps: int
  num_parameters: int
  converted_from_reference: bool = False

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> SeedResult:
    """Reads a `result.json` dict."""
    return artifact.from_plain(cls, d)


@dataclasses.dataclass(frozen=True)
class Moments:
  """A metric over seeds: mean and population std (ddof=0)."""

  mean: float
  std: float


@dataclasses.dataclass(frozen=True)
class TrainSummary(artifact.Artifact):
  """The training stage's artifact, `W/summary.json` (`save`, `load`: `flmoe_jax.artifact`).

  Attributes:
    name: the run config's name.
    model: `model.kind` (fl_i2moe, i2moe, dense).
    store: the feature store's resolved path.
    task: multilabel | multiclass | binary.
    selection_metric: the validation metric that selects each seed's checkpoint.
    seeds: {seed: its result}.
    mean_std: {`best_val` | `test`: {metric: Moments over the seeds}} (metrics every seed has).
  """

  name: str
  model: str
  store: str
  task: str
  selection_metric: str
  seeds: dict[int, SeedResult]
  mean_std: dict[str, dict[str, Moments]]

  FORMAT: ClassVar[str] = "flmoe-train-summary"
  VERSION: ClassVar[int] = 1
  READS: ClassVar[tuple[int, ...]] = (1,)
  LEGACY_VERSION: ClassVar[int | None] = 1  # summaries written before the header existed
  ERROR: ClassVar[type[Exception]] = RunDirError
  REMEDY: ClassVar[str] = "rerun `flmoe train`"

  @classmethod
  def of(
    cls,
    results: Mapping[int, SeedResult],
    *,
    name: str,
    model: str,
    store: str,
    task: str,
    selection_metric: str,
  ) -> TrainSummary:
    """Aggregates finished seeds: mean and population std of every val/test metric they share."""
    agg = {}
    for part in ("best_val", "test"):
      values = [getattr(r, part) for r in results.values()]
      keys = sorted(set.intersection(*(set(v) for v in values)))
      agg[part] = {
        k: Moments(float(np.mean([v[k] for v in values])), float(np.std([v[k] for v in values])))
        for k in keys
      }
    return cls(
      name=name,
      model=model,
      store=store,
      task=task,
      selection_metric=selection_metric,
      seeds=dict(results),
      mean_std=agg,
    )

  def metric(self, name: str, split: str = "test") -> Moments | None:
    """A metric's moments over seeds on `split` (`test` or `best_val`), None when not measured."""
    return self.mean_std.get(split, {}).get(name)
