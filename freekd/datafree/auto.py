"""What ``freekd datafree --method auto`` runs for the teacher at hand: the synthesizer and
the parameters the benchmarks chose (``experiments/datafree``,
``experiments/2026-12-datafree-zoo``)."""

from __future__ import annotations

from typing import Any

from freekd.teachers import Teacher

#: ``--method auto`` (the default): the synthesizer the data-free benchmark found best for the
#: teacher at hand (``experiments/datafree/README.md``).
AUTO_SYNTHESIZER = "auto"


def default_synthesizer(teacher: Teacher) -> str:
    """``cmi`` for a teacher with BatchNorm, ``zskt`` for one without.

    On the 15-CPU-minute benchmark, cmi (which inverts BatchNorm statistics) led on the
    Fashion-MNIST ResNet-8 teacher (58.06 % against fast 45.48 % and zskt 37.82 %, seed 0), and
    zskt led on the BatchNorm-free MNIST LeNet-5 (median 97.82 % with its smoothness prior),
    where cmi, fast and deepinversion cannot run.
    """
    return "cmi" if teacher.has_batchnorm else "zskt"


#: Share of every student batch ``--method auto`` replays from earlier generator batches when it
#: runs zskt on a teacher without convolutions (``auto_synthesizer_params``).
AUTO_REPLAY_FRACTION = 0.5


def auto_synthesizer_params(name: str, teacher: Teacher, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``--method auto`` gives the synthesizer it chose: ``params`` (the user's
    ``--set synthesizer.params.X``, which always win) plus, for zskt on a teacher without
    convolutions (an MLP; ``Teacher.has_convolution``; a teacher with BatchNorm gets cmi and no
    replay), ``replay_fraction`` 0.5: half of every student batch replayed from a memory of
    earlier generator batches (Binici et al. 2022, WACV, §3). ``--method zskt`` given by name
    keeps zskt's own default (no replay).

    Chosen on the zoo's BatchNorm-free tuning teachers (validation, seed 0;
    experiments/2026-12-datafree-zoo, session 23): replay lifted both MLPs (mlp-pm1 89.88 →
    91.30 %, mlp-std 89.42 → 91.72 %) and lowered the two CNNs tried (pixel-groupnorm 93.92 →
    90.04 %, smoothed-cnn 97.12 → 96.48 %), so it follows what the teacher is made of rather
    than being one constant for every teacher.
    """
    if name == "zskt" and not teacher.has_convolution and "replay_fraction" not in params:
        return {**params, "replay_fraction": AUTO_REPLAY_FRACTION}
    return params
