"""Runs a command of `flmoe` (or a feature extraction) and SIGKILLs itself at a named point.

  python _kill_driver.py POINT@N flmoe ARGS...      train/synth/... through flmoe_jax.cli.main
  python _kill_driver.py POINT@N extract OUT        the toy extraction of tests/extract_test.py

POINT@N kills the process (a real `kill -9` of itself, no cleanup of any kind) at the N-th time the
point is reached. The points are wrapped around the project's functions from the outside, so the code
under test is the code users run. Used by tests/faults/kill_test.py; exits 0 when the point was never
reached (the test then fails: every listed point must be reachable).
"""

import json
import os
import pathlib
import signal
import sys

_HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # tests/: _tiny_encoders, extract_test


def _die():
  os.kill(os.getpid(), signal.SIGKILL)


class _Counter:
  def __init__(self, n):
    self.n, self.hits = n, 0

  def hit(self) -> bool:
    self.hits += 1
    return self.hits == self.n


def install(point: str, n: int) -> None:
  """Wraps the function behind `point` so that its N-th occurrence kills the process."""
  c = _Counter(n)
  name, _, arg = point.partition(":")
  if name == "batch":
    # The N-th training batch handed to the step: the previous step is still in flight (async dispatch).
    from flmoe_jax.train import loop

    real = loop.prefetch

    def prefetch(iterator, size=2):
      for item in real(iterator, size):
        if c.hit():
          _die()
        yield item

    loop.prefetch = prefetch
  elif name in ("commit_before", "commit_after"):
    # Orbax commits a checkpoint step by renaming its finished temporary folder: kill just before that
    # rename (all written, nothing committed) or just after it (committed, before `wait` returns).
    from orbax.checkpoint._src.path import async_path

    real = async_path.rename

    async def rename(src, dst):
      dst_p = pathlib.Path(str(dst))
      ours = dst_p.name.isdigit() and dst_p.parent.name == arg
      if ours and name == "commit_before" and c.hit():
        _die()
      out = await real(src, dst)
      if ours and name == "commit_after" and c.hit():
        _die()
      return out

    async_path.rename = rename
  elif name in ("metrics_torn", "val_written", "test_written"):
    from flmoe_jax import metrics

    real = metrics.MetricWriter.write

    def write(self, step, /, **scalars):
      if name == "metrics_torn" and c.hit():
        # Half a line reaches the disk, then the kill.
        line = json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
        self._file.write(line[: len(line) // 2])
        self._file.flush()
        _die()
      real(self, step, **scalars)
      kind = "val/" if name == "val_written" else "test/"
      if name != "metrics_torn" and any(k.startswith(kind) for k in scalars) and c.hit():
        _die()

    metrics.MetricWriter.write = write
  elif name in ("write_before", "write_after"):
    # The run's JSON files are written to a temporary name and renamed: kill between the two, or after.
    from flmoe_jax import atomic

    real = atomic.write_text

    def atomic_write(path, text):
      path = pathlib.Path(path)
      if path.name == arg and name == "write_before" and c.hit():
        atomic.temporary(path).write_text(text)  # the real temporary's name
        _die()
      out = real(path, text)
      if path.name == arg and name == "write_after" and c.hit():
        _die()
      return out

    atomic.write_text = atomic_write
  elif name in ("chunk_before", "chunk_after", "store_before"):
    # Feature extraction: inside a chunk's write (temporary file complete, not renamed), after a
    # chunk, or inside the final store's swap into place.
    from flmoe_jax.features import extract

    real = os.replace

    def replace(src, dst, *a, **k):
      s, d = pathlib.Path(src), pathlib.Path(dst)
      if (
        name == "chunk_before"
        and d.name.startswith("chunk_")
        and s.name.endswith(".tmp")
        and c.hit()
      ):
        _die()
      if name == "store_before" and s.name.startswith(".") and ".tmp-" in s.name and c.hit():
        _die()
      return real(src, dst, *a, **k)

    os.replace = replace  # the one `os` module: seen by `atomic` (chunks) and the store's swap
    if name == "chunk_after":
      extract._after_chunk_hook = lambda split, k: _die() if c.hit() else None
  else:
    raise SystemExit(f"unknown kill point {point!r}")


def main(argv):
  spec, what, *rest = argv
  point, _, n = spec.partition("@")
  if point != "none":
    install(point, int(n or 1))
  if what == "flmoe":
    from flmoe_jax import cli

    return cli.main(rest)
  if what == "extract":
    from _tiny_encoders import tiny_encoder
    from extract_test import OPTS, make_raw

    (out,) = rest
    out = pathlib.Path(out)
    raw = make_raw(out.parent)
    enc = dict(text_encoder=tiny_encoder("bert"), image_encoder=tiny_encoder("vit"))
    from flmoe_jax.features.extract import extract_features

    extract_features(raw, out, **enc, **OPTS)
    return 0
  raise SystemExit(f"unknown command {what!r}")


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
