"""Probe figures: token x patch heatmaps of SII and redundancy gap, and pair-masking curves.

Heatmaps show one example's candidate pairs on a grid (rows: modality-0 tokens, columns:
modality-1 tokens; cells without a candidate pair are blank); planted pairs of a synthetic store are
boxed. Text tokens are labelled with their strings when the store has `<split>/tokens.json` (a list
of per-example token lists); otherwise (synthetic stores) with positions. Files are written
atomically (render to memory, then rename).
"""

from __future__ import annotations

import io
import json
import pathlib

import numpy as np

from flmoe_jax.probes.results import write_bytes_atomic


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _token_strings(fs, split: str) -> list[list[str]] | None:
  p = pathlib.Path(fs.path) / split / "tokens.json"
  if not p.is_file():
    return None
  try:
    return json.loads(p.read_text())
  except json.JSONDecodeError:
    return None


def _save(fig, path: pathlib.Path) -> pathlib.Path:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  _plt().close(fig)
  return write_bytes_atomic(path, buf.getvalue())


def _grid(rec: dict, role: str, index: str, scale: str):
  """(row positions, col positions, value grid with NaN where no pair) of modality pair (0, 1)."""
  members = np.asarray(rec[role]["members"]).reshape(-1, 4)
  vals = np.asarray(rec[role]["values"][index][scale], np.float64)
  sel = (members[:, 0] == 0) & (members[:, 2] == 1)
  members, vals = members[sel], vals[sel]
  rows, cols = np.unique(members[:, 1]), np.unique(members[:, 3])
  grid = np.full((len(rows), len(cols)), np.nan)
  grid[np.searchsorted(rows, members[:, 1]), np.searchsorted(cols, members[:, 3])] = vals
  return rows, cols, grid


def heatmap(
  rec: dict,
  report: dict,
  path: pathlib.Path,
  tokens: list[str] | None = None,
  planted: dict | None = None,
) -> pathlib.Path:
  """One example: SII (synergy expert) and RG (redundancy expert) on both scales, 2 x 2 panels."""
  plt = _plt()
  names = report["settings"]["modalities"]
  fig, axes = plt.subplots(2, 2, figsize=(11, 9))
  panels = [
    ("sii", "SII", "logit"),
    ("sii", "SII", "prob"),
    ("rg", "RG", "prob"),
    ("rg", "RG", "logit"),
  ]
  for ax, (role, index, scale) in zip(axes.ravel(), panels):
    rows, cols, grid = _grid(rec, role, index, scale)
    lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ylab = [tokens[r] if tokens and r < len(tokens) else f"{r}" for r in rows]
    ax.set_yticks(range(len(rows)), ylab, fontsize=7)
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize=7, rotation=90)
    ax.set_ylabel(f"{names[0]} position")
    ax.set_xlabel(f"{names[1]} position")
    ax.set_title(f"{index} ({scale}) on the {rec[role]['expert']} expert", fontsize=10)
    for p in (planted or {}).values():
      if p["text_pos"] in rows and p["image_pos"] in cols:
        r, c = np.searchsorted(rows, p["text_pos"]), np.searchsorted(cols, p["image_pos"])
        ax.add_patch(
          plt.Rectangle(
            (c - 0.5, r - 0.5),
            1,
            1,
            fill=False,
            lw=2,
            ec={"synergy": "lime", "redundancy": "orange"}.get(p["kind"], "gray"),
          )
        )
  fig.suptitle(
    f"{report['split']} row {rec['row']} ({rec['id']}), target {rec['target']}, "
    f"p={rec['p_clean']:.3f}"
    + ("; boxes: planted syn (green), red (orange), complement (grey)" if planted else ""),
    fontsize=10,
  )
  return _save(fig, path)


def masking_curves(report: dict, path: pathlib.Path) -> pathlib.Path:
  """Drop in target probability and in the task metric vs pair budget, ranked vs random."""
  plt = _plt()
  pm = report["pair_masking"]
  b = pm["budgets"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for name, color in (("SII", "tab:blue"), ("RG", "tab:red")):
    d = pm[name]
    for ax, key in ((axes[0], "prob_drop"), (axes[1], "metric_drop")):
      labels = {
        "ranked": f"{name}-ranked ({d['expert']})",
        "random": f"random tokens of the candidates (matched to {name})",
        "random_all": f"random tokens of all (matched to {name})",
      }
      for kind, ls in (("ranked", "-"), ("random", "--"), ("random_all", ":")):
        if kind not in d:
          continue
        y = np.asarray(d[kind][key])
        ax.plot(b, y, ls, marker="o", color=color, label=labels[kind])
        if key == "prob_drop":
          se = np.asarray(d[kind]["prob_drop_se"])
          ax.fill_between(b, y - se, y + se, color=color, alpha=0.15)
  axes[0].set_ylabel("drop in target probability")
  axes[1].set_ylabel(f"drop in {pm['metric']}")
  for ax in axes:
    ax.set_xlabel("masked pairs b")
    ax.set_xscale("log")
    ax.set_xticks(b, [str(x) for x in b])
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(
    f"Pair-level masking, {report['split']} (n={pm['n']}, clean {pm['metric']} "
    f"{pm['clean_metric']:.3f})",
    fontsize=10,
  )
  return _save(fig, path)


def write_figures(
  report: dict, out_dir: pathlib.Path, stem: str, fs, *, n_heatmaps: int = 4
) -> list[pathlib.Path]:
  """Heatmaps of the first `n_heatmaps` examples and the masking curves (`<stem>_*.png`)."""
  out = [masking_curves(report, out_dir / f"{stem}_pair_masking.png")]
  tokens = _token_strings(fs, report["split"])
  planted = None
  if "planted" in report:
    gt = fs.ground_truth() or {}
    planted = {
      m["name"]: {"kind": m["kind"], "text_pos": m["text_pos"], "image_pos": m["image_pos"]}
      for m in gt.get("planted_pairs", [])
    }
  for rec in report["samples"][:n_heatmaps]:
    tok = tokens[rec["row"]] if tokens and rec["row"] < len(tokens) else None
    out.append(heatmap(rec, report, out_dir / f"{stem}_heatmap_{rec['row']}.png", tok, planted))
  return out
