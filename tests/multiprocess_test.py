"""Two processes, one run: `jax.distributed` over loopback with 4 fake CPU devices per process.

The 2-process run must equal the 1-process run on 8 devices (same mesh shape, same global batches):
losses, validation and test metrics, and the final parameters; its checkpoint must restore on one
process; only process 0 writes the run's files; processes that disagree on the config stop, each
with one line, before anything compiles.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import make_random_store

from flmoe_jax import checkpointing, sharding, train
from flmoe_jax import config as config_lib
from flmoe_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]
MESH = "mesh.shape=(4,2)"  # data x expert: each process holds half the batch and both expert halves
COMMON = (MESH, "train.epochs=2", "train.log_every_steps=1", "loss.lambda_int=0.5")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(store, workdir, tmp_path, overrides=(), per_process=((), ()), timeout=420):
  """Runs `flmoe train` as 2 processes of 4 CPU devices; returns [(returncode, output)].

  `overrides` apply to both processes, `per_process[i]` to process i only.
  """
  port = _free_port()
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
  env["JAX_PLATFORMS"] = "cpu"
  procs = []
  for pid in range(2):
    args = [
      sys.executable, "-m", "flmoe_jax", "train", "--config", str(ROOT / "configs/tiny.py"),
      "--workdir", str(workdir), f"--config.store={store}",
      f"--config.distributed.coordinator_address=127.0.0.1:{port}",
      "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}",
      "--config.distributed.initialization_timeout=120",
      *(f"--config.{o}" for o in (*COMMON, *overrides, *per_process[pid])),
    ]  # fmt: skip
    log = open(tmp_path / f"{workdir.name}_process_{pid}.log", "w+")  # noqa: SIM115 - closed below
    procs.append((subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=log), log))
  out = []
  try:
    for p, _ in procs:
      p.wait(timeout=timeout)
  finally:
    for p, log in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
      log.seek(0)
      out.append((p.returncode, log.read()))
      log.close()
  return out


def _lines(run):
  return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _restore_latest(run, cfg, fs, seed):
  """A seed's final (model, optimizer) state, restored on this one process (8 devices)."""
  mesh = sharding.make_mesh((8, 1))
  _, state = train.init_state(cfg, fs, seed=seed)
  state = jax.device_put(state, sharding.state_shardings(state, mesh))
  got = checkpointing.read_latest(run / f"seed_{seed}" / "checkpoints" / "latest", state)
  assert got is not None, f"no checkpoint in {run}"
  return got


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  """The same tiny run of seeds 0, 1, 2 on 1 process x 8 devices (in this process, one seed after
  the other) and on 2 processes x 4: first seed 0, then the run grown to seeds 0-2 with the new
  seeds side by side (train.vmap_seeds), so both training loops run on two processes. Between the
  two, seed 0 loses its result file (as if killed after its last checkpoint): the second start
  restores its checkpoints on both processes and tests it again."""
  tmp = tmp_path_factory.mktemp("multiprocess")
  store = make_random_store(tmp / "store", n=(64, 16, 16))
  seeds = "train.seeds=(0,1,2)"
  cfg = config_lib.load_config(str(ROOT / "configs/tiny.py"), [f"store={store}", seeds, *COMMON])
  train.train_and_evaluate(cfg, tmp / "one", build_store=False)
  results = []
  for overrides in (["train.seeds=(0,)"], [seeds, "train.vmap_seeds=true"]):
    if results:
      (tmp / "two" / "seed_0" / "result.json").unlink()
    results = _launch(store, tmp / "two", tmp, overrides)
    for pid, (code, text) in enumerate(results):
      assert code == 0, f"process {pid} exited {code}:\n{text[-3000:]}"
  for _, text in results:
    assert "seeds [1, 2]: trained side by side" in text
    assert "seed 0: resumed from epoch 2 (step 8)" in text
  return cfg, store, tmp / "one", tmp / "two", results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_processes_equal_one(two_runs, seed):
  cfg, store, one, two, _ = two_runs
  a = [x for x in _lines(one) if x["seed"] == seed]
  b = [x for x in _lines(two) if x["seed"] == seed]
  # Process 0 alone writes the metrics: one line per logged step, as the 1-process run.
  assert [x["step"] for x in a] == [x["step"] for x in b] and len(a) >= 8
  for key in ("train/loss", "train/loss_task", "train/loss_interaction", "val/accuracy"):
    got = [x[key] for x in b if key in x]
    want = [x[key] for x in a if key in x]
    assert got and len(got) == len(want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=key)
  ra = json.loads((one / f"seed_{seed}" / "result.json").read_text())
  rb = json.loads((two / f"seed_{seed}" / "result.json").read_text())
  assert ra["steps"] == rb["steps"] == 8 and ra["best_epoch"] == rb["best_epoch"]
  np.testing.assert_allclose(rb["test"]["auroc"], ra["test"]["auroc"], rtol=1e-5)
  # The checkpoint the two processes wrote restores on one process and equals the 1-process run's.
  from flmoe_jax.data import store as store_lib

  fs = store_lib.open_store(store)
  (sa, ma), (sb, mb) = _restore_latest(one, cfg, fs, seed), _restore_latest(two, cfg, fs, seed)
  assert ma["step"] == mb["step"] == 8
  leaves_a, leaves_b = jax.tree.leaves(sa), jax.tree.leaves(sb)
  assert len(leaves_a) == len(leaves_b) > 10
  # 4 + 4 devices sum each batch's gradients in another order than 8: fp32 rounding, which Adam's
  # normalisation can lift to a few 1e-6 in a weight after 8 steps (seen with XLA's optimisations
  # off, as the suite runs); the largest weight change of the run is above 1e-4 (checked below).
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-5)
  # The parameters moved (a checkpoint of the initial state would also be "equal").
  _, init = train.init_state(cfg, fs, seed=seed)
  moved = [
    float(np.abs(np.asarray(x) - np.asarray(y)).max())
    for x, y in zip(jax.tree.leaves(init), leaves_a, strict=True)
    if np.issubdtype(np.asarray(x).dtype, np.floating)
  ]
  assert max(moved) > 1e-4


def test_only_process_zero_writes(two_runs):
  _, _, _, two, results = two_runs
  info = json.loads((two / "run.json").read_text())
  assert [s["num_processes"] for s in info["sessions"]] == [2, 2]  # one line per start
  saved = json.loads((two / "config.json").read_text())
  assert saved["distributed"]["process_id"] == 0  # process 0's config, not overwritten by 1
  assert saved["train"]["seeds"] == [0, 1, 2]
  assert (two / "summary.json").is_file()
  # Process 1 printed its summary too (it trained the same run), and no error.
  assert all("accuracy" in text for _, text in results)


def test_processes_that_disagree_stop_before_compiling(tmp_path):
  store = make_random_store(tmp_path / "store", n=(64, 16, 16))
  results = _launch(
    store, tmp_path / "run", tmp_path, per_process=(["train.epochs=2"], ["train.epochs=3"]),
    timeout=240,
  )  # fmt: skip
  for pid, (code, text) in enumerate(results):
    assert code == 2, f"process {pid} exited {code}:\n{text[-2000:]}"
    assert "processes disagree on the config or --workdir: process(es) [1]" in text
  assert not (tmp_path / "run").exists()  # refused before anything was written


def test_local_rows_single_process():
  mesh = sharding.make_mesh((4, 2))
  assert sharding.local_rows(32, mesh) == (0, 32)


def test_distributed_config_checked():
  tiny = str(ROOT / "configs/tiny.py")
  with pytest.raises(ConfigError, match="process_id 2 is not below distributed.num_processes 2"):
    config_lib.load_config(tiny, ["distributed.num_processes=2", "distributed.process_id=2"])
  with pytest.raises(ConfigError, match="'distributed.coordinator_address' is 'localhost'"):
    config_lib.load_config(tiny, ["distributed.coordinator_address=localhost"])


def test_when_the_runtime_starts():
  from flmoe_jax import distributed

  dist = config_lib.load_config(str(ROOT / "configs/tiny.py")).distributed
  assert not distributed.wanted(dist, environ={})
  assert not distributed.wanted(dist, environ={"SLURM_NTASKS": "1"})  # one task: nothing to join
  assert distributed.wanted(dist, environ={"SLURM_NTASKS": "4"})
  assert distributed.wanted(dist, environ={"OMPI_COMM_WORLD_SIZE": "2"})
  assert distributed.wanted(dist, environ={"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"})
  assert not distributed.wanted(dist, environ={"TPU_WORKER_HOSTNAMES": "localhost"})
  assert distributed.wanted(dist, environ={"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
  with dist.unlocked():
    dist.initialize = "off"
  assert not distributed.wanted(dist, environ={"SLURM_NTASKS": "4"})
  with dist.unlocked():
    dist.initialize = "on"
  assert distributed.wanted(dist, environ={})
