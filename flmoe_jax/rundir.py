"""`RunDir`: the one owner of a run directory's layout.

  W/
    config.json  run.json  metrics.jsonl  summary.json        training (`train/`)
    seed_<s>/checkpoints/{latest,best}/  seed_<s>/result.json  one training seed
    baselines/<split>.json                                    `flmoe baselines`
    explain/<split>.json (+ PNGs)                             `flmoe explain`
    probe/<split>[_<tag>].json (+ PNGs)                       `flmoe probe`
    report/report.{html,md}                                   `flmoe report`

Every stage asks a `RunDir` for its paths; no other module spells a file name of the layout. The typed
artifacts load through it too (`load_summary`, `load_explain`, `load_probe`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from flmoe_jax.explain.results import ExplainReport
  from flmoe_jax.probes.results import ProbeReport
  from flmoe_jax.train_summary import TrainSummary


@dataclasses.dataclass(frozen=True)
class RunDir:
  """The paths of one run directory (nothing is created or read here).

  Attributes:
    root: the run directory.
  """

  root: pathlib.Path

  def __init__(self, root: str | os.PathLike):
    object.__setattr__(self, "root", pathlib.Path(root))

  # What training writes (an --overwrite removes these and the seed folders and stage folders, and
  # nothing else: the later stages' outputs describe the old model).
  TRAINING_FILES = ("config.json", "metrics.jsonl", "summary.json", "run.json")
  STAGE_FOLDERS = ("baselines", "explain", "probe", "report")

  @property
  def config(self) -> pathlib.Path:
    return self.root / "config.json"

  @property
  def metrics(self) -> pathlib.Path:
    return self.root / "metrics.jsonl"

  @property
  def summary(self) -> pathlib.Path:
    return self.root / "summary.json"

  @property
  def run_info(self) -> pathlib.Path:
    """`run.json`: the store the run was trained on, and every session's versions and commit."""
    return self.root / "run.json"

  def seed_dir(self, seed: int) -> pathlib.Path:
    return self.root / f"seed_{seed}"

  def checkpoint(self, seed: int, which: str) -> pathlib.Path:
    """A seed's `latest` or `best` checkpoint folder."""
    return self.seed_dir(seed) / "checkpoints" / which

  def latest_ckpt(self, seed: int) -> pathlib.Path:
    return self.checkpoint(seed, "latest")

  def best_ckpt(self, seed: int) -> pathlib.Path:
    return self.checkpoint(seed, "best")

  def result(self, seed: int) -> pathlib.Path:
    return self.seed_dir(seed) / "result.json"

  def finished_seeds(self) -> list[int]:
    """Seeds whose training finished (a `seed_<s>/result.json`), ascending."""
    return sorted(int(p.parent.name.split("_", 1)[1]) for p in self.root.glob("seed_*/result.json"))

  def baselines(self, split: str) -> pathlib.Path:
    return self.root / "baselines" / f"{split}.json"

  @property
  def explain_dir(self) -> pathlib.Path:
    return self.root / "explain"

  def explain(self, split: str) -> pathlib.Path:
    return self.explain_dir / f"{split}.json"

  @property
  def probe_dir(self) -> pathlib.Path:
    return self.root / "probe"

  def probe(self, split: str, tag: str = "") -> pathlib.Path:
    return self.probe_dir / (f"{split}_{tag}.json" if tag else f"{split}.json")

  @property
  def report_dir(self) -> pathlib.Path:
    return self.root / "report"

  # The stages' typed artifacts (imported on use: the layout itself needs nothing but pathlib).

  def load_summary(self) -> TrainSummary:
    """The training stage's `TrainSummary` (RunDirError when missing or not one)."""
    from flmoe_jax.train_summary import TrainSummary

    return TrainSummary.load(self.summary)

  def load_explain(self, split: str) -> ExplainReport:
    """The explain stage's `ExplainReport` of `split` (ExplainError when missing or not one)."""
    from flmoe_jax.explain.results import ExplainReport

    return ExplainReport.load(self.explain(split))

  def load_probe(self, split: str, tag: str = "") -> ProbeReport:
    """The probe stage's `ProbeReport` of `split` (ProbeError when missing or not one)."""
    from flmoe_jax.probes.results import ProbeReport

    return ProbeReport.load(self.probe(split, tag))
