"""PNG figures of an explain report (matplotlib, Agg backend; written atomically).

* `<split>_masking.png`: comprehensiveness and sufficiency vs K, identified vs random, one column
  per map (each expert, the mixture, the baseline); error bars = std over seeds.
* `<split>_sample_<i>.png`: one sample's maps, one row per map; text-like modalities as bars over
  token positions, patch modalities as a sqrt(T) x sqrt(T) heatmap (a 1-row strip when T is not a
  square).
* `<split>_expert_weights.png`: violins of the gate weights over the split (FL-I2MoE only).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence

import numpy as np

from flmoe_jax import atomic
from flmoe_jax.explain.results import ExplainReport, FaithCurve


def _plt():
  import matplotlib

  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: pathlib.Path) -> str:
  """Writes a figure atomically and closes it; returns the file name."""
  with atomic.replacing(path) as tmp:
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
  _plt().close(fig)
  return path.name


def _series(values) -> tuple[np.ndarray, np.ndarray]:
  mean = np.array([np.nan if v.mean is None else v.mean for v in values])
  std = np.array([0.0 if v.std is None else v.std for v in values])
  return mean, std


def masking_curves(report: ExplainReport, path: pathlib.Path) -> str:
  """Comprehensiveness (top row) and sufficiency (bottom row) vs K per map."""
  plt = _plt()
  cols: list[tuple[str, FaithCurve, FaithCurve | None]] = []
  for prefix, m in (("", report.model), ("baseline:", report.baseline)):
    if m is None:
      continue
    views = dict.fromkeys(c.view for c in m.faithfulness)
    for v in views:
      own = m.curve(v, "own")
      mix = m.curve(v, "mixture") if (m.kind != "dense" and v != "mixture") else None
      cols.append((prefix + v, own, mix))
  fig, axes = plt.subplots(2, len(cols), figsize=(2.6 * len(cols), 5.2), squeeze=False, sharex=True)
  for j, (name, own, mix) in enumerate(cols):
    ks = np.asarray(own.ks)
    for i, (ident, rnd, label) in enumerate(
      (("comp", "comp_random", "comprehensiveness"), ("suff", "suff_random", "sufficiency"))
    ):
      ax = axes[i, j]
      m, s = _series(getattr(own, ident))
      ax.errorbar(ks, m, yerr=s, marker="o", ms=3, label="identified", color="C0")
      m, s = _series(getattr(own, rnd))
      ax.errorbar(ks, m, yerr=s, marker="o", ms=3, ls=":", label="random", color="0.4")
      if mix is not None:
        m, s = _series(getattr(mix, ident))
        ax.errorbar(
          ks, m, yerr=s, marker="s", ms=3, ls="--", label="identified (mixture)", color="C1"
        )
      if i == 0:
        ax.set_title(name, fontsize=9)
      if j == 0:
        ax.set_ylabel(f"{label} (x100)")
      if i == 1:
        ax.set_xlabel("K (%)")
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(
    f"top-K% masking, {report.settings.method}, fill {report.settings.fill}, "
    f"{report.settings.split}",
    fontsize=10,
  )
  return _save(fig, path)


def _grid(t: int) -> tuple[int, int]:
  r = math.isqrt(t)
  return (r, r) if r * r == t else (1, t)


def sample_maps(sample: dict, path: pathlib.Path) -> str:
  """One sample's maps: rows = maps, columns = modalities."""
  plt = _plt()
  views, mods = sample["views"], sample["modalities"]
  fig, axes = plt.subplots(
    len(views), len(mods), figsize=(3.4 * len(mods), 1.3 * len(views) + 0.6), squeeze=False
  )
  for i, view in enumerate(views):
    for j, mod in enumerate(mods):
      ax = axes[i, j]
      vals = np.asarray(sample["maps"][i][j], float)
      cand = np.asarray(sample["candidates"][j], bool)
      if sample["kinds"][j] == "tokens":
        pos = np.flatnonzero(cand)
        ax.bar(pos, vals[pos], width=0.8, color="C0")
        ax.set_xlim(-0.5, max(len(vals), 1) - 0.5)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=6)
      else:
        r, c = _grid(len(vals))
        ax.imshow(np.where(cand, vals, np.nan).reshape(r, c), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks([])
        ax.set_yticks([])
      if i == 0:
        ax.set_title(mod, fontsize=9)
      if j == 0:
        ax.set_ylabel(view, fontsize=8)
  fig.suptitle(f"sample {sample['id']} (row {sample['index']}): normalised importance", fontsize=9)
  return _save(fig, path)


def expert_weights(weights: np.ndarray, names: Sequence[str], path: pathlib.Path) -> str:
  """Violins of the gate weights [N, E] over the split."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(1.2 * len(names) + 1.5, 3.2))
  ax.violinplot([weights[:, e] for e in range(weights.shape[1])], showmeans=True)
  ax.set_xticks(range(1, len(names) + 1), names)
  ax.set_ylabel("expert weight")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3, axis="y")
  return _save(fig, path)


def write_figures(
  report: ExplainReport, out_dir: pathlib.Path, *, split: str, samples: list[dict], weights
) -> list[str]:
  """All figures of a report; returns the file names (relative to `out_dir`)."""
  out_dir = pathlib.Path(out_dir)
  names = [masking_curves(report, out_dir / f"{split}_masking.png")]
  for i, s in enumerate(samples):
    names.append(sample_maps(s, out_dir / f"{split}_sample_{i}.png"))
  if weights is not None and np.ndim(weights) == 2 and weights.shape[1] > 1:
    names.append(
      expert_weights(weights, report.model.expert_names, out_dir / f"{split}_expert_weights.png")
    )
  return names
