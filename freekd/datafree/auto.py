"""What ``freekd datafree --method auto`` runs for the teacher at hand: the synthesizer and
the parameters the benchmarks chose (``experiments/datafree``,
``experiments/2026-12-datafree-zoo``)."""

from __future__ import annotations

from typing import Any

from freekd.teachers import Teacher

#: ``--method auto`` (the default): the synthesizer the data-free benchmarks found best for the
#: teacher at hand (``experiments/datafree/README.md``, ``experiments/2026-12-datafree-zoo``).
AUTO_SYNTHESIZER = "auto"

#: What ``--method auto`` can choose (``default_synthesizer``): with BatchNorm, without.
AUTO_CANDIDATES = ("nayer", "zskt")


def default_synthesizer(teacher: Teacher) -> str:
    """``nayer`` for a teacher with BatchNorm (not TorchScript), ``zskt`` otherwise.

    zskt led on the BatchNorm-free MNIST LeNet-5 (median 97.82 % with its smoothness prior),
    where cmi, fast, deepinversion and nayer cannot run. For a BatchNorm teacher NAYER (Tran et
    al. 2024) replaced cmi in session 26, chosen on the zoo's two BatchNorm tuning teachers over
    the whole 4,000-step plan (validation, seed 0; experiments/2026-12-datafree-zoo): resnet8
    88.22 % against cmi's 72.24 %, batchnorm-cnn 66.64 % against 36.40 %. On the Fashion-MNIST
    ResNet-8 of the budget curve cmi stays ahead (62.24 % against 54.26 % at the end of the
    plan, experiments/2026-12-datafree-budget-curve): ``--method cmi`` by name.
    """
    with_batchnorm, without = AUTO_CANDIDATES
    # A TorchScript teacher takes no hooks, so its BatchNorm statistics cannot be read.
    return with_batchnorm if teacher.has_batchnorm and not teacher.is_torchscript else without


#: Share of every student batch ``--method auto`` replays from earlier generator batches when it
#: runs zskt on a teacher without convolutions (``auto_synthesizer_params``).
AUTO_REPLAY_FRACTION = 0.5


def auto_synthesizer_params(name: str, teacher: Teacher, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``--method auto`` gives the synthesizer it chose: ``params`` (the user's
    ``--set synthesizer.params.X``, which always win) plus, for zskt on a teacher without
    convolutions (an MLP; ``Teacher.has_convolution``; a teacher with BatchNorm gets nayer and no
    replay), ``replay_fraction`` 0.5: half of every student batch replayed from a memory of
    earlier generator batches (Binici et al. 2022, WACV, §3). Chosen on the zoo's BatchNorm-free
    tuning teachers (validation, seed 0; experiments/2026-12-datafree-zoo, session 23): replay
    lifted both MLPs (mlp-pm1 89.88 → 91.30 %, mlp-std 89.42 → 91.72 %) and lowered the two
    CNNs tried (pixel-groupnorm 93.92 → 90.04 %, smoothed-cnn 97.12 → 96.48 %).

    ``--method zskt`` given by name keeps zskt's own default (no replay). The rule follows what
    the teacher is made of rather than being one constant for every teacher.

    Tried and withdrawn (session 27): ``generator_output`` ``matched`` for a teacher with at
    most one convolution, chosen on the tuning teachers (one seed each: shallow-avgpool 94.90 →
    95.96 %, mlp-std 93.24 → 94.02 %; the two-convolution smoothed-cnn lost 0.30 points, and
    dropout-cnn 0.78 against a default run on an earlier build of that teacher). On the held-out
    wide-shallow it gave 88.37 % against the default's 94.43 % (seed 0). A likely reason: it
    relies on grey levels (1.90 points lower on validation digits binarized at 0.5), as does the
    tuning teacher added after it, shallow-maxpool (4.26), while the other BatchNorm-free
    teachers with MNIST statistics lose at most 0.46 (``diagnose-session27.json``).

    Tried and withdrawn (session 32): ``generator_momentum`` 0.95 (MAD, Do et al. 2022, NeurIPS,
    arXiv:2209.10359: half of every student batch from a moving average of the generator's
    weights) for a teacher with exactly one convolution layer. On the zoo's two tuning teachers
    of that kind it held a rule written before its runs (seeds 0–2, validation: shallow-maxpool
    median 92.28 → 92.60 %, shallow-avgpool 94.90 → 95.16 %, no seed losing more than 0.36
    points), a rule written after an exploratory rule for every teacher had failed
    (pixel-groupnorm 93.92 → 90.18 %). On the held-out wide-shallow (mnist:test, seeds 0–2) it
    gave 94.80 / 89.13 / 94.18 %, median 94.18 % against the default's 94.43 % (95.13 → 89.13 %
    at seed 1), with deeper dips during the runs (experiments/2026-12-datafree-zoo, session 32).
    """
    if name == "zskt" and not teacher.has_convolution:
        return {"replay_fraction": AUTO_REPLAY_FRACTION, **params}
    return params
