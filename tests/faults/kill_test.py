"""Kill -9 at every point that matters, then rerun: the result equals an uninterrupted run bit for bit.

Each case starts a real subprocess (tests/faults/_kill_driver.py) that SIGKILLs itself at a named point:
mid-epoch with a step in flight, inside and after each checkpoint commit (`latest`, then `best`), half-way
through a metrics line, after the validation line, around result.json, summary.json and config.json; and
for feature extraction inside a chunk's write, after a chunk, and inside the store's swap into place. The
same command is then rerun to completion and compared with an uninterrupted run: every parameter of the
`latest` and `best` checkpoints, result.json and summary.json bit for bit, and metrics.jsonl line for line
(timings aside: no line repeated, none lost).
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import make_random_store

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRIVER = pathlib.Path(__file__).with_name("_kill_driver.py")
# 48 training rows, batch 16: 3 steps per epoch, 3 epochs; a log line every 2 steps.
TRAIN = ["--config", str(ROOT / "configs/tiny.py"), "--config.train.epochs=3"]

# (point@N, what it interrupts). Each is reached in the tiny run (the driver exits 0 otherwise).
TRAIN_POINTS = [
  ("write_after:config.json@1", "after config.json, before any step"),
  ("batch@2", "epoch 1, a step in flight, no checkpoint yet"),
  ("batch@6", "epoch 2, a step in flight"),
  ("metrics_torn@3", "half a metrics line on disk"),
  ("val_written@2", "after epoch 2's validation line, before its checkpoint"),
  ("commit_before:latest@1", "inside the first `latest` commit (written, not renamed)"),
  ("commit_after:latest@2", "between epoch 2's `latest` and `best` commits"),
  ("commit_before:best@1", "inside the first `best` commit"),
  ("commit_after:best@1", "after the first `best` commit"),
  ("commit_after:latest@3", "after the last `latest` commit"),
  ("test_written@1", "after the test line, before result.json"),
  ("write_before:result.json@1", "result.json written to its temporary name, not renamed"),
  ("write_after:result.json@1", "after result.json, before summary.json"),
  ("write_before:summary.json@1", "summary.json written to its temporary name, not renamed"),
]
EXTRACT_POINTS = [
  ("chunk_before@2", "inside the second chunk's write"),
  ("chunk_after@3", "after the third chunk"),
  ("store_before@1", "inside the finished store's swap into place"),
]


def _env(tmp):
  env = dict(os.environ)
  # One CPU device (faster than the suite's 8 fake ones); the suite's compile cache; temp files of
  # the killed process (tiny encoders) inside the test's folder.
  env["XLA_FLAGS"] = ""
  env["JAX_PLATFORMS"] = "cpu"
  env["TMPDIR"] = str(tmp)
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
  return env


def _drive(point, *args, cwd, tmp):
  tmp.mkdir(exist_ok=True)
  return subprocess.run(
    [sys.executable, str(DRIVER), point, *args],
    cwd=cwd,
    env=_env(tmp),
    capture_output=True,
    text=True,
    timeout=300,
  )


def _train(point, workdir, store, *, cwd):
  args = ["flmoe", "train", *TRAIN, f"--config.store={store}", "--workdir", str(workdir)]
  return _drive(point, *args, cwd=cwd, tmp=cwd / "tmp")


def _checkpoint_arrays(run):
  """Every array file byte of the committed `latest` and `best` steps, by step and item path."""
  from flmoe_jax import checkpointing, train
  from flmoe_jax import config as config_lib
  from flmoe_jax.data import store as store_lib

  cfg = config_lib.with_defaults(config_lib.config_from_json((run / "config.json").read_text()))
  fs = store_lib.open_store(cfg.store)
  _, target = train.init_state(cfg, fs, seed=0)
  out = {}
  for which in ("latest", "best"):
    ck = checkpointing.Checkpointer(run / "seed_0" / "checkpoints" / which)
    for step in ck.all_steps():
      state, meta = ck.restore(step, target)
      out[(which, step)] = ([np.asarray(x) for x in jax.tree.leaves(state)], meta)
    ck.close()
  return out


def _metrics(run):
  lines = (run / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(x).items() if k != "train/examples_per_s"} for x in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted tiny run (in a subprocess, as the killed ones) and its store."""
  base = tmp_path_factory.mktemp("kill")
  store = make_random_store(base / "store")
  r = _train("none", base / "ref", store, cwd=base)
  assert r.returncode == 0, r.stderr[-2000:]
  return base, store, _checkpoint_arrays(base / "ref")


@pytest.mark.parametrize("point", [p for p, _ in TRAIN_POINTS])
def test_kill_then_rerun_equals_uninterrupted(reference, point, tmp_path):
  base, store, want = reference
  run = tmp_path / "run"
  killed = _train(point, run, store, cwd=tmp_path)
  assert killed.returncode == -9, f"the kill point {point} was not reached: {killed.stderr[-1500:]}"
  again = _train("none", run, store, cwd=tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  _assert_equals_reference(run, base, want)
  assert _metrics(run) == _metrics(base / "ref")  # no line repeated, none lost (finding 6)
  # Nothing half-written is left: no temporary files, no orbax temporary folders.
  left = [p for p in run.rglob("*") if ".tmp" in p.name or "orbax-checkpoint-tmp" in p.name]
  assert not left, left


@pytest.fixture(scope="module")
def extract_reference(tmp_path_factory):
  base = tmp_path_factory.mktemp("extract")
  r = _drive("none", "extract", str(base / "store"), cwd=base, tmp=base / "tmp")
  assert r.returncode == 0, r.stderr[-2000:]
  return base / "store"


@pytest.mark.parametrize("point", [p for p, _ in EXTRACT_POINTS])
def test_extraction_kill_then_rerun_equals_uninterrupted(extract_reference, point, tmp_path):
  out = tmp_path / "store"
  killed = _drive(point, "extract", str(out), cwd=tmp_path, tmp=tmp_path / "tmp")
  assert killed.returncode == -9, f"the kill point {point} was not reached: {killed.stderr[-1500:]}"
  assert not (out / "manifest.json").exists()  # a killed extraction never looks finished
  again = _drive("none", "extract", str(out), cwd=tmp_path, tmp=tmp_path / "tmp")
  assert again.returncode == 0, again.stderr[-3000:]
  ref = extract_reference
  files = sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file())
  assert files == sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
  for name in files:
    if name.endswith(".npy") or name.endswith("ids.json"):
      assert (out / name).read_bytes() == (ref / name).read_bytes(), name
  # The killed writer's temporary folders are gone (the store's own, and the extraction's work folder).
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_every_point_is_listed_once():
  names = [p for p, _ in TRAIN_POINTS + EXTRACT_POINTS]
  assert len(names) == len(set(names)) and len(TRAIN_POINTS) >= 10


def _interrupted_in_epoch_3(tmp_path, store):
  """A run killed in its third epoch: `latest` holds steps 3 and 6, `best` its best of the two."""
  run = tmp_path / "run"
  killed = _train("batch@8", run, store, cwd=tmp_path)
  assert killed.returncode == -9
  steps = sorted(int(p.name) for p in (run / "seed_0/checkpoints/latest").iterdir())
  assert steps == [3, 6]
  return run


def _assert_equals_reference(run, base, want):
  got = _checkpoint_arrays(run)
  assert sorted(got) == sorted(want)
  for key, (arrays, meta) in want.items():
    assert got[key][1] == meta, key
    for a, b in zip(arrays, got[key][0]):
      assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), key
  for name in ("seed_0/result.json", "summary.json"):
    assert (run / name).read_text() == (base / "ref" / name).read_text(), name


@pytest.mark.parametrize("damage", ["truncate", "no_metadata"])
def test_damaged_newest_checkpoint_falls_back(reference, tmp_path, damage):
  """Finding 3: a damaged newest `latest` step is moved aside with one line; training resumes from
  the older step and the result equals the uninterrupted run."""
  base, store, want = reference
  run = _interrupted_in_epoch_3(tmp_path, store)
  step6 = run / "seed_0/checkpoints/latest/6"
  if damage == "truncate":
    biggest = max(
      (p for p in (step6 / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
  else:
    (step6 / "state" / "_METADATA").unlink()
  again = _train("none", run, store, cwd=tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  said = [line for line in again.stderr.splitlines() if "is damaged" in line]
  assert len(said) == 1 and "latest/6" in said[0] and "trying an older step" in said[0], said
  assert "resumed from epoch 1 (step 3)" in again.stdout
  moved = list((run / "seed_0/checkpoints/damaged").iterdir())
  assert [p.name.rsplit("-", 1)[0] for p in moved] == ["latest-6"]  # kept aside, not deleted
  _assert_equals_reference(run, base, want)


def test_best_committed_without_latest_resumes(reference, tmp_path):
  """Finding 2: `best/N` committed and `latest/N` not (the order of earlier versions) used to fail
  every rerun with StepAlreadyExistsError; the resume removes the newer `best` step and redoes it."""
  base, store, want = reference
  run = _interrupted_in_epoch_3(tmp_path, store)
  best = sorted(
    int(p.name) for p in (run / "seed_0/checkpoints/best").iterdir() if p.name.isdigit()
  )
  # Make `best` one step ahead of `latest`: drop latest/6 and give `best` a copy of it as step 6.
  import shutil

  if best != [6]:
    shutil.rmtree(run / "seed_0/checkpoints/best" / str(best[0]))
    shutil.copytree(run / "seed_0/checkpoints/latest/6", run / "seed_0/checkpoints/best/6")
  shutil.rmtree(run / "seed_0/checkpoints/latest/6")
  again = _train("none", run, store, cwd=tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  _assert_equals_reference(run, base, want)


def test_changed_store_is_one_line_and_moves_nothing(reference, tmp_path):
  """Finding 5: the store at the run's path was rebuilt with other dimensions since training: one
  line, exit 2, nothing in the run moved or changed."""
  import shutil

  _, store, _ = reference
  mine = tmp_path / "store"
  shutil.copytree(store, mine)
  run = _interrupted_in_epoch_3(tmp_path, mine)
  from flmoe_jax.data import store as store_lib

  assert store_lib.is_store(mine)
  make_random_store(tmp_path / "wider", dim=12)
  shutil.rmtree(mine)
  shutil.copytree(tmp_path / "wider", mine)
  before = {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")}
  r = _train("none", run, mine, cwd=tmp_path)
  assert r.returncode == 2
  err = r.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("flmoe: error:") and "another store" in err[0], err
  assert "'dim': 12" in err[0]
  assert {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_vmapped_seeds_killed_mid_run_resume_side_by_side(reference, tmp_path):
  """Seeds 0 and 1 trained side by side (`train.vmap_seeds`), killed at the 5th step (epoch 2, each
  seed with its epoch-1 checkpoint), rerun with a third seed: seeds 0 and 1 resume side by side from
  their own checkpoints, seed 2 (at another step) trains in the sequential loop, and every seed ends
  with the results of an uninterrupted run of the three side by side; no metrics line is repeated."""
  _, store, _ = reference

  def args(seeds: str) -> list[str]:
    vm = ["--config.train.vmap_seeds=true", f"--config.store={store}"]
    return ["flmoe", "train", *TRAIN, f"--config.train.seeds={seeds}", *vm]

  ref = _drive(
    "none", *args("(0,1,2)"), "--workdir", str(tmp_path / "ref"), cwd=tmp_path, tmp=tmp_path / "t"
  )
  assert ref.returncode == 0 and "seeds [0, 1, 2]: trained side by side" in ref.stdout, ref.stderr
  run = tmp_path / "run"
  killed = _drive(
    "batch@5", *args("(0,1)"), "--workdir", str(run), cwd=tmp_path, tmp=tmp_path / "t"
  )
  assert killed.returncode == -9, killed.stderr[-1500:]
  again = _drive("none", *args("(0,1,2)"), "--workdir", str(run), cwd=tmp_path, tmp=tmp_path / "t")
  assert again.returncode == 0, again.stderr[-3000:]
  out = again.stdout
  assert "seed 0: resumed from epoch 1" in out and "seed 1: resumed from epoch 1" in out, out
  assert "seeds [0, 1]: trained side by side (train.vmap_seeds) from epoch 1" in out, out
  assert "seed 2: resumed" not in out and "[0, 1, 2]: trained side by side" not in out, out
  for seed in (0, 1, 2):
    want = json.loads((tmp_path / "ref" / f"seed_{seed}" / "result.json").read_text())
    got = json.loads((run / f"seed_{seed}" / "result.json").read_text())
    assert got["best_epoch"] == want["best_epoch"] and got["steps"] == want["steps"]
    for k, v in want["test"].items():
      assert got["test"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (seed, k)
  keys = [(m.get("seed"), m["step"], tuple(sorted(m))) for m in _metrics(run)]
  assert len(keys) == len(set(keys)) and len(keys) == len(_metrics(tmp_path / "ref"))


def test_sweep_killed_inside_a_point_completes_on_rerun(reference, tmp_path):
  """`flmoe sweep` over two points, killed in the second point's first epoch (batch 12 of the
  process: the first point takes 9): the rerun finishes the second point from its own checkpoint
  state, leaves the first as it was, and the table lists each point once."""
  _, store, _ = reference
  w = tmp_path / "sweep"
  args = ["flmoe", "sweep", "--config", *TRAIN[1:], f"--config.store={store}"]
  args += ["--grid", "optim.learning_rate=1e-3,2e-3", "--workdir", str(w)]
  killed = _drive("batch@12", *args, cwd=tmp_path, tmp=tmp_path / "tmp")
  assert killed.returncode == -9, killed.stderr[-1500:]
  first, second = w / "optim.learning_rate=1e-3", w / "optim.learning_rate=2e-3"
  assert (first / "summary.json").is_file() and not (second / "summary.json").exists()
  assert [json.loads(x)["point"] for x in (w / "sweep.jsonl").read_text().splitlines()] == [
    first.name
  ]
  before = {str(p): p.stat().st_mtime_ns for p in first.rglob("*")}
  again = _drive("none", *args, cwd=tmp_path, tmp=tmp_path / "tmp")
  assert again.returncode == 0, again.stderr[-3000:]
  assert {str(p): p.stat().st_mtime_ns for p in first.rglob("*")} == before
  rows = [json.loads(x) for x in (w / "sweep.jsonl").read_text().splitlines()]
  assert sorted(r["point"] for r in rows) == sorted([first.name, second.name])
  steps = [m["step"] for m in _metrics(second) if "train/loss" in m]
  assert steps and steps == sorted(set(steps))  # the resumed point logged no step twice
  left = [p for p in w.rglob("*") if ".tmp" in p.name or "orbax-checkpoint-tmp" in p.name]
  assert not left, left


@pytest.mark.slow
def test_soak_kills_at_random_moments(tmp_path):
  """`make soak`: a 30-epoch run killed with SIGKILL at random moments (seeded) until a start
  outlives its kill, then finished; equal to the uninterrupted run bit for bit. The moments fall
  anywhere: imports, compiles, steps, validation, checkpoint writes."""
  import random
  import time

  store = make_random_store(tmp_path / "store")
  args = ["flmoe", "train", *TRAIN, "--config.train.epochs=30", f"--config.store={store}"]
  ref = _drive(
    "none", *args, "--workdir", str(tmp_path / "ref"), cwd=tmp_path, tmp=tmp_path / "tmp"
  )
  assert ref.returncode == 0, ref.stderr[-2000:]
  rng = random.Random(0)
  run, kills = tmp_path / "run", 0
  for _ in range(40):  # kill at a random moment, again and again, until a start outlives its kill
    p = subprocess.Popen(
      [sys.executable, str(DRIVER), "none", *args, "--workdir", str(run)],
      cwd=tmp_path,
      env=_env(tmp_path / "tmp"),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    time.sleep(rng.uniform(1.0, 6.0))
    p.kill()
    _, err = p.communicate(timeout=60)
    assert p.returncode in (-9, 0), err[-2000:]
    if p.returncode == 0:
      break
    kills += 1
  again = _drive("none", *args, "--workdir", str(run), cwd=tmp_path, tmp=tmp_path / "tmp")
  assert again.returncode == 0, again.stderr[-3000:]
  assert kills >= 5
  _assert_equals_reference(run, tmp_path, _checkpoint_arrays(tmp_path / "ref"))
  assert _metrics(run) == _metrics(tmp_path / "ref")
