"""`ExplainConfig`: every option of `flmoe explain` / `run_explain`, declared once (jax-free).

  cfg = ExplainConfig(split="test", baseline="runs/demo/synthetic/dense", samples=200)
  report = run_explain(cfg, "runs/demo/synthetic/fl")

The command line is generated from the fields (`flmoe explain --help`); the report records them in
its `settings` (`ExplainSettings`). docs/explain.md explains the maps, masking and scores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from flmoe_jax import choices
from flmoe_jax.errors import ExplainError
from flmoe_jax.options import StageConfig, documented, option

# Top-K% budgets of the masking curves, in percent of a modality's candidate tokens.
DEFAULT_KS = (5.0, 10.0, 15.0, 20.0, 25.0)


def check_ks(ks: Sequence[float]) -> tuple[float, ...]:
  """Validates budgets K (percent): each in (0, 100], no repeats; returns them as floats."""
  try:
    out = tuple(float(k) for k in ks)
  except (TypeError, ValueError):
    raise ExplainError(f"K values must be numbers, got {ks!r}") from None
  if not out:
    raise ExplainError("need at least one K")
  bad = [k for k in out if not (0.0 < k <= 100.0) or not math.isfinite(k)]
  if bad:
    raise ExplainError(f"K must be in (0, 100] percent, got {bad}")
  if len(set(out)) != len(out):
    raise ExplainError(f"repeated K values {list(out)}")
  return out


@documented
@dataclasses.dataclass(frozen=True)
class ExplainConfig(StageConfig):
  """The options of the expert-wise explanations (`flmoe explain`), each with its flag and default."""

  error = ExplainError

  split: str = option("val", "store split to explain")
  baseline: str | None = option(None, "a dense-transformer run directory on the same store")
  method: str = option("attnxgrad", "token attribution map", choices=choices.ATTRIBUTION_METHODS)
  ks: tuple[float, ...] = option(DEFAULT_KS, "budgets K in percent, each in (0, 100]")
  fill: str = option("mean", "what a masked token is replaced with", choices=choices.FILL_MODES)
  target: str = option(
    "pred", "the class explained: the prediction or the label", choices=choices.TARGET_SOURCES
  )
  samples: int | None = option(
    None, "the first N samples of the split only (default: all)", lowest=1
  )
  seeds: str = option("all", "'all' or comma-separated training seeds")
  batch_size: int = option(32, "samples per batch (fixed shape: one compile)", lowest=1)
  steps_per_call: int = option(
    16, "memory knob: masked variants / IG steps per model call (0 = all at once)", lowest=0
  )
  repeats: int = option(10, "random-control repeats", lowest=1)
  random_seed: int = option(
    42, "seed of the random control (the same selections for the run and the baseline)"
  )
  ig_steps: int = option(16, "integrated-gradients steps (--method ig)", lowest=1)
  ig_baseline: str = option(
    "zero", "integrated-gradients baseline (--method ig)", choices=choices.IG_BASELINES
  )
  figures: bool = option(True, "write PNG figures (--no-figures: the JSON only)")
  figure_samples: int = option(3, "per-sample map figures to draw", lowest=0, cli=False)

  def validate(self) -> None:
    object.__setattr__(self, "ks", check_ks(self.ks))
    if self.seeds.strip() != "all":
      try:
        [int(s) for s in self.seeds.split(",") if s.strip()]
      except ValueError:
        raise ExplainError(
          f"--seeds must be 'all' or comma-separated integers, got {self.seeds!r}"
        ) from None
