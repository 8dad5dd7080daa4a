"""`flmoe explain` end to end on small run directories, and its one-line user errors.

The run directories hold untrained (freshly initialised) models saved as finished checkpoints, so no
training step is compiled here; training itself is covered by train_test.py.
"""

import hashlib
import json
import pathlib

import numpy as np
import pytest
from conftest import make_random_store

from flmoe_jax import checkpointing, cli, train
from flmoe_jax import config as config_lib
from flmoe_jax.data import store as store_lib
from flmoe_jax.explain import ExplainReport

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _fake_run(path, store_path, *, kind="fl_i2moe", seeds=(0,), finished=True):
  """A run directory with a `best` checkpoint per seed (random weights) and result.json."""
  overrides = [] if kind == "fl_i2moe" else ["model.kind=dense"]
  cfg = config_lib.load_config(str(ROOT / "configs/tiny.py"), overrides)
  with cfg.unlocked():
    cfg.store = str(store_path)
    cfg.synthetic = {}
  fs = store_lib.open_store(store_path)
  paths = train.prepare_workdir(cfg, path)
  for seed in seeds:
    _, state = train.init_state(cfg, fs, seed=seed)
    ck = checkpointing.Checkpointer(paths.best_ckpt(seed), max_to_keep=1)
    ck.save(1, state, {"epoch": 1, "step": 1})
    ck.close()
    if finished:
      paths.result(seed).write_text(json.dumps({"seed": seed}))
  return pathlib.Path(path)


def _digest(root: pathlib.Path) -> dict[str, str]:
  return {
    str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
    for p in sorted(root.rglob("*"))
    if p.is_file() and "explain" not in p.parts
  }


@pytest.fixture(scope="module")
def run_dirs(random_store, tmp_path_factory):
  base = tmp_path_factory.mktemp("explain_runs")
  fl = _fake_run(base / "fl", random_store, seeds=(0, 1))
  dense = _fake_run(base / "dense", random_store, kind="dense", seeds=(0, 1))
  return fl, dense


def _run(capsys, *argv):
  code = cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_explain_with_baseline_end_to_end(run_dirs, capsys):
  fl, dense = run_dirs
  before = _digest(fl)
  code, out, err = _run(
    capsys,
    "explain",
    "--workdir",
    fl,
    "--baseline",
    dense,
    "--split",
    "val",
    "--ks",
    "10,50",
    "--samples",
    12,
    "--batch-size",
    8,
    "--repeats",
    2,
    "--steps-per-call",
    8,
  )
  assert code == 0, err
  assert "mixture" in out and "baseline:dense" in out
  assert _digest(fl) == before  # checkpoints, config and results untouched
  path = fl / "explain" / "val.json"
  doc = json.loads(path.read_text())
  assert doc["format"] == "flmoe-explain" and doc["version"] == 3
  report = ExplainReport.load(path)
  assert report.to_dict() == doc  # exact round trip
  s = report.settings
  assert (s.split, s.method, s.ks, s.fill, s.target, s.samples) == (
    "val",
    "attnxgrad",
    (10.0, 50.0),
    "mean",
    "pred",
    12,
  )
  m = report.model
  assert m.kind == "fl_i2moe" and m.seeds == (0, 1) and m.num_examples == 12
  assert {c.view for c in m.faithfulness} == {"uni_0", "uni_1", "syn", "red", "mixture"}
  c = m.curve("syn", "own")
  assert len(c.comp) == 2 and len(c.comp[0].values) == 2 and c.comp[0].std is not None
  np.testing.assert_allclose(
    c.aopc["comp_gap"].values,
    np.mean([[g.values[i] for g in c.comp_gap] for i in range(2)], 1),
    rtol=1e-5,
  )
  assert len(m.specificity) == 6 * 2  # expert pairs x modalities
  assert len(m.expert_weights) == 4
  assert abs(sum(w.mean for w in m.expert_weights) - 1) < 1e-5
  b = report.baseline
  assert b.kind == "dense" and [c.view for c in b.faithfulness] == ["dense", "dense"]
  assert {p.b for p in report.comparison} == {"uni_0", "uni_1", "syn", "red", "mixture"}
  assert report.seed_pairs == ((0, 0), (1, 1))
  assert "val_masking.png" in report.figures and "val_expert_weights.png" in report.figures
  for f in report.figures:
    assert (fl / "explain" / f).read_bytes()[:4] == b"\x89PNG"
  assert not list((fl / "explain").glob(".*tmp*"))  # atomic writes leave no temporaries


@pytest.mark.parametrize(
  "args, message",
  [
    (("--ks", "0,10"), "K must be in (0, 100]"),
    (("--ks", "5,101"), "K must be in (0, 100]"),
    (("--split", "nope"), "no split 'nope'"),
    (("--seeds", "5"), "no finished checkpoint"),
  ],
)
def test_explain_user_errors(run_dirs, capsys, args, message):
  fl, _ = run_dirs
  code, _, err = _run(capsys, "explain", "--workdir", fl, "--no-figures", *args)
  assert code == 2
  assert err.startswith("flmoe: error:") and message in err
  assert len(err.strip().splitlines()) == 1


def test_explain_refuses_unfinished_runs_and_other_stores(run_dirs, random_store, tmp_path, capsys):
  fl, _ = run_dirs
  unfinished = _fake_run(tmp_path / "unfinished", random_store, finished=False)
  code, _, err = _run(capsys, "explain", "--workdir", unfinished)
  assert code == 2 and "no finished seed" in err
  code, _, err = _run(capsys, "explain", "--workdir", tmp_path / "nothing")
  assert code == 2 and "not a run directory" in err
  # Same shapes and manifest, different features: refused.
  other = make_random_store(tmp_path / "other_store", seed=1)
  dense_other = _fake_run(tmp_path / "dense_other", other, kind="dense")
  code, _, err = _run(capsys, "explain", "--workdir", fl, "--baseline", dense_other, "--no-figures")
  assert code == 2 and "different feature stores" in err
  assert len(err.strip().splitlines()) == 1
