"""Data-free distillation (``freekd datafree``): the whole feature in one folder.

``synthesizers`` holds one file per synthesizer (and the ``SYNTHESIZERS`` registry), ``nets`` the
generator networks, ``batches`` the memory bank and augmentations they share, ``bn_hooks`` the
BatchNorm-statistics hooks, ``source`` the ``SyntheticSource`` that feeds the one Trainer loop,
``collapse`` the collapse monitor, and ``config``, ``pipeline`` and ``cli`` the command.

Exports are lazy (``freekd.lazy``): the CLI imports ``freekd.datafree.config`` without torch.
"""

from freekd.lazy import lazy_exports

_EXPORTS = {
    "SYNTHESIZERS": "synthesizers",
    "Synthesizer": "synthesizers",
    "SynthesizerBase": "synthesizers",
    "Generator": "nets",
    "MemoryBank": "batches",
    "SyntheticSource": "source",
    "CollapseMonitor": "collapse",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
