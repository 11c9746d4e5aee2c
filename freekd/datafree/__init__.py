"""Data-free distillation (``freekd datafree``): config, pipeline and CLI.

The synthesizers are in ``freekd.generators`` (one file each), the batch source in
``freekd.train.sources.SyntheticSource`` and the collapse monitor in ``freekd.datafree.collapse``.
"""
