"""Stage configs: one declaration per option, the CLI generated from it, checks on construction."""

import dataclasses
import math
import subprocess
import sys
import types

import pytest

from flmoe_jax import cli
from flmoe_jax.errors import ExplainError, ProbeError
from flmoe_jax.explain.config import ExplainConfig
from flmoe_jax.features.config import FeaturesConfig
from flmoe_jax.options import flag_of, from_args
from flmoe_jax.probes.config import ProbeConfig

STAGES = [("probe", ProbeConfig), ("explain", ExplainConfig), ("features", FeaturesConfig)]
BASE = {"probe": ["--workdir", "w"], "explain": ["--workdir", "w"], "features": ["--out", "o"]}


def _other_value(f: dataclasses.Field, hint: str):
  """A valid value different from the field's default."""
  if f.metadata.get("choices"):
    return next(c for c in f.metadata["choices"] if c != f.default)
  if isinstance(f.default, bool):
    return not f.default
  if "tuple[int" in hint:
    return (3, 7)
  if "tuple[float" in hint:
    return (7.5, 30.0)
  if "float" in hint:
    return 0.375
  if "int" in hint:
    return 3 if f.default in (None, 1, 2) else f.default + 5
  return {"seeds": "0,1", "tag": "x-1"}.get(f.name, "other")


def _argv(f: dataclasses.Field, value) -> list[str]:
  if isinstance(value, bool):
    return [flag_of(f) if value else flag_of(f).replace("--", "--no-", 1)]
  text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
  return [flag_of(f), text]


@pytest.mark.parametrize("command, cls", STAGES)
def test_every_cli_option_round_trips_through_its_flag(command, cls):
  """Each field's flag sets that field, and only that field, to the value given."""
  parser = cli.build_parser()
  default = cls()
  hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
  checked = 0
  for f in dataclasses.fields(cls):
    if not f.metadata["cli"]:
      continue
    value = _other_value(f, hints[f.name])
    if f.name == "sii_expert" or f.name == "rg_expert":
      value = "mixture"
    args = parser.parse_args([command, *BASE[command], *_argv(f, value)])
    cfg = from_args(cls, args)
    assert getattr(cfg, f.name) == value, f.name
    assert dataclasses.replace(cfg, **{f.name: getattr(default, f.name)}) == default, f.name
    checked += 1
  assert checked >= 13


@pytest.mark.parametrize("command, cls", STAGES)
def test_no_flag_means_the_config_default(command, cls):
  args = cli.build_parser().parse_args([command, *BASE[command]])
  assert from_args(cls, args) == cls()


@pytest.mark.parametrize(
  "cls, changes, error, message",
  [
    (ProbeConfig, {"draws": 0}, ProbeError, "--draws must be an int >= 1, got 0"),
    (ProbeConfig, {"draws": 2.0}, ProbeError, "--draws must be an int"),
    (ProbeConfig, {"draws": True}, ProbeError, "--draws must be an int"),
    (ProbeConfig, {"mask_repeats": 0}, ProbeError, "--repeats must be an int >= 1"),
    (ProbeConfig, {"pairs": "some"}, ProbeError, "--pairs 'some' not in ('topk', 'random', 'all')"),
    (ProbeConfig, {"min_effect": math.nan}, ProbeError, "--min-effect must be a float >= 0.0"),
    (ProbeConfig, {"min_effect": math.inf}, ProbeError, "finite number"),
    (ProbeConfig, {"standout_min_rate": 1.0}, ProbeError, "must be in [0, 1)"),
    (ProbeConfig, {"mask_budgets": ()}, ProbeError, "mask budgets (--mask-budgets)"),
    (ProbeConfig, {"mask_budgets": "12"}, ProbeError, "--mask-budgets must be a sequence"),
    (ProbeConfig, {"tag": "a/b"}, ProbeError, "must be alphanumeric"),
    (ProbeConfig, {"split": None}, ProbeError, "--split must be given"),
    (ExplainConfig, {"ks": (0, 10)}, ExplainError, "K must be in (0, 100]"),
    (ExplainConfig, {"ks": (5, 5)}, ExplainError, "repeated K values"),
    (ExplainConfig, {"seeds": "0,x"}, ExplainError, "--seeds must be 'all' or comma-separated"),
    (ExplainConfig, {"steps_per_call": -1}, ExplainError, "--steps-per-call must be an int >= 0"),
  ],
)
def test_bad_options_raise_the_stage_error_naming_the_flag(cls, changes, error, message):
  with pytest.raises(error) as e:
    cls(**changes)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_values_are_normalised_and_replace_checks_again():
  cfg = ProbeConfig(mask_budgets=[1, 2], standout_min_rate=0)
  assert cfg.mask_budgets == (1, 2) and isinstance(cfg.standout_min_rate, float)
  assert ExplainConfig(ks=[10, 20]).ks == (10.0, 20.0)
  with pytest.raises(ProbeError, match="--k must be an int >= 1"):
    cfg.replace(k=0)
  assert cfg.role_fill == {"sii": "mean", "rg": "mean"}
  assert ProbeConfig(fill="zero", sii_fill="marginal").role_fill == {
    "sii": "marginal",
    "rg": "zero",
  }
  assert ProbeConfig(split="val", tag="a").stem == "val_a" and ProbeConfig().stem == "test"
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.k = 3


@pytest.mark.parametrize(
  "argv, message",
  [
    (["probe", "--workdir", "w", "--mask-budgets", "1,x"], "expected comma-separated int values"),
    (["probe", "--workdir", "w", "--pairs", "some"], "invalid choice: 'some'"),
    (["probe", "--workdir", "w", "--draws", "0"], "--draws must be an int >= 1, got 0"),
    (["explain", "--workdir", "w", "--ks", "5,nope"], "expected comma-separated float values"),
  ],
)
def test_cli_option_errors_are_one_line_exit_2(capsys, argv, message):
  try:
    code = cli.main(argv)  # our errors: printed, status returned
  except SystemExit as e:  # argparse's: printed, then exit
    code = e.code
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("flmoe: error:") and message in err, err
  assert len(err.strip().splitlines()) == 1


def test_stage_configs_import_without_jax():
  """The CLI builds its parser from the configs: neither that nor importing them loads jax or flax."""
  code = (
    "import sys\n"
    "import flmoe_jax.explain.config, flmoe_jax.probes.config, flmoe_jax.features.config\n"
    "from flmoe_jax import cli\n"
    "cli.build_parser()\n"
    "print(sorted(m for m in ('jax', 'flax') if m in sys.modules))\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("package", ["flmoe_jax.explain", "flmoe_jax.probes", "flmoe_jax.features"])
def test_every_public_name_of_the_lazy_packages_resolves(package):
  """Names load on first use; none is shadowed by a submodule of the same name."""
  import importlib

  mod = importlib.import_module(package)
  for name in mod.__all__:
    value = getattr(mod, name)
    assert not isinstance(value, types.ModuleType), name
  with pytest.raises(AttributeError):
    mod.not_a_name  # noqa: B018
