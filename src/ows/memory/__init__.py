"""Memory: measured bytes (``measure``, torch) and the estimate from a config alone (``estimate``, ``shape``: no torch).

Nothing is imported here, so ``ows.memory.estimate`` stays importable without torch.
"""
