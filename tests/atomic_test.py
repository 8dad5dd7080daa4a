"""Atomic files: the old file or the whole new one, and no temporary left behind."""

import json
import math

import numpy as np
import pytest

from flmoe_jax import atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "sub" / "a.json"
  atomic.write_json(path, {"x": np.float32(1.5), "y": np.arange(3)})
  assert json.loads(path.read_text()) == {"x": 1.5, "y": [0, 1, 2]}
  with pytest.raises(ValueError):  # NaN is refused before anything is written
    atomic.write_json(path, {"x": math.nan})
  with pytest.raises(RuntimeError), atomic.replacing(path) as tmp:
    tmp.write_text("half")
    raise RuntimeError("killed mid-write")
  assert json.loads(path.read_text())["x"] == 1.5
  assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_killed_writes_temporary_is_consumed_by_the_next_write(tmp_path):
  path = tmp_path / "result.json"
  atomic.temporary(path).write_text("{half")  # what a kill between write and rename leaves
  atomic.write_text(path, "{}")
  assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
  # A folder too (encoders are saved as folders).
  folder = tmp_path / "enc"
  atomic.temporary(folder).mkdir()
  (atomic.temporary(folder) / "stale").write_text("x")
  with atomic.replacing(folder) as tmp:
    tmp.mkdir()
    (tmp / "weights").write_text("w")
  assert sorted(p.name for p in folder.iterdir()) == ["weights"]
  assert not atomic.temporary(folder).exists()
