"""Building blocks of the benchmark scripts in ``benchmarks/``.

``settings``: methods, labels, learning rates, metrics and presets. ``runner``: one ``ows train`` child
per method x seed. ``child``: the measurements added inside that child. ``summary``: means, ratios and
the markdown table. ``plots``: loss curves and memory bars. ``gpu_child``: one method of
``gpu_memory.py`` on a model built from a config.
"""
