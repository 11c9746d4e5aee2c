"""PATE (Papernot et al. 2017, 2018): teacher shards, noisy accounted labels, a student.

``teachers``, ``label`` and ``student`` are the three stages; ``pipeline`` chains them.
"""
