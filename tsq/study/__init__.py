"""Study glue: the search-space schema, storage URLs, and the optimize loop (runner)."""

import warnings

from optuna.exceptions import ExperimentalWarning

# Heartbeats, stale-trial retry and retry chains are what keep a killed worker's trial from staying RUNNING
# (worker, slots, confirm); Optuna still flags that machinery "experimental" on every call.
warnings.filterwarnings("ignore", category=ExperimentalWarning, module=r"tsq\.study")
