"""`flmoe sweep`: the grid, its checks, the resumable points and the results table."""

import csv
import json
import pathlib

import pytest

from flmoe_jax import cli, sweep
from flmoe_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/tiny.py")


def _cfg(store, *grid, seeds=(0,), shard="0/1", extra=()):
  return sweep.SweepConfig(
    config=TINY,
    grid=grid,
    seeds=seeds,
    shard=shard,
    overrides=(f"store={store}", "train.epochs=1", *extra),
  )


def test_grid_points_and_their_folders(random_store):
  cfg = _cfg(random_store, "optim.learning_rate=1e-3,3e-3", "--config.loss.lambda_int=0.1,0.5,1")
  points = sweep.grid_points(cfg)
  assert len(points) == 6 and [p.index for p in points] == list(range(6))
  assert points[0].values == (("optim.learning_rate", "1e-3"), ("loss.lambda_int", "0.1"))
  assert points[1].values[1] == ("loss.lambda_int", "0.5")  # the last axis varies fastest
  assert points[0].name == "optim.learning_rate=1e-3__loss.lambda_int=0.1"
  run = sweep.point_config(cfg, points[5])
  assert run.optim.learning_rate == 3e-3 and run.loss.lambda_int == 1.0
  assert tuple(run.train.seeds) == (0,)
  assert sweep.grid_points(_cfg(random_store))[0].name == "base"  # no axis: one point


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(grid=("optim.learning_rate",)), "--grid takes KEY=V1,V2"),
    (dict(grid=("a=1,,2",)), "--grid takes KEY=V1,V2"),
    (dict(grid=("a=1", "a=2")), "--grid a is given twice"),
    (dict(grid=("a=1,1",)), "--grid a repeats a value"),
    (dict(grid=("train.seeds=0,1",)), "use --seeds"),
    (dict(seeds=(0, 0)), "--seeds [0, 0] repeats a seed"),
    (dict(shard="2/2"), "--shard must be i/n"),
    (dict(shard="x"), "--shard must be i/n"),
    (dict(config=None), "--config must be given"),
  ],
)
def test_bad_options_are_one_line(kwargs, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
    sweep.SweepConfig(**{"config": TINY, **kwargs})


def test_bad_points_are_refused_before_anything_trains(random_store, tmp_path, capsys):
  # A key the config lacks, and a value of the wrong type: one line naming the point, no folder.
  for grid, message in (
    ("optim.learning_rat=1e-3", "grid point optim.learning_rat=1e-3"),
    ("optim.learning_rate=1e-3,fast", "grid point optim.learning_rate=fast"),
  ):
    code = cli.main(
      ["sweep", "--config", TINY, "--grid", grid, "--workdir", str(tmp_path / "w"),
       f"--config.store={random_store}"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "w").exists()


def test_a_2x2_grid_with_2_seeds_writes_one_table_and_reruns_as_a_no_op(random_store, tmp_path):
  cfg = _cfg(random_store, "optim.learning_rate=1e-3,1e-2", "model.dropout=0.0,0.1", seeds=(0, 1))
  w = tmp_path / "sweep"
  # Shards: 1/2 runs points 1 and 3, then 0/2 runs 0 and 2; each writes the table of all finished.
  rows = sweep.run_sweep(cfg.replace(shard="1/2"), w, log=lambda _: None)
  assert sorted(r["index"] for r in rows) == [1, 3]
  rows = sweep.run_sweep(cfg.replace(shard="0/2"), w, log=lambda _: None)
  assert sorted(r["index"] for r in rows) == [0, 1, 2, 3]
  lines = [json.loads(x) for x in (w / "sweep.jsonl").read_text().splitlines()]
  assert lines == rows and all(r["seeds"] == [0, 1] for r in rows)
  # Sorted by the mean validation selection metric, best first; each is its run's summary.
  vals = [r["best_val"][r["selection_metric"]]["mean"] for r in rows]
  assert vals == sorted(vals, reverse=True)
  for r in rows:
    summary = json.loads((w / r["point"] / "summary.json").read_text())
    acc = [s["test"]["accuracy"] for s in summary["seeds"].values()]
    assert r["test"]["accuracy"]["mean"] == pytest.approx(sum(acc) / 2)
    assert r["values"] == dict(sweep.grid_points(cfg)[r["index"]].values)
  table = list(csv.reader((w / "sweep.csv").open()))
  assert table[0][:4] == ["optim.learning_rate", "model.dropout", "seeds", "val accuracy"]
  assert len(table) == 5 and "test accuracy" in table[0] and "test num_examples" not in table[0]
  assert "4 of 4 grid points finished" in (w / "sweep.md").read_text()
  assert 'id="sweep"' in (w / "sweep.html").read_text()
  # A rerun trains nothing: every seed's result is left as it was.
  results = sorted(w.glob("*/seed_*/result.json"))
  assert len(results) == 8
  before = [p.stat().st_mtime_ns for p in results]
  logged = []
  assert sweep.run_sweep(cfg, w, log=logged.append) == rows
  assert [p.stat().st_mtime_ns for p in results] == before
  assert all("finished earlier" in line for line in logged) and len(logged) == 4
  # A third seed grows every point (the finished two are read back, not retrained).
  grown = sweep.run_sweep(cfg.replace(seeds=(0, 1, 2)), w, log=lambda _: None)
  assert all(r["seeds"] == [0, 1, 2] for r in grown)
  assert [p.stat().st_mtime_ns for p in results] == before
