"""Several processes, one run: JAX's distributed runtime, started from the config or the environment.

On a multi-host TPU slice, several GPU hosts or several CPU hosts, every process runs the same
command (`python train.py --config ... --workdir ...`). `initialize` connects them through
`jax.distributed`; from then on `jax.devices()` lists every process's devices, the run's mesh spans
them all and one jitted step runs on all of them. What each process still does itself:

- it reads only its own rows of each global batch (`sharding.local_rows`), which
  `jax.make_array_from_process_local_data` assembles into the global batch;
- it writes files only on process 0 (`is_primary`; orbax coordinates the checkpoints itself);
- it agrees with the others on the config and the run directory (`check_same_config`), and hears
  of an error that stopped process 0 (`primary_first`), so that no process waits forever.

With one process every function here is a no-op or a plain call.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np

from flmoe_jax.errors import ConfigError, FlmoeError

T = TypeVar("T")

# What launchers set when they start several processes (JAX's own cluster detection reads them).
_LAUNCHER_COUNTS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_MESSAGE_BYTES = 1024  # an error message shared with the other processes is cut to this length


def launched_processes(environ=None) -> int:
  """How many processes the environment's launcher started (1 when none says).

  Reads SLURM (`SLURM_NTASKS`), Open MPI (`OMPI_COMM_WORLD_SIZE`) and a multi-host Cloud TPU slice
  (`TPU_WORKER_HOSTNAMES`, one name per host).
  """
  env = os.environ if environ is None else environ
  counts = [1]
  for name in _LAUNCHER_COUNTS:
    if env.get(name, "").strip().isdigit():
      counts.append(int(env[name]))
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  counts.append(len(hosts))
  return max(counts)


def wanted(dist, environ=None) -> bool:
  """Whether the config's `distributed` section asks for the distributed runtime here."""
  env = os.environ if environ is None else environ
  if dist.initialize == "off":
    return False
  if dist.initialize == "on":
    return True
  named = bool(dist.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS"))
  return named or dist.num_processes > 1 or launched_processes(env) > 1


def initialize(config) -> None:
  """Starts JAX's distributed runtime when `config.distributed` asks for it (once per process).

  Must run before the program's first JAX computation (JAX's rule). Values the config leaves unset
  (coordinator '', processes 0, process id -1) come from JAX's cluster detection (Cloud TPU, SLURM,
  Open MPI, Kubernetes) or `JAX_COORDINATOR_ADDRESS`.

  Raises:
    ConfigError: the runtime cannot start (a value missing, a JAX computation ran before, the
      coordinator unreachable within `distributed.initialization_timeout`), in one line.
  """
  dist = config.distributed
  if jax.distributed.is_initialized() or not wanted(dist):
    return
  # Read by the CPU backend when it is created; the GPU and TPU backends ignore it.
  before = jax.config.jax_cpu_collectives_implementation
  jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
  try:
    jax.distributed.initialize(
      coordinator_address=dist.coordinator_address or None,
      num_processes=dist.num_processes or None,
      process_id=None if dist.process_id < 0 else dist.process_id,
      initialization_timeout=dist.initialization_timeout,
    )
  except (ValueError, TypeError, RuntimeError) as e:
    jax.config.update("jax_cpu_collectives_implementation", before)
    why = " ".join(str(e).split())[:300]
    raise ConfigError(
      f"the distributed runtime did not start ({why}); set distributed.coordinator_address, "
      "distributed.num_processes and distributed.process_id, or run under a launcher JAX detects "
      "(Cloud TPU, SLURM, Open MPI), and start it before any JAX computation"
    ) from None


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reached the barrier `name` (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def check_same_config(config, workdir) -> None:
  """Raises ConfigError on every process unless all run the same config and run directory.

  The `distributed` section is left out (each process has its own `process_id`).
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils

  from flmoe_jax import config as config_lib

  d = json.loads(config_lib.config_to_json(config))
  d.pop("distributed", None)
  text = json.dumps(d, sort_keys=True) + "\n" + str(pathlib.Path(workdir).absolute())
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:16], np.uint32)
  every = np.asarray(multihost_utils.process_allgather(digest))  # [processes, 4]
  differ = [i for i in range(len(every)) if not np.array_equal(every[i], every[0])]
  if differ:
    raise ConfigError(
      f"processes disagree on the config or --workdir: process(es) {differ} differ from process 0; "
      "start every process with the same config file, overrides and --workdir"
    )


def primary_first(fn: Callable[[], T]) -> T:
  """Runs `fn` on process 0, then on the others (which find its writes done).

  For set-up steps that may write (the run directory, a synthetic store): process 0 does the work,
  the others then run the same checks read-only. A `FlmoeError` that stops process 0 is raised on
  every process with its message, so none waits at the next collective.
  """
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils

  out, message = None, b""
  if is_primary():
    try:
      out = fn()
    except FlmoeError as e:
      message = str(e).encode()[:_MESSAGE_BYTES]
      failed = e
  buf = np.zeros(_MESSAGE_BYTES, np.uint8)
  buf[: len(message)] = np.frombuffer(message, np.uint8)
  shared = bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))).rstrip(b"\0")
  if shared:
    if is_primary():
      raise failed
    raise FlmoeError(f"process 0 stopped: {shared.decode(errors='replace')}")
  return out if is_primary() else fn()
