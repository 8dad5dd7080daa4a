"""Builds the API reference of `flmoe_jax` from its docstrings (pdoc): `python docs/api.py [OUT]`.

The public modules are listed here; every name a package exports lazily is resolved first, so the
reference shows it where users import it from. Writes OUT/index.html (default docs/api/).
"""

from __future__ import annotations

import importlib
import pathlib
import sys

# The public modules, in pipeline order.
MODULES = (
  "flmoe_jax",
  "flmoe_jax.errors",
  "flmoe_jax.config",
  "flmoe_jax.data.store",
  "flmoe_jax.data.synthetic",
  "flmoe_jax.features",
  "flmoe_jax.features.config",
  "flmoe_jax.models",
  "flmoe_jax.train",
  "flmoe_jax.sharding",
  "flmoe_jax.distributed",
  "flmoe_jax.rundir",
  "flmoe_jax.runs",
  "flmoe_jax.options",
  "flmoe_jax.choices",
  "flmoe_jax.explain",
  "flmoe_jax.explain.config",
  "flmoe_jax.probes",
  "flmoe_jax.probes.config",
  "flmoe_jax.atomic",
  "flmoe_jax.convert",
  "flmoe_jax.convert_run",
)


def build(out: str | pathlib.Path) -> pathlib.Path:
  """Writes the HTML reference to `out`; returns its index page."""
  import pdoc

  for name in MODULES:
    module = importlib.import_module(name)
    for export in getattr(module, "__all__", ()):
      getattr(module, export)  # resolve lazily exported names, so pdoc finds them
  out = pathlib.Path(out)
  pdoc.pdoc(*MODULES, output_directory=out)
  return out / "index.html"


if __name__ == "__main__":
  print(build(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent / "api"))
