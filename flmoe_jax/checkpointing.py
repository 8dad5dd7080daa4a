"""Checkpoints: the one module that imports orbax.

A `Checkpointer` keeps the last `max_to_keep` steps of a pure-dict train state plus a small JSON of metadata
(epoch, best metric, ...). Restores go into an abstract target that carries the *current* shardings, so a
run saved on 8 devices resumes on 1 (or the reverse), and a run saved by 2 processes on 1. With several
processes every process calls every method: orbax writes each process's shards and commits on process 0.
Orbax writes each step to a temporary folder and renames it when complete, so a kill mid-save never leaves
a step that looks finished; the temporary folders such a kill leaves behind are removed when the next
`Checkpointer` opens the directory.

A step that looks finished can still be damaged later (a truncated file, a deleted `_METADATA`):
`restore_newest` then moves it aside, says so in one line, and falls back to the newest step that restores.
A step whose arrays have other shapes than the model (the config or the store changed since training) is
not damage: it raises `RunDirError` and nothing is moved.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from flmoe_jax import distributed
from flmoe_jax.errors import RunDirError

DAMAGED_DIR = "damaged"  # sibling folder (of `latest/`, `best/`) that damaged steps are moved into


class Checkpointer:
  """A thin wrapper over `orbax.checkpoint.CheckpointManager`.

  Args:
    directory: where the step folders live.
    max_to_keep: how many steps to keep (older ones are deleted after a successful save).
    read_only: only read (explanations, probes): nothing in `directory` is created, cleaned or
      deleted, and `save` raises.
  """

  def __init__(
    self, directory: str | os.PathLike, *, max_to_keep: int = 2, read_only: bool = False
  ):
    self.directory = pathlib.Path(directory).absolute()
    self._mngr = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=not read_only,
        read_only=read_only,
        # A kill mid-save leaves `<step>.orbax-checkpoint-tmp*`: never a finished step, removed here.
        cleanup_tmp_directories=not read_only,
      ),
      item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
    )
    if not read_only:
      # A kill after a commit but before orbax removed the step it replaces leaves a step too many.
      for step in self.all_steps()[:-max_to_keep]:
        self._mngr.delete(step)

  def latest_step(self) -> int | None:
    """The newest complete step, or None."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    """The complete steps, oldest first."""
    return sorted(self._mngr.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves a pytree of arrays and a JSON-able dict at `step` (asynchronously; see `wait`)."""
    self._mngr.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=True,
    )

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """Restores `step` into the structure, dtypes and shardings of `target`.

    Args:
      step: a saved step.
      target: a pytree of arrays or `jax.ShapeDtypeStruct`s (with `.sharding`) like the saved state.

    Returns:
      (state, meta).
    """
    abstract = jax.tree.map(_abstract, target)
    out = self._mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    return out["state"], dict(out["meta"])

  def restore_newest(
    self, target: Any, *, below: int | None = None
  ) -> tuple[int, Any, dict] | None:
    """Restores the newest step that reads back; damaged newer steps are moved aside.

    Args:
      target: as in `restore`.
      below: only steps < `below` (None: all).

    Returns:
      (step, state, meta), or None when no step restores (or there is none).

    Raises:
      RunDirError: a step holds arrays of other shapes than `target` (the model changed).
    """
    for step in reversed(self.all_steps()):
      if below is not None and step >= below:
        continue
      self._check_shapes(step, target)
      try:
        state, meta = self.restore(step, target)
      except Exception as e:  # noqa: BLE001 - any failure to read a finished step is damage
        self._move_aside(step, e)
        continue
      return step, state, meta
    return None

  def _check_shapes(self, step: int, target: Any) -> None:
    """Raises RunDirError when the saved arrays' shapes differ from the target's (not damage)."""
    try:
      saved = self._mngr.item_metadata(step)["state"]
      saved_shapes = {
        jax.tree_util.keystr(p): tuple(m.shape)
        for p, m in jax.tree_util.tree_leaves_with_path(saved)
      }
    except Exception:  # noqa: BLE001 - unreadable metadata is damage; `restore` will say so
      return
    for path, leaf in jax.tree_util.tree_leaves_with_path(target):
      key = jax.tree_util.keystr(path)
      if key in saved_shapes and saved_shapes[key] != tuple(leaf.shape):
        raise RunDirError(
          f"{self.directory}/{step} holds {key} of shape {saved_shapes[key]}, but the model built "
          f"from this config and store has {tuple(leaf.shape)}: the store or config changed since "
          "training; point config.store at the store it was trained on or use a new --workdir"
        )

  def _move_aside(self, step: int, error: BaseException) -> None:
    src = self.directory / str(step)
    dst = self.directory.parent / DAMAGED_DIR / f"{self.directory.name}-{step}-{int(time.time())}"
    if distributed.is_primary():  # every process found the same damage (one shared folder)
      dst.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(src, dst)
    distributed.barrier(f"flmoe-damaged-{self.directory}-{step}")
    self._mngr.reload()
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
    print(
      f"checkpoint {src} is damaged ({reason}); moved to {dst}, trying an older step",
      file=sys.stderr,
      flush=True,
    )

  def delete(self, step: int) -> None:
    """Deletes a saved step."""
    self._mngr.delete(step)

  def restore_meta(self, step: int) -> dict[str, Any]:
    """Only the metadata of `step`."""
    out = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def read_latest(path, target: Any) -> tuple[Any, dict[str, Any]] | None:
  """Restores the latest step of a finished checkpoint folder, read-only (nothing is written).

  Args:
    path: a checkpoint folder (e.g. `RunDir.best_ckpt(seed)`).
    target: the state pytree (arrays or `jax.ShapeDtypeStruct`s) to restore into.

  Returns:
    (state, meta), or None when the folder holds no finished step.
  """
  ck = Checkpointer(path, read_only=True)
  try:
    step = ck.latest_step()
    return None if step is None else ck.restore(step, target)
  finally:
    ck.close()


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
