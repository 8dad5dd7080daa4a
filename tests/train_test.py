"""Training: end to end, one compile, sharded == unsharded, checkpoints, resume, and bad input."""

import functools
import json
import pathlib
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_random_store
from jax.sharding import PartitionSpec

from flmoe_jax import checkpointing, sharding, train
from flmoe_jax import config as config_lib
from flmoe_jax.data import store as store_lib
from flmoe_jax.errors import ConfigError, RunDirError
from flmoe_jax.models import build_model
from flmoe_jax.train_summary import TrainSummary

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(store_path, *overrides):
  cfg = config_lib.load_config(str(ROOT / "configs/tiny.py"), overrides)
  with cfg.unlocked():
    cfg.store = str(store_path)
    cfg.synthetic = {}
  return cfg


def test_end_to_end_run_directory(random_store, tmp_path):
  cfg = tiny_config(random_store, "train.seeds=(0,1)")
  summary = train.train_and_evaluate(cfg, tmp_path / "run")
  run = tmp_path / "run"
  assert TrainSummary.load(run / "summary.json") == summary
  assert json.loads((run / "summary.json").read_text())["format"] == "flmoe-train-summary"
  assert set(summary.seeds) == {0, 1}
  assert {"accuracy", "macro_f1", "auroc"} <= set(summary.mean_std["test"])
  for s in (0, 1):
    assert (run / f"seed_{s}" / "result.json").exists()
    assert checkpointing.Checkpointer(run / f"seed_{s}/checkpoints/best").latest_step() is not None
  lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
  train_lines = [x for x in lines if "train/loss" in x]
  assert train_lines, "no training log lines"
  keys = set(train_lines[0])
  assert {
    "step",
    "seed",
    "epoch",
    "train/loss_task",
    "train/loss_interaction",
    "train/examples_per_s",
    "train/learning_rate",
    "train/weight_expert_3",
    "train/loss_int_expert_2",
  } <= keys
  assert any("val/accuracy" in x for x in lines) and any("test/accuracy" in x for x in lines)
  # Expert weights are a distribution.
  w = [train_lines[0][f"train/weight_expert_{i}"] for i in range(4)]
  assert abs(sum(w) - 1) < 1e-5
  # run.json: the store's signature and, for this start, the versions and the git commit.
  info = json.loads((run / "run.json").read_text())
  assert info["store"]["signature"]["splits"] == {"train": 48, "val": 16, "test": 16}
  (session,) = info["sessions"]
  import orbax.checkpoint as ocp

  assert session["versions"]["jax"] == jax.__version__
  assert session["versions"]["orbax-checkpoint"] == ocp.__version__
  assert {"flax", "optax", "transformers", "python"} <= set(session["versions"])
  head = subprocess.run(
    ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
  ).stdout.strip()
  assert session["git"]["commit"] == (head or None)


def test_rerun_finished_is_noop_and_other_config_refused(random_store, tmp_path):
  cfg = tiny_config(random_store, "train.epochs=1")
  first = train.train_and_evaluate(cfg, tmp_path / "run")
  again = train.train_and_evaluate(cfg, tmp_path / "run")
  assert first == again
  other = tiny_config(random_store, "train.epochs=1", "model.hidden_dim=8")
  with pytest.raises(RunDirError, match="different config"):
    train.train_and_evaluate(other, tmp_path / "run")
  train.train_and_evaluate(other, tmp_path / "run", overwrite=True)


def test_a_run_grows_seeds_without_retraining_the_finished_ones(random_store, tmp_path):
  """The seeds are the one setting two starts of a run may differ in: a second seed trains beside
  the first, which is read back, not retrained; the config then records both."""
  one = train.train_and_evaluate(tiny_config(random_store, "train.epochs=1"), tmp_path / "run")
  result = tmp_path / "run" / "seed_0" / "result.json"
  before = result.stat().st_mtime_ns
  two = train.train_and_evaluate(
    tiny_config(random_store, "train.epochs=1", "train.seeds=(0,1)"), tmp_path / "run"
  )
  assert sorted(two.seeds) == [0, 1] and two.seeds[0] == one.seeds[0]
  assert result.stat().st_mtime_ns == before
  assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["seeds"] == [0, 1]


def _final_params(run, seed):
  from flmoe_jax import checkpointing

  cfg = config_lib.with_defaults(config_lib.config_from_json((run / "config.json").read_text()))
  fs = store_lib.open_store(cfg.store)
  _, target = train.init_state(cfg, fs, seed=seed)
  ck = checkpointing.Checkpointer(run / f"seed_{seed}" / "checkpoints" / "latest", read_only=True)
  state, _ = ck.restore(ck.all_steps()[-1], target)
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_vmapped_seeds_equal_their_separate_runs(random_store, tmp_path, capsys):
  """`train.vmap_seeds`: seeds 0 and 1 in one program end with the numbers of their separate runs:
  the same metrics lines (every loss, validation and test metric), results and final parameters."""
  over = ("train.epochs=2", "train.seeds=(0,1)", "loss.lambda_role=1", "loss.lambda_missing=1")
  sep = train.train_and_evaluate(tiny_config(random_store, *over), tmp_path / "sep")
  capsys.readouterr()
  vm = train.train_and_evaluate(
    tiny_config(random_store, *over, "train.vmap_seeds=True"), tmp_path / "vm"
  )
  assert "seeds [0, 1]: trained side by side" in capsys.readouterr().out

  def lines(run):
    out = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted(
      ({k: v for k, v in d.items() if k != "train/examples_per_s"} for d in out),
      key=lambda d: (d.get("seed", -1), d["step"], sorted(d)),
    )

  a, b = lines(tmp_path / "sep"), lines(tmp_path / "vm")
  assert len(a) == len(b) > 8 and [sorted(x) for x in a] == [sorted(x) for x in b]
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_allclose(y[k], x[k], rtol=2e-5, atol=2e-6, err_msg=k)
  for seed in (0, 1):
    r_sep, r_vm = sep.seeds[seed], vm.seeds[seed]
    assert r_vm.best_epoch == r_sep.best_epoch and r_vm.steps == r_sep.steps
    for k, v in r_sep.test.items():
      assert r_vm.test[k] == pytest.approx(v, rel=2e-5, abs=2e-6), k
    for x, y in zip(_final_params(tmp_path / "sep", seed), _final_params(tmp_path / "vm", seed)):
      np.testing.assert_allclose(y, x, rtol=2e-5, atol=2e-6)
  # The seeds differ from each other (the axis is not one seed copied).
  assert sep.seeds[0].best_val != sep.seeds[1].best_val


def test_run_of_an_earlier_version_resumes(random_store, tmp_path):
  # A run dir written before `model.attention` and `loss.lambda_role` existed holds a config without
  # them; it was trained with their defaults, so the same config today resumes it (here: a no-op).
  cfg = tiny_config(random_store, "train.epochs=1")
  first = train.train_and_evaluate(cfg, tmp_path / "run")
  path = tmp_path / "run" / "config.json"
  saved = json.loads(path.read_text())
  del saved["model"]["attention"], saved["loss"]["lambda_role"]
  path.write_text(json.dumps(saved))
  assert train.train_and_evaluate(cfg, tmp_path / "run") == first
  # A key the old run had at another value than today's default is still a different config.
  saved["model"]["num_layers"] = cfg.model.num_layers + 1
  path.write_text(json.dumps(saved))
  with pytest.raises(RunDirError, match="different config"):
    train.train_and_evaluate(cfg, tmp_path / "run")


def _jit_step(cfg, fs, graphdef, out_shardings=None, **loss_kw):
  """The train step of `cfg` (state donated), with optional extra loss weights.

  Returns step(state, batch, key, fill_means=None, objective=None), calling the jitted step (its
  `.jitted`) with the objective of `cfg` and `loss_kw` unless another is given.
  """
  default = train.Objective(task_type=fs.task.type, lambda_int=cfg.loss.lambda_int, **loss_kw)
  jitted = jax.jit(
    functools.partial(train.train_step, graphdef=graphdef, dtype=jnp.float32),
    donate_argnums=(0,),
    out_shardings=out_shardings,
  )

  def step(state, batch, key, fill_means=None, objective=None):
    return jitted(state, batch, key, objective or default, fill_means)

  step.jitted = jitted
  return step


def _steps(cfg, fs, mesh_shape, n_steps=3):
  """Runs n train steps on a mesh; returns losses and the jitted function."""
  mesh = sharding.make_mesh(mesh_shape)
  rules = tuple(tuple(r) for r in cfg.mesh.rules)
  graphdef, state = train.init_state(cfg, fs, seed=0)
  shardings = sharding.state_shardings(state, mesh, rules)
  state = jax.device_put(state, shardings)
  step = _jit_step(cfg, fs, graphdef, out_shardings=(shardings, None))
  losses = []
  batches = fs.batches("train", cfg.train.batch_size, shuffle=True, seed=0, drop_remainder=True)
  for i, batch in zip(range(n_steps), batches):
    b = {k: batch[k] for k in ("x", "mask", "label", "weight")}
    state, m = step(
      state,
      sharding.global_batch(b, mesh, cfg.train.batch_size, rules),
      jax.random.fold_in(jax.random.key(0), i),
    )
    losses.append(float(m["loss"]))
  return np.array(losses), step, state


def test_seeds_and_runs_that_differ_in_loss_weights_share_one_compiled_step(random_store, tmp_path):
  # The (model, optimizer) graphs of two seeds, and of a later run with the same structure and
  # optimizer, are equal, so the jitted step is built once and reused; the other run's loss weight
  # is still the one its step applies.
  from flmoe_jax.train import loop

  loop._jitted_train_step.cache_clear()
  first = tiny_config(random_store, "train.epochs=1", "train.seeds=(0,1)")
  train.train_and_evaluate(first, tmp_path / "a")
  other = tiny_config(random_store, "train.epochs=1", "loss.lambda_int=0.3")
  train.train_and_evaluate(other, tmp_path / "b")
  info = loop._jitted_train_step.cache_info()
  assert (info.misses, info.hits) == (1, 2)
  for run, lam in ((tmp_path / "a", first.loss.lambda_int), (tmp_path / "b", 0.3)):
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [x for x in lines if "train/loss" in x]
    assert logged
    for x in logged:
      want = x["train/loss_task"] + lam * x["train/loss_interaction"]
      np.testing.assert_allclose(x["train/loss"], want, rtol=1e-5)
  # A different optimizer is a different graph: its own step.
  train.train_and_evaluate(
    tiny_config(random_store, "train.epochs=1", "optim.learning_rate=3e-3"), tmp_path / "c"
  )
  assert loop._jitted_train_step.cache_info().misses == 2


def test_train_step_compiles_once(random_store):
  cfg = tiny_config(random_store)
  fs = store_lib.open_store(random_store)
  _, step, _ = _steps(cfg, fs, (1, 1))
  assert step.jitted._cache_size() == 1


@pytest.mark.parametrize("mesh_shape", [(4, 2), (2, 4), (8, 1)])
def test_sharded_equals_single_device(random_store, mesh_shape):
  cfg = tiny_config(random_store)
  fs = store_lib.open_store(random_store)
  ref, _, _ = _steps(cfg, fs, (1, 1))
  got, _, state = _steps(cfg, fs, mesh_shape)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # The stacked experts really are split over the expert axis.
  if mesh_shape[1] > 1:
    leaves = jax.tree_util.tree_leaves_with_path(state)
    sharded = [x for p, x in leaves if "experts" in jax.tree_util.keystr(p) and x.ndim >= 1]
    assert sharded and all(x.sharding.spec[0] == "expert" for x in sharded)


def test_expert_parallel_step_gathers_no_expert_weights(random_store):
  """On a data x expert mesh of 2 x 4 each device holds one expert's weights and runs its passes:
  the compiled step all-gathers only small per-example / per-expert results (gate-sized), never a
  stacked expert weight (its full [E, ...] shape)."""
  cfg = tiny_config(random_store)
  fs = store_lib.open_store(random_store)
  mesh = sharding.make_mesh((2, 4))
  rules = tuple(tuple(r) for r in cfg.mesh.rules)
  graphdef, state = train.init_state(cfg, fs, seed=0)
  shardings = sharding.state_shardings(state, mesh, rules)
  state = jax.device_put(state, shardings)
  step = _jit_step(cfg, fs, graphdef, out_shardings=(shardings, None))
  batch = next(iter(fs.batches("train", cfg.train.batch_size, shuffle=True, seed=0)))
  b = {k: batch[k] for k in ("x", "mask", "label", "weight")}
  b = sharding.global_batch(b, mesh, cfg.train.batch_size, rules)

  def all_gathers(hlo: str) -> set[tuple[int, ...]]:
    return {
      tuple(int(d) for d in m.group(1).split(",") if d)
      for m in re.finditer(r"= f32\[([\d,]*)\][^=]*? all-gather\(", hlo)
    }

  # The pattern does find a gathered weight: an expert-sharded [4, 16, 32] array made whole.
  named = functools.partial(jax.sharding.NamedSharding, mesh)
  P = jax.sharding.PartitionSpec
  whole = jax.jit(lambda x: x * 2, in_shardings=named(P("expert")), out_shardings=named(P()))
  assert (4, 16, 32) in all_gathers(whole.lower(jnp.ones((4, 16, 32))).compile().as_text())
  objective = train.Objective(task_type=fs.task.type, lambda_int=cfg.loss.lambda_int)
  hlo = step.jitted.lower(state, b, jax.random.key(0), objective).compile().as_text()
  gathered = all_gathers(hlo)
  assert gathered  # the gate and the mixture do gather: the pattern finds all-gathers
  expert_shapes = {
    tuple(x.shape)
    for p, x in jax.tree_util.tree_leaves_with_path(state)
    if "experts" in jax.tree_util.keystr(p) and x.ndim >= 2
  }
  assert len(expert_shapes) >= 5 and not gathered & expert_shapes, gathered & expert_shapes
  assert max(np.prod(s) for s in gathered) < min(np.prod(s) for s in expert_shapes if len(s) > 2)


def test_state_shardings_follow_the_variables_logical_names_and_the_rules(random_store):
  """Shardings come from parameter metadata mapped by the rules, not from parameter paths."""
  from flax import nnx

  cfg = tiny_config(random_store)
  fs = store_lib.open_store(random_store)
  model = build_model(cfg, fs, seed=0)
  # A variable outside the expert stack that names its leading axis "expert" is split too (the
  # gate's first kernel, [M * H, H]: 32 rows split over 2); the stack's own leaves as before.
  gate = model.reweight.layers[0].kernel
  gate.set_metadata(out_sharding=("expert", None))
  state = nnx.state(model)
  mesh = sharding.make_mesh((4, 2))
  got = {
    jax.tree_util.keystr(p): s.spec
    for p, s in jax.tree_util.tree_leaves_with_path(sharding.state_shardings(state, mesh))
  }
  assert got["['reweight']['layers'][0]['kernel'].value"] == PartitionSpec("expert", None)
  assert got["['reweight']['layers'][1]['kernel'].value"] == PartitionSpec()
  stacked = {k: v for k, v in got.items() if k.startswith("['experts']")}
  assert stacked and all(v[0] == "expert" and set(v[1:]) <= {None} for v in stacked.values())
  # A rule that maps "expert" to no mesh axis replicates everything.
  rules = (("batch", "data"), ("expert", None))
  specs = [s.spec for s in jax.tree.leaves(sharding.state_shardings(state, mesh, rules))]
  assert all(set(spec) <= {None} for spec in specs)
  # An axis that does not divide the named dimension replicates it: 4 experts on an 8-way axis,
  # while the gate kernel's 32 rows still split 8 ways.
  got = {
    jax.tree_util.keystr(p): s.spec
    for p, s in jax.tree_util.tree_leaves_with_path(
      sharding.state_shardings(state, sharding.make_mesh((1, 8)))
    )
  }
  assert all(set(v) <= {None} for k, v in got.items() if k.startswith("['experts']"))
  assert got["['reweight']['layers'][0]['kernel'].value"] == PartitionSpec("expert", None)


def test_kill_and_resume_matches_uninterrupted(random_store, tmp_path, monkeypatch):
  cfg = tiny_config(random_store, "train.epochs=3")
  train.train_and_evaluate(cfg, tmp_path / "full")

  # Interrupt the second run right after its first epoch's checkpoint is on disk.
  real_save = checkpointing.Checkpointer.save
  calls = {"n": 0}

  def save_then_die(self, step, state, meta):
    real_save(self, step, state, meta)
    if "latest" in str(self.directory):
      calls["n"] += 1
      if calls["n"] == 1:
        self.wait()
        raise KeyboardInterrupt("simulated kill")

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(cfg, tmp_path / "killed")
  monkeypatch.setattr(checkpointing.Checkpointer, "save", real_save)
  assert not (tmp_path / "killed" / "seed_0" / "result.json").exists()
  train.train_and_evaluate(cfg, tmp_path / "killed")

  def final(run):
    ck = checkpointing.Checkpointer(run / "seed_0" / "checkpoints" / "latest")
    fs = store_lib.open_store(random_store)
    _, target = train.init_state(cfg, fs, seed=0)
    state, meta = ck.restore(ck.latest_step(), target)
    return state, meta

  (a, ma), (b, mb) = final(tmp_path / "full"), final(tmp_path / "killed")
  assert ma["step"] == mb["step"] and ma["epoch"] == mb["epoch"] == 3
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  ra = json.loads((tmp_path / "full" / "seed_0" / "result.json").read_text())
  rb = json.loads((tmp_path / "killed" / "seed_0" / "result.json").read_text())
  assert ra["test"] == rb["test"]


def test_restore_onto_other_device_count(random_store, tmp_path):
  cfg = tiny_config(random_store, "train.epochs=1", "mesh.shape=(4,2)")
  train.train_and_evaluate(cfg, tmp_path / "run")
  fs = store_lib.open_store(random_store)
  _, target = train.init_state(cfg, fs, seed=0)
  one = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  target = jax.device_put(target, sharding.state_shardings(target, one))
  ck = checkpointing.Checkpointer(tmp_path / "run" / "seed_0" / "checkpoints" / "latest")
  state, _ = ck.restore(ck.latest_step(), target)
  assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(state))


def test_store_config_mismatch_before_compile(random_store, tmp_path):
  with pytest.raises(ConfigError, match="config key 'model.attention' is 'flash'; it must be"):
    train.train_and_evaluate(tiny_config(random_store, "model.attention=flash"), tmp_path / "d")
  with pytest.raises(ConfigError, match="not divisible by model.num_heads"):
    train.train_and_evaluate(tiny_config(random_store, "model.hidden_dim=15"), tmp_path / "a")
  with pytest.raises(ConfigError, match="exceeds the 48 training examples"):
    train.train_and_evaluate(tiny_config(random_store, "train.batch_size=64"), tmp_path / "b")
  with pytest.raises(ConfigError, match="not divisible by the 8-way data axis"):
    train.train_and_evaluate(tiny_config(random_store, "train.batch_size=12"), tmp_path / "c")


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
  path = make_random_store(tmp_path / "bad")
  x = np.load(path / "train" / "image.npy")
  x[:] = 1e30  # finite on disk, overflows inside LayerNorm: the loss becomes NaN at the first step
  np.save(path / "train" / "image.npy", x)
  cfg = tiny_config(path)
  with pytest.raises(
    train.TrainingDivergedError, match=r"non-finite at step 1 .*last good checkpoint: none"
  ):
    train.train_and_evaluate(cfg, tmp_path / "run")
  assert not (tmp_path / "run" / "seed_0" / "result.json").exists()


def test_stale_synthetic_store_refused(tmp_path):
  cfg = config_lib.load_config(str(ROOT / "configs/tiny.py"))
  with cfg.unlocked():
    cfg.store = str(tmp_path / "st")
  train.ensure_store(cfg)
  with cfg.unlocked():
    cfg.synthetic.n_train = 65
  with pytest.raises(
    ConfigError, match="other synthetic settings \\(n_train: 64 there, 65 in the config\\)"
  ):
    train.ensure_store(cfg)


def test_role_loss_and_gate_warmup(random_store, tmp_path):
  from flax import nnx

  from flmoe_jax import runs

  # Warm-up longer than the run: the gate must come out exactly as initialised, the experts trained.
  cfg = tiny_config(
    random_store,
    "train.epochs=1",
    "loss.lambda_role=1.0",
    "loss.lambda_missing=1.0",
    "optim.gate_warmup_steps=1000",
  )
  train.train_and_evaluate(cfg, tmp_path / "run")
  lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  train_lines = [x for x in lines if "train/loss" in x]
  assert {"train/loss_role", "train/loss_role_expert_3", "train/loss_missing"} <= set(
    train_lines[-1]
  )
  assert np.isfinite(train_lines[-1]["train/loss_role"])
  assert (
    np.isfinite(train_lines[-1]["train/loss_missing"]) and train_lines[-1]["train/loss_missing"] > 0
  )
  trained = runs.load_run(tmp_path / "run", which="latest").model
  fs = store_lib.open_store(random_store)
  init = build_model(cfg, fs, seed=0)
  for part, frozen in (("reweight", True), ("experts", False)):
    a = jax.tree.leaves(nnx.state(getattr(trained, part), nnx.Param))
    b = jax.tree.leaves(nnx.state(getattr(init, part), nnx.Param))
    same = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert same == frozen, part


def test_extra_terms_start_at_their_step(random_store):
  # lambda_missing and lambda_decor weigh 0 before `extra_start_step` and fully from it on; the
  # terms are computed (and logged) throughout, and one compiled step serves both phases, and other
  # weights and start steps of the same terms (a sweep's points).
  cfg = tiny_config(random_store)
  fs = store_lib.open_store(random_store)
  graphdef, state = train.init_state(cfg, fs, seed=0)
  step = _jit_step(cfg, fs, graphdef, lambda_missing=1.0, lambda_decor=2.0, extra_start_step=2)
  means = [jnp.asarray(mu, jnp.float32) for mu in fs.means()]
  batches = fs.batches("train", cfg.train.batch_size, shuffle=True, seed=0, drop_remainder=True)
  for i, batch in zip(range(3), batches):
    b = {k: batch[k] for k in ("x", "mask", "label", "weight")}
    state, m = step(state, b, jax.random.key(i), means)
    base = float(m["loss_task"]) + cfg.loss.lambda_int * float(m["loss_interaction"])
    extra = float(m["loss_missing"]) + 2.0 * float(m["loss_decor"])
    assert float(m["loss_missing"]) > 0
    np.testing.assert_allclose(float(m["loss"]), base + (extra if i >= 2 else 0.0), rtol=1e-5)
  assert step.jitted._cache_size() == 1
  other = train.Objective(
    task_type=fs.task.type,
    lambda_int=0.25,
    lambda_missing=3.0,
    lambda_decor=0.5,
    extra_start_step=9,
  )
  state, m = step(state, b, jax.random.key(5), means, other)
  base = float(m["loss_task"]) + 0.25 * float(m["loss_interaction"])
  np.testing.assert_allclose(float(m["loss"]), base, rtol=1e-5)  # step 3 < 9: the extras weigh 0
  assert step.jitted._cache_size() == 1


def test_schedule_and_gate_warmup_fraction(random_store, tmp_path):
  fs = store_lib.open_store(random_store)
  cfg = tiny_config(
    random_store,
    "train.epochs=10",
    "optim.schedule=warmup_cosine",
    "optim.warmup_fraction=0.1",
    "optim.gate_warmup_fraction=0.25",
  )
  total = train.training_steps(cfg, fs)
  assert total == (48 // 16) * 10
  lr = train.learning_rate_schedule(cfg, total)
  peak = cfg.optim.learning_rate
  assert float(lr(0)) == 0.0 and float(lr(3)) == pytest.approx(peak)  # 3 = 10% of 30 steps
  assert float(lr(15)) < peak and float(lr(total)) == pytest.approx(0.0, abs=1e-9)
  # The gate warm-up as a fraction of the run: 25% of 30 steps; an explicit step count wins.
  assert train.gate_warmup_steps(cfg, total) == 8
  with cfg.unlocked():
    cfg.optim.gate_warmup_fraction = 0.0
    cfg.optim.gate_warmup_steps = 5
  assert train.gate_warmup_steps(cfg, total) == 5
  with cfg.unlocked():
    cfg.optim.gate_warmup_fraction = 0.5
  with pytest.raises(ConfigError, match="gate_warmup_steps and optim.gate_warmup_fraction"):
    config_lib.validate_config(cfg)
  # The same for the start of the missing-modality / decorrelation terms: 60% of 30 steps.
  with cfg.unlocked():
    cfg.loss.extra_start_fraction = 0.6
  assert train.extra_start_step(cfg, total) == 18
  with cfg.unlocked():
    cfg.optim.gate_warmup_fraction = 0.0
    cfg.loss.extra_start_step = 4
  assert train.extra_start_step(cfg, total) == 4
  with pytest.raises(ConfigError, match="extra_start_step and loss.extra_start_fraction"):
    config_lib.validate_config(cfg)
  # The logged learning rate is the rate of the step's update.
  cfg2 = tiny_config(
    random_store, "train.epochs=2", "optim.schedule=warmup_cosine", "optim.warmup_fraction=0.5"
  )
  train.train_and_evaluate(cfg2, tmp_path / "run")
  lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  logged = {x["step"]: x["train/learning_rate"] for x in lines if "train/learning_rate" in x}
  sched = train.learning_rate_schedule(cfg2, 6)
  assert logged and all(v == pytest.approx(float(sched(s - 1))) for s, v in logged.items())


def test_warmup_stable_decay_holds_the_peak_then_decays_over_the_last_share(random_store):
  cfg = tiny_config(
    random_store,
    "optim.schedule=warmup_stable_decay",
    "optim.warmup_fraction=0.1",
    "optim.decay_fraction=0.3",
  )
  lr, peak = train.learning_rate_schedule(cfg, 100), cfg.optim.learning_rate
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(peak / 2)  # warm-up: 10 steps
  assert all(float(lr(s)) == pytest.approx(peak) for s in (10, 40, 70))  # held until 100 - 30
  assert float(lr(85)) == pytest.approx(peak / 2, rel=1e-4)  # cosine: half-way down the decay
  assert float(lr(99)) < 0.01 * peak
  # Without a warm-up the run starts at the peak (optax's 0-step linear warm-up would stay at 0).
  with cfg.unlocked():
    cfg.optim.warmup_fraction = 0.0
  assert float(train.learning_rate_schedule(cfg, 100)(0)) == pytest.approx(peak)
  with cfg.unlocked():
    cfg.optim.warmup_fraction, cfg.optim.decay_fraction = 0.8, 0.3
  with pytest.raises(ConfigError, match="exceed 1"):
    config_lib.validate_config(cfg)


def test_best_checkpoint_is_chosen_once_the_whole_objective_applies(random_store, tmp_path):
  # A learning rate too small to change any prediction: every epoch validates the same, so without the
  # rule the first epoch would stay best. With the missing-modality term starting in the last epoch
  # (fraction 0.8 of 3 x 3 steps = step 7), only that epoch may be selected.
  overrides = ("train.epochs=3", "optim.learning_rate=1e-12", "loss.lambda_missing=1.0")
  late = train.train_and_evaluate(
    tiny_config(random_store, *overrides, "loss.extra_start_fraction=0.8"), tmp_path / "late"
  )
  assert late.seeds[0].best_epoch == 3
  early = train.train_and_evaluate(tiny_config(random_store, *overrides), tmp_path / "early")
  assert early.seeds[0].best_epoch == 1
  # Terms starting exactly where epoch 1 ends (round(0.33 x 9) = step 3): epoch 1 had them for zero
  # steps, so the first eligible epoch is 2.
  edge = train.train_and_evaluate(
    tiny_config(random_store, *overrides, "loss.extra_start_fraction=0.33"), tmp_path / "edge"
  )
  assert edge.seeds[0].best_epoch == 2


def test_init_from_starts_from_another_runs_weights(random_store, tmp_path):
  """Fine-tuning: with a vanishing learning rate the new run ends where the source run's best
  checkpoint is, and far from its own random start; a source of other sizes is refused up front."""
  from flax import nnx

  from flmoe_jax import runs

  cfg = tiny_config(random_store, "train.epochs=1", "train.seeds=(0,)")
  train.train_and_evaluate(cfg, tmp_path / "source")
  source = nnx.to_pure_dict(nnx.state(runs.load_run(tmp_path / "source").model, nnx.Param))

  def params_after(name, *overrides):
    c = tiny_config(
      random_store, "train.epochs=1", "train.seeds=(5,)", "optim.learning_rate=1e-12", *overrides
    )
    train.train_and_evaluate(c, tmp_path / name)
    return nnx.to_pure_dict(nnx.state(runs.load_run(tmp_path / name).model, nnx.Param))

  tuned = params_after("tuned", f"train.init_from={tmp_path / 'source'}")
  fresh = params_after("fresh")
  gaps = {
    name: max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p, source)))
    for name, p in (("tuned", tuned), ("fresh", fresh))
  }
  assert gaps["tuned"] < 1e-6 < 1e-2 < gaps["fresh"], gaps
  bigger = tiny_config(
    random_store, f"train.init_from={tmp_path / 'source'}", "model.hidden_dim=32"
  )
  with pytest.raises(ConfigError, match="does not have this config's parameter shapes"):
    train.train_and_evaluate(bigger, tmp_path / "bigger")
  assert not (tmp_path / "bigger").exists()


def test_objective_of_a_config_carries_every_loss_weight():
  # Each `loss.lambda_*` of the config reaches the step's objective (a weight left out would train
  # silently without its term).
  cfg = config_lib.base_config()
  names = sorted(k for k in cfg.loss if k.startswith("lambda_"))
  with cfg.unlocked():
    for i, name in enumerate(names):
      cfg.loss[name] = float(i + 1)
  task = type("Task", (), {"type": "binary"})()
  objective = train.Objective.of(cfg, type("Store", (), {"task": task})(), total_steps=10)
  assert "lambda_syn_residual" in names
  for i, name in enumerate(names):
    assert getattr(objective, name) == float(i + 1), name
