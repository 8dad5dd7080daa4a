"""Training: one module per concern, read top to bottom.

  step.py     one optimisation step and what it needs: schedules, optimizer, state, `Objective`,
              `train_step`, `eval_step` (pure; jitted once per graph, shared by seeds and runs)
  workdir.py  the run directory: create or check it, the store against the config, `train.init_from`,
              the synthetic store a config asks for
  loop.py     the story of a run: every seed, epochs, validation, checkpoints, resumption, the test
              and the `TrainSummary` (`train_and_evaluate`)

Names load on first use (PEP 562).
"""

from flmoe_jax import lazy

_EXPORTS = {
  "Objective": "step",
  "eval_step": "step",
  "extra_start_step": "step",
  "gate_warmup_steps": "step",
  "init_state": "step",
  "learning_rate_schedule": "step",
  "make_optimizer": "step",
  "train_step": "step",
  "training_steps": "step",
  "check_store_against_config": "workdir",
  "ensure_store": "workdir",
  "initial_params": "workdir",
  "prepare_workdir": "workdir",
  "store_signature": "workdir",
  "TrainingDivergedError": "loop",
  "count_parameters": "loop",
  "evaluate": "loop",
  "evaluator": "loop",
  "format_summary": "loop",
  "prefetch": "loop",
  "selection_metric": "loop",
  "summarize": "loop",
  "train_and_evaluate": "loop",
}

__getattr__, __all__ = lazy.exports(__name__, _EXPORTS)
