"""`python -m flmoe_jax ...` is the `flmoe` command."""

from flmoe_jax.cli import main

if __name__ == "__main__":
  raise SystemExit(main())
