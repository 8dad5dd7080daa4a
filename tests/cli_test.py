"""The `flmoe` command line: user errors are one line and exit status 2."""

import os
import pathlib
import subprocess
import sys

import pytest

from flmoe_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
  code = cli.main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def test_unknown_config_key(capsys, tmp_path):
  code, _, err = _run(
    capsys,
    "train",
    "--config",
    str(ROOT / "configs/tiny.py"),
    "--workdir",
    str(tmp_path),
    "--config.model.bogus=1",
  )
  assert code == 2
  assert err.startswith("flmoe: error: unknown config key 'model.bogus'; valid keys:")
  assert len(err.strip().splitlines()) == 1


def test_missing_store_is_one_line(capsys, tmp_path):
  code, _, err = _run(capsys, "info", str(tmp_path / "nope"))
  assert code == 2 and "no feature store" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
  "argv, names",
  [
    (["train", "--workdir", "x"], "--config"),
    (["probe", "--workdir", "x", "--attention", "foo"], "invalid choice: 'foo'"),
    (["explain", "--workdir", "x", "--bogus"], "--bogus (see 'flmoe explain --help')"),
  ],
)
def test_bad_flag_is_one_line_exit_2(capsys, argv, names):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("flmoe: error: ") and names in err, err
  assert len(err.strip().splitlines()) == 1, err


def test_baselines_of_a_missing_run_is_one_line(capsys, tmp_path):
  code, _, err = _run(capsys, "baselines", "--workdir", str(tmp_path / "nope"))
  assert code == 2 and "is not a run directory" in err and len(err.strip().splitlines()) == 1


def test_overrides_only_where_accepted(capsys, tmp_path):
  code, _, err = _run(capsys, "info", str(tmp_path), "--config.x=1")
  assert code == 2 and "takes no --config" in err


def test_python_dash_m_exit_code(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  r = subprocess.run(
    [sys.executable, "-m", "flmoe_jax", "info", str(tmp_path / "missing")],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=120,
  )
  assert r.returncode == 2
  assert "Traceback" not in r.stderr
  assert r.stderr.strip().startswith("flmoe: error:")
