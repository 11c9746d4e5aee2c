"""``freekd online``: online KD, networks that teach each other while they train (DML, ONE)."""
