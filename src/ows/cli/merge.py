"""``ows merge BASE DELTA OUT``: the fine-tuned model again from its base and an ``ows export delta`` folder."""

from .export import merge as run

__all__ = ["run"]
