"""tsq: systematic hyperparameter sweeps for TokenSqueeze (arXiv 2511.13223)."""

__version__ = "0.1.0"
