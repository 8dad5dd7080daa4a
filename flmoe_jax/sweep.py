"""`flmoe sweep`: a grid of configurations x seeds, each point a resumable run, one results table.

  flmoe sweep --config configs/synthetic.py:demo --grid loss.lambda_int=0.1,0.3 \\
      --grid optim.learning_rate=1e-4,3e-4 --seeds 0,1 --workdir W

The grid is the cartesian product of its axes, in the order given; each point is the config with
the point's values (and `train.seeds`, `train.vmap_seeds`: with `--vmap-seeds` its seeds side by
side in one compiled program, and any `--config.key=value` override common to every point)
and trains in its own run directory, `W/<point>/`, through `train.train_and_evaluate`: a finished
seed is read back, an interrupted one resumes from its last checkpoint. A sweep restarted after a kill
therefore neither redoes a finished point nor loses one, and a point's folder is an ordinary run
(`flmoe explain`, `flmoe probe` and `flmoe report` read it).

Every point's config is built and checked before anything trains, so a grid key that is not in the
config, a value of the wrong type or a range a config check refuses is one line naming the point.

After each point the sweep rewrites, from the run summaries on disk, `W/sweep.jsonl` (one line per
finished point) and the table of mean +/- std over seeds per point, sorted by the validation
selection metric (best first), as `W/sweep.csv`, `W/sweep.md` and `W/sweep.html`.

`--shard i/n` runs points i, i+n, i+2n, ... only, so that a cluster's own launcher can spread the
points over processes or hosts; every shard writes the table of all the points finished so far.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import pathlib
import re
from collections.abc import Sequence

from flmoe_jax import atomic
from flmoe_jax import config as config_lib
from flmoe_jax.errors import ConfigError, FlmoeError
from flmoe_jax.options import StageConfig, documented, option
from flmoe_jax.rundir import RunDir

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=+-]")


@documented
@dataclasses.dataclass(frozen=True)
class SweepConfig(StageConfig):
  """The options of `flmoe sweep`, each with its flag and default."""

  error = ConfigError

  config: str = option(None, "config file of every point (file.py or file.py:arg)")
  grid: tuple[str, ...] = option(
    (), "an axis of the grid: KEY=V1,V2,... (a config key and its values)", repeat=True
  )
  seeds: tuple[int, ...] = option((0,), "training seeds of every point", lowest=0)
  shard: str = option("0/1", "this process's share of the points, i/n: points i, i+n, i+2n, ...")
  vmap_seeds: bool = option(
    False,
    "train each point's seeds side by side in one program (train.vmap_seeds; needs "
    "train.prng_impl='threefry2x32')",
  )
  overrides: tuple[str, ...] = option(
    (), "key=value overrides common to every point (--config.key=value)", cli=False
  )

  def validate(self) -> None:
    if not self.seeds:
      raise ConfigError("--seeds needs at least one seed")
    if len(set(self.seeds)) != len(self.seeds):
      raise ConfigError(f"--seeds {list(self.seeds)} repeats a seed")
    self.axes  # noqa: B018 - parses the grid, raising on a bad axis
    self.shard_index  # noqa: B018

  @property
  def axes(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The grid's axes: (config key, its values as typed) in the order given."""
    axes, seen = [], set()
    for item in self.grid:
      key, eq, values = item.partition("=")
      key = key.strip().removeprefix("--config.").removeprefix("config.")
      vals = tuple(v.strip() for v in values.split(","))
      if not eq or not key or not all(vals):
        raise ConfigError(
          f"--grid takes KEY=V1,V2,... (e.g. loss.lambda_int=0.1,0.3), got {item!r}"
        )
      if key in seen:
        raise ConfigError(f"--grid {key} is given twice; give its values in one --grid")
      if key == "train.seeds":
        raise ConfigError("--grid train.seeds: seeds are not a grid axis; use --seeds")
      if len(set(vals)) != len(vals):
        raise ConfigError(f"--grid {key} repeats a value: {list(vals)}")
      seen.add(key)
      axes.append((key, vals))
    return tuple(axes)

  @property
  def shard_index(self) -> tuple[int, int]:
    """(i, n) of `--shard i/n`."""
    i, slash, n = self.shard.partition("/")
    try:
      i, n = int(i), int(n)
    except ValueError:
      i, n = -1, 0
    if not slash or n < 1 or not 0 <= i < n:
      raise ConfigError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {self.shard!r}")
    return i, n


@dataclasses.dataclass(frozen=True)
class Point:
  """One point of the grid.

  Attributes:
    index: its position in the grid (row-major over the axes, the first axis slowest).
    values: (config key, value as typed) per axis.
  """

  index: int
  values: tuple[tuple[str, str], ...]

  @property
  def name(self) -> str:
    """Its folder: `key=value` per axis, joined by `__` (other characters become `_`)."""
    if not self.values:
      return "base"
    return "__".join(_NAME_CHARS.sub("_", f"{k}={v}") for k, v in self.values)

  @property
  def overrides(self) -> list[str]:
    return [f"{k}={v}" for k, v in self.values]


def grid_points(cfg: SweepConfig) -> list[Point]:
  """Every point of the grid, in order."""
  axes = cfg.axes
  combos = itertools.product(*(vals for _, vals in axes))
  points = [
    Point(i, tuple(zip((k for k, _ in axes), combo, strict=True))) for i, combo in enumerate(combos)
  ]
  names = [p.name for p in points]
  if len(set(names)) != len(names):
    raise ConfigError("two grid points map to the same folder name; use simpler values")
  return points


def point_config(cfg: SweepConfig, point: Point):
  """The locked, checked run config of one point."""
  seeds = f"train.seeds=({','.join(str(s) for s in cfg.seeds)},)"
  vmap = f"train.vmap_seeds={cfg.vmap_seeds}"
  try:
    return config_lib.load_config(cfg.config, [*cfg.overrides, *point.overrides, seeds, vmap])
  except FlmoeError as e:
    raise ConfigError(f"grid point {point.name}: {e}") from None


def run_sweep(cfg: SweepConfig, workdir: str | pathlib.Path, *, log=print) -> list[dict]:
  """Trains this shard's points (each resumable), rewriting the results table after each.

  Args:
    cfg: the sweep's options.
    workdir: the sweep's folder; point p trains in `workdir/<p.name>/`.
    log: where progress lines go.

  Returns:
    The rows of `sweep.jsonl` after the last point: one per finished point of the whole grid.
  """
  root = pathlib.Path(workdir)
  if root.exists() and not root.is_dir():
    raise ConfigError(f"--workdir {root} is a file, not a folder")
  points = grid_points(cfg)
  configs = {p.name: point_config(cfg, p) for p in points}  # every point checked before training
  i, n = cfg.shard_index
  mine = points[i::n]
  from flmoe_jax import distributed, train

  # Under a multi-process launcher every process runs every point of its shard together (each point
  # one multi-process run); the runtime starts before the first JAX call, and process 0 writes the
  # sweep's own files.
  if points:
    distributed.initialize(configs[points[0].name])
  primary = distributed.is_primary()
  if primary:
    root.mkdir(parents=True, exist_ok=True)
  rows = write_results(root, points, configs, write=primary)
  for k, point in enumerate(mine, 1):
    run = RunDir(root / point.name)
    if _finished(run, cfg.seeds):
      log(f"sweep: point {point.index + 1}/{len(points)} {point.name}: finished earlier")
      continue
    log(
      f"sweep: point {point.index + 1}/{len(points)} {point.name} ({k}/{len(mine)} of this shard)"
    )
    train.train_and_evaluate(configs[point.name], run.root)
    rows = write_results(root, points, configs, write=primary)
  return rows


def _finished(run: RunDir, seeds: Sequence[int]) -> bool:
  """Whether the point's run holds a summary over exactly these seeds."""
  if not run.summary.is_file():
    return False
  try:
    summary = run.load_summary()
  except FlmoeError:
    return False
  return sorted(summary.seeds) == sorted(seeds)


def _row(point: Point, summary) -> dict:
  sel = summary.selection_metric
  out = {
    "point": point.name,
    "index": point.index,
    "values": dict(point.values),
    "seeds": sorted(summary.seeds),
    "selection_metric": sel,
  }
  for split in ("best_val", "test"):
    out[split] = {
      k: {"mean": m.mean, "std": m.std} for k, m in sorted(summary.mean_std.get(split, {}).items())
    }
  return out


def write_results(
  root: pathlib.Path, points: Sequence[Point], configs: dict, *, write: bool = True
) -> list[dict]:
  """Rewrites `sweep.jsonl`, `.csv`, `.md` and `.html` from the finished points on disk.

  A point counts as finished when its run's summary covers its config's seeds; rows are sorted by
  the mean validation selection metric, best first. With `write` False only the rows are returned.
  """
  rows = []
  for point in points:
    run = RunDir(root / point.name)
    if _finished(run, tuple(configs[point.name].train.seeds)):
      rows.append(_row(point, run.load_summary()))
  rows.sort(key=lambda r: -_sel(r))
  if not write:
    return rows
  atomic.write_text(root / "sweep.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
  header, body = _table(rows, [k for k, _ in points[0].values] if points else [])
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows([header, *body])
  atomic.write_text(root / "sweep.csv", buf.getvalue())
  from flmoe_jax.report.render import Section, Table, render_html, render_markdown

  caption = (
    f"{len(rows)} of {len(points)} grid points finished; mean ± std over seeds (population std) of "
    "each score x100, sorted by the validation selection metric, best first"
  )
  section = Section("Sweep", tables=[Table("sweep", caption, [header, *body])])
  atomic.write_text(root / "sweep.md", render_markdown("Sweep", [section]))
  atomic.write_text(root / "sweep.html", render_html("Sweep", [section]))
  return rows


def _sel(row: dict) -> float:
  m = row["best_val"].get(row["selection_metric"])
  return float("-inf") if m is None else m["mean"]


def _table(rows: list[dict], keys: list[str]) -> tuple[list[str], list[list[str]]]:
  """The table's header and rows: the point's values, seeds, then val selection and test metrics."""
  # The task's scores (fractions, shown x100); the example count and the gate weights stay in the
  # JSONL only.
  metrics = sorted(
    {k for r in rows for k in r["test"] if k != "num_examples" and not k.startswith("weight_")}
  )
  sel = sorted({r["selection_metric"] for r in rows})
  header = [*keys, "seeds", *(f"val {s}" for s in sel), *(f"test {m}" for m in metrics)]
  body = []
  for r in rows:

    def cell(split, name, r=r):
      m = r[split].get(name)
      return "-" if m is None else f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"

    body.append(
      [
        *(r["values"][k] for k in keys),
        ",".join(map(str, r["seeds"])),
        *(cell("best_val", s) for s in sel),
        *(cell("test", m) for m in metrics),
      ]
    )
  return header, body
