"""Config files, overrides and their errors."""

import pathlib

import pytest

from flmoe_jax import config as config_lib
from flmoe_jax.errors import ConfigError

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["synthetic", "tiny", "mmimdb", "enrico", "mmhs150k", "easyvqa"])
def test_every_config_loads(name):
  cfg = config_lib.load_config(str(CONFIGS / f"{name}.py"))
  assert cfg.model.kind == "fl_i2moe"
  dense = config_lib.load_config(f"{CONFIGS / f'{name}.py'}:dense")
  assert dense.model.kind == "dense"
  if name != "tiny":  # the comparison models of Table A
    i2 = config_lib.load_config(f"{CONFIGS / f'{name}.py'}:i2moe")
    assert (i2.model.kind, i2.name) == ("i2moe", f"{cfg.name}_i2moe")
    with pytest.raises(ConfigError, match="dense and i2moe exclude each other"):
      config_lib.load_config(f"{CONFIGS / f'{name}.py'}:dense,i2moe")


def test_paper_hyperparameters():
  mm = config_lib.load_config(str(CONFIGS / "mmimdb.py"))
  assert (mm.model.hidden_dim, mm.model.num_heads, mm.model.num_layers) == (256, 4, 2)
  assert (mm.model.dropout, mm.model.temperature, mm.model.rw_layers) == (0.5, 2.0, 2)
  assert (mm.optim.learning_rate, mm.train.batch_size, mm.train.epochs) == (1e-4, 32, 40)
  assert mm.loss.lambda_int == 0.5 and tuple(mm.train.seeds) == (0, 1, 2)
  en = config_lib.load_config(str(CONFIGS / "enrico.py"))
  assert (en.train.epochs, en.model.rw_layers) == (50, 3)


def test_overrides_are_typed():
  cfg = config_lib.load_config(
    str(CONFIGS / "tiny.py"),
    [
      "model.hidden_dim=32",
      "optim.learning_rate=0.01",
      "model.torch_init=false",
      "train.seeds=(1,2)",
      "config.model.kind=dense",
      "mesh.shape=(4,2)",
    ],
  )
  assert cfg.model.hidden_dim == 32 and isinstance(cfg.model.hidden_dim, int)
  assert cfg.optim.learning_rate == 0.01
  assert cfg.model.torch_init is False
  assert tuple(cfg.train.seeds) == (1, 2)
  assert cfg.model.kind == "dense"
  assert tuple(cfg.mesh.shape) == (4, 2)


def test_unknown_key_lists_valid_keys():
  with pytest.raises(
    ConfigError, match=r"unknown config key 'model.hiden_dim'; valid keys: .*model.hidden_dim"
  ):
    config_lib.load_config(str(CONFIGS / "tiny.py"), ["model.hiden_dim=3"])


def test_bad_values_and_files(tmp_path):
  with pytest.raises(ConfigError, match="cannot parse"):
    config_lib.load_config(str(CONFIGS / "tiny.py"), ["model.hidden_dim=abc"])
  with pytest.raises(ConfigError, match="key=value"):
    config_lib.load_config(str(CONFIGS / "tiny.py"), ["model.hidden_dim"])
  with pytest.raises(ConfigError, match="not found"):
    config_lib.load_config(str(tmp_path / "nope.py"))
  (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
  with pytest.raises(ConfigError, match="failed to import.*boom"):
    config_lib.load_config(str(tmp_path / "broken.py"))
  (tmp_path / "empty.py").write_text("x = 1\n")
  with pytest.raises(ConfigError, match="no get_config"):
    config_lib.load_config(str(tmp_path / "empty.py"))


def test_json_round_trip():
  cfg = config_lib.load_config(str(CONFIGS / "tiny.py"))
  text = config_lib.config_to_json(cfg)
  assert config_lib.config_to_json(config_lib.config_from_json(text)) == text


def test_run_config_fills_keys_added_after_the_run(tmp_path):
  import json

  from flmoe_jax import runs

  saved = json.loads(config_lib.config_to_json(config_lib.base_config()))
  del saved["loss"]["lambda_role"], saved["optim"]["gate_warmup_steps"]  # an older run's config
  saved["loss"]["lambda_int"] = 0.3
  (tmp_path / "config.json").write_text(json.dumps(saved))
  cfg = runs.run_config(tmp_path)
  assert cfg.loss.lambda_role == 0.0 and cfg.optim.gate_warmup_steps == 0
  assert cfg.loss.lambda_int == 0.3  # saved values are kept


def test_synthetic_l2_is_the_ladder_rung_the_recipe_was_measured_on():
  """`synthetic.py:l2` builds the store of benchmarks/ground_truth_ladder.py's L2 rung (seed 0)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(
    "ladder", CONFIGS.parent / "benchmarks" / "ground_truth_ladder.py"
  )
  ladder = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ladder)
  cfg = config_lib.load_config(f"{CONFIGS / 'synthetic.py'}:l2,redundancy")
  syn = cfg.synthetic.to_dict()
  assert {k: syn[k] for k in ladder.RUNGS["L2"]} == ladder.RUNGS["L2"]
  assert (syn["n_train"], syn["n_val"], syn["n_test"], syn["dim"], syn["seed"]) == (
    5000,
    500,
    500,
    32,
    0,
  )
  assert syn["setting"] == "redundancy" and cfg.store.endswith("synthetic_redundancy_l2")
  assert cfg.model.position == "learned" and cfg.optim.gate_warmup_steps == 0
  assert (cfg.optim.gate_warmup_fraction, cfg.loss.extra_start_fraction) == (0.45, 0.6)
  assert cfg.loss.lambda_red_alone == 1.0
  # The synergy expert's full-weight loss only where it was measured: `mixed` (ground_truth.md 5.14).
  assert cfg.loss.lambda_syn_residual == 0.0
  mixed = config_lib.load_config(f"{CONFIGS / 'synthetic.py'}:l2")
  assert mixed.synthetic.setting == "mixed" and mixed.loss.lambda_syn_residual == 1.0
  # Four heads for `mixed` (ground_truth.md 5.19), the pure settings' measured two elsewhere.
  assert (mixed.model.num_heads, cfg.model.num_heads, mixed.train.epochs) == (4, 2, 20)
  paper = config_lib.load_config(f"{CONFIGS / 'synthetic.py'}:l2,paper")
  # `paper` is the paper's objective whatever the rung: no extra term, the gate trained from step 0.
  assert (paper.loss.lambda_role, paper.loss.lambda_red_alone) == (0.0, 0.0)
  assert paper.loss.lambda_syn_residual == 0.0
  assert (paper.optim.gate_warmup_steps, paper.optim.gate_warmup_fraction) == (0, 0.0)
  with pytest.raises(ConfigError, match="demo and l2 exclude each other"):
    config_lib.load_config(f"{CONFIGS / 'synthetic.py'}:demo,l2")
