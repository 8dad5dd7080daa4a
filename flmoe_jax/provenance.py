"""What produced a result: library versions, the project's git commit, the backend.

Written into run directories (`run.json`) so that a number can be traced to the code that made it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import pathlib
import platform
import subprocess
from typing import Any

PACKAGES = (
  "flmoe_jax",
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "transformers",
  "numpy",
)


def versions() -> dict[str, str | None]:
  """{package: installed version or None} for the packages results depend on."""
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def git_commit() -> dict[str, Any]:
  """The commit of the flmoe_jax source tree, when it is a git checkout.

  Returns:
    {"commit": hex or None, "dirty": bool or None}: None when the package is not run from a git
    checkout (an installed wheel) or git is missing.
  """
  src = pathlib.Path(__file__).resolve().parent.parent
  if not (src / ".git").exists():
    return {"commit": None, "dirty": None}
  try:
    commit = subprocess.run(
      ["git", "-C", str(src), "rev-parse", "HEAD"],
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    ).stdout.strip()
    status = subprocess.run(
      ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}
  return {"commit": commit or None, "dirty": bool(status.strip())}


def session() -> dict[str, Any]:
  """One start (or resume) of a stage: when, with which code and on which backend."""
  import jax  # the backend is only known once jax is imported

  return {
    "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "versions": versions(),
    "git": git_commit(),
    "backend": jax.default_backend(),
    "device_kind": jax.devices()[0].device_kind,
    "num_devices": jax.device_count(),
    "num_processes": jax.process_count(),
  }
