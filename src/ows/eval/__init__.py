"""Evaluation: held-out answer loss and exact match, reasoning-gym tasks with their own checkers."""
