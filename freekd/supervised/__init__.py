"""Supervised teacher training (``freekd teacher train``); DP-SGD via ``freekd.privacy``."""
