"""Data: rows and formats (``records``), tokenization and padding (``encode``), chat turns (``chat``),
calibration text (``calibration``) and reasoning-gym tasks (``tasks``)."""
