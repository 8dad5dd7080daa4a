"""Checkpoints: the one module that imports orbax.

A `Checkpointer` keeps the last `max_to_keep` steps of a pure-dict train state plus a small JSON of metadata
(epoch, best metric, ...). Restores go into an abstract target that carries the *current* shardings, so a
run saved on 8 devices resumes on 1 (or the reverse). Orbax writes to a temporary folder and renames it when
complete, so a kill mid-save never leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """A thin wrapper over `orbax.checkpoint.CheckpointManager`.

  Args:
    directory: where the step folders live.
    max_to_keep: how many steps to keep (older ones are deleted after a successful save).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._mngr = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )

  def latest_step(self) -> int | None:
    """The newest complete step, or None."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

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


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
