"""Monte Carlo interaction probes: Shapley interaction index, redundancy gap, pair-level masking."""
