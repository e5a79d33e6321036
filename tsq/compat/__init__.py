"""Adapters around third-party private APIs: each one checks the installed version it was written for.

`tsq.compat.trl`: TRL's `DPOTrainer` hooks (dataset preparation, the reference pass, the model hash).
"""
