"""The public API: every exported name resolves, and the API reference builds from the docstrings."""

import importlib
import pathlib
import sys
import types

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "docs"))
import api  # noqa: E402  (docs/api.py, the reference builder)


@pytest.mark.parametrize("name", api.MODULES)
def test_every_exported_name_resolves(name):
  module = importlib.import_module(name)
  for export in getattr(module, "__all__", ()):
    value = getattr(module, export)
    assert value is not None and not isinstance(value, types.ModuleType), f"{name}.{export}"


def test_the_api_reference_builds_with_every_stage_documented(tmp_path):
  index = api.build(tmp_path / "api")
  assert index.is_file()
  top = (tmp_path / "api" / "flmoe_jax.html").read_text()
  for name in ("run_probe", "ProbeConfig", "run_explain", "ExplainConfig", "RunDir", "build_model"):
    assert f'id="{name}"' in top, name
  probes = (tmp_path / "api" / "flmoe_jax" / "probes" / "config.html").read_text()
  # The options' docs reach the reference (`options.documented`): one flag per option.
  assert "flag --mask-budgets" in probes and "flag --no-figures" in probes
  assert "flag --stability" in probes and "flag --figures" not in probes
  assert "draws per pair when --budget is not set" in probes
