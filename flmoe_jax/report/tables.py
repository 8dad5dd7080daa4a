"""The paper's tables, built from run directories (Table A here; B and C from explain/probe outputs)."""

from __future__ import annotations

from collections.abc import Mapping

from flmoe_jax.report.render import Table
from flmoe_jax.train_summary import TrainSummary

# Metrics per task, in the paper's order (docs/method.md section 6.1).
TASK_METRICS = {
  "multilabel": ("micro_f1", "macro_f1", "samples_f1", "exact_match"),
  "multiclass": ("accuracy", "macro_f1", "auroc"),
  "binary": ("accuracy", "macro_f1", "auroc"),
}
_LABEL = {
  "micro_f1": "micro-F1",
  "macro_f1": "macro-F1",
  "samples_f1": "samples-F1",
  "exact_match": "exact match",
  "accuracy": "accuracy",
  "auroc": "AUROC",
}


def pm(mean: float, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
  """'mean +/- std' with a scale (x100 for percentages); just the mean when std is None (one seed)."""
  if std is None:
    return f"{scale * mean:.{digits}f}"
  return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _scores(summary: TrainSummary | Mapping, split: str) -> tuple[str, dict, str]:
  """(task, {metric: (mean, std)}, seeds column) of a run's summary or a reference point's dict."""
  if isinstance(summary, TrainSummary):
    ms = summary.mean_std.get(split, {})
    return summary.task, {k: (m.mean, m.std) for k, m in ms.items()}, str(len(summary.seeds))
  ms = summary["mean_std"][split]
  return summary["task"], {k: (v["mean"], v["std"]) for k, v in ms.items()}, "-"


def table_a(
  entries: Mapping[str, Mapping[str, TrainSummary | dict]], *, split: str = "test"
) -> Table:
  """Table A: task performance of the dense transformer, the original I2MoE and FL-I2MoE per dataset.

  Args:
    entries: {dataset: {"Dense Transformer": summary, "I2MoE": summary, "FL-I2MoE": summary}}
      (`TrainSummary`s; a missing model is None and skipped), optionally with reference points
      first (`flmoe_jax.baselines` dicts: the majority class, one modality alone; seeds shown as "-").
    split: `test` (evaluated once with the best-validation checkpoint) or `best_val`.

  Returns:
    The table (x100, mean ± population std over seeds).
  """
  rows = [["dataset", "model", "metric", "value (%)", "seeds"]]
  for dataset, models in entries.items():
    for model_name, summary in models.items():
      if summary is None:
        continue
      task, ms, seeds = _scores(summary, split)
      for k in TASK_METRICS[task]:
        if k in ms:
          rows.append([dataset, model_name, _LABEL[k], pm(*ms[k]), seeds])
  return Table("table-a", f"Table A: task performance ({split} split, mean ± std over seeds)", rows)
