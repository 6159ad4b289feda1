"""k-shot prompts in lm-evaluation-harness's layout, with examples drawn by a fixed seed.

A prompt is ``description + (shot + "\\n\\n") * k + query``, where a shot is an example's query,
a space and its answer. The shots of item ``i`` are a pure function of (seed, task, i), so
``--limit`` and the batch size do not change them.
"""

from __future__ import annotations

import logging
import random
from typing import Sequence

logger = logging.getLogger(__name__)

FEWSHOT_DELIMITER = "\n\n"
TARGET_DELIMITER = " "
_WARNED: set[str] = set()


def pick_shots(candidates: Sequence[int], k: int, exclude: int | None, key: str) -> list[int]:
    """``k`` of ``candidates`` (never ``exclude``) drawn by ``random.Random(key)``; fewer when not enough exist."""
    pool = [c for c in candidates if c != exclude]
    if k <= 0 or not pool:
        return []
    if k > len(pool):
        task = key.rsplit(":", 1)[0]
        if task not in _WARNED:  # once per task, not once per item
            _WARNED.add(task)
            logger.warning("only %d few-shot examples available for some items of %s (asked for %d)",
                           len(pool), task.split(":", 1)[-1], k)
        k = len(pool)
    return random.Random(key).sample(pool, k)


def with_shots(shots: Sequence[str], query: str, description: str = "") -> str:
    """The full prompt: description, each shot followed by a blank line, then the query."""
    return description + "".join(shot + FEWSHOT_DELIMITER for shot in shots) + query
