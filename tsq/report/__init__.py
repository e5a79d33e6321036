"""Reports exported from a study (the Pareto front)."""
