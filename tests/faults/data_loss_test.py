"""Nothing the user owns is ever deleted or moved (finding 1 of the reliability review).

Writing a store used to replace whatever was at the path (a folder of notes, a regular file, `runs/`);
training reached the same code through `config.store`, and `--overwrite` of a run removed its whole
folder. Each test fails on that code. The one-line refusals of a file or a folder of other files as a
store or a run directory are cases of the bad-input table (tests/faults/bad_input_test.py).
"""

import pathlib

import pytest
from conftest import make_random_store

from flmoe_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs/tiny.py")


def _tree(path: pathlib.Path) -> dict[str, bytes | None]:
  """Every entry under `path` (hidden ones included) with its bytes (None for folders)."""
  return {
    str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
    for p in sorted(path.rglob("*"))
  }


def _fails(capsys, *argv, names):
  try:
    code = cli.main(list(argv))
  except SystemExit as e:
    code = e.code
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and err[0].startswith("flmoe: error: "), err
  assert names in err[0], err[0]
  return err[0]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_synth_never_replaces_a_folder_of_other_files(capsys, tmp_path, monkeypatch, overwrite):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "mydata").mkdir()
  (tmp_path / "mydata" / "notes.txt").write_text("mine")
  before = _tree(tmp_path)
  _fails(capsys, "synth", "--out", "mydata", *overwrite, names="not a feature store")
  assert _tree(tmp_path) == before  # notes kept, no hidden .mydata.old-* or .tmp-* folder


def test_overwrite_replaces_a_store_and_leaves_nothing_else(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  args = ["--set", "n_train=8", "--set", "n_val=4", "--set", "n_test=4"]
  assert cli.main(["synth", "--out", "st", *args]) == 0
  _fails(
    capsys, "synth", "--out", "st", "--seed", "1", *args, names="already holds a feature store"
  )
  assert cli.main(["synth", "--out", "st", "--seed", "1", "--overwrite", *args]) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]  # no .st.old-*, no .st.tmp-*


def test_overwrite_of_a_run_removes_only_what_training_wrote(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  make_random_store(tmp_path / "st")
  base = ["train", "--config", TINY, "--config.store=st", "--config.train.epochs=1"]
  assert cli.main([*base, "--workdir", "run"]) == 0
  (tmp_path / "run" / "notes.txt").write_text("mine")
  (tmp_path / "run" / "other_run").mkdir()
  (tmp_path / "run" / "other_run" / "x.json").write_text("{}")
  capsys.readouterr()
  err = _fails(
    capsys, *base, "--config.optim.learning_rate=0.01", "--workdir", "run", names="different config"
  )
  assert "optim.learning_rate: 0.001 there, 0.01 here" in err
  assert (
    cli.main([*base, "--config.optim.learning_rate=0.01", "--workdir", "run", "--overwrite"]) == 0
  )
  assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
  assert (tmp_path / "run" / "other_run" / "x.json").read_text() == "{}"
  assert (tmp_path / "run" / "seed_0" / "result.json").is_file()


def test_failed_start_does_not_block_the_corrected_command(capsys, tmp_path, monkeypatch):
  """A run folder with a config but no finished epoch holds nothing of value: a corrected command
  takes it over instead of refusing it as a different run."""
  monkeypatch.chdir(tmp_path)
  make_random_store(tmp_path / "st")
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text('{"name": "started-and-died", "model": {}}')
  assert (
    cli.main(
      [
        "train",
        "--config",
        TINY,
        "--config.store=st",
        "--config.train.epochs=1",
        "--workdir",
        "run",
      ]
    )
    == 0
  )
  assert (tmp_path / "run" / "summary.json").is_file()
