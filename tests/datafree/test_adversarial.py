"""The adversarial synthesizers (DFAD, ZSKT) and DFAD's student side, ``logit-l1``."""

from __future__ import annotations

import copy
import inspect
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from freekd.cli import app
from freekd.config import TeacherSourceConfig
from freekd.data import Batch
from freekd.datafree.collapse import label_balance
from freekd.datafree.nets import StrokeGenerator, teacher_pixel_statistics
from freekd.datafree.source import SyntheticSource
from freekd.datafree.synthesizers import SYNTHESIZERS
from freekd.datafree.synthesizers.adversarial import AdversarialSynthesizer
from freekd.losses.inversion import logit_discrepancy
from freekd.methods import METHODS, LogitL1
from freekd.teachers import Teacher, load_teacher
from freekd.train.trainer import TrainState
from tests.datafree.test_contract import SHAPE, make_student

ADVERSARIAL = ["dfad", "zskt"]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def make_adversarial(name: str, seed: int = 0, **params: Any) -> AdversarialSynthesizer:
    synthesizer = SYNTHESIZERS.get(name)(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **{"batch_size": 32, **params},
    )
    assert isinstance(synthesizer, AdversarialSynthesizer)
    return synthesizer


def discrepancy_on(
    synthesizer: AdversarialSynthesizer, latent: Tensor, teacher: Teacher, student: nn.Module
) -> float:
    with torch.no_grad():
        images = synthesizer.generator.train()(latent)
        return float(synthesizer.discrepancy(student.eval()(images), teacher(images)))


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_one_synthesize_call_moves_the_generator_toward_disagreement(
    name: str, teacher: Teacher
) -> None:
    synthesizer = make_adversarial(name)
    student = make_student()
    # The latent batch the generator step will draw: the same codes from a copy of its rng.
    rng = torch.Generator().set_state(synthesizer.rng.get_state())
    latent = torch.randn((synthesizer.batch_size, synthesizer.latent_dim), generator=rng)
    # synthesize() maps the generator's output through the teacher's normalization first.
    synthesizer.generator.set_pixel_statistics(*teacher_pixel_statistics(teacher))
    before = discrepancy_on(synthesizer, latent, teacher, student)
    statistics = synthesizer.synthesize(teacher, student)
    after = discrepancy_on(synthesizer, latent, teacher, student)
    assert after > before
    assert statistics["adversarial"] == pytest.approx(-before, rel=1e-4)


@pytest.mark.parametrize("name", ADVERSARIAL)
@pytest.mark.parametrize("with_gradients", [True, False])
def test_synthesize_leaves_the_student_gradients_and_parameters_alone(
    name: str, with_gradients: bool, teacher: Teacher
) -> None:
    student = make_student()
    if with_gradients:  # as if a student step had just back-propagated
        student(torch.rand((4, *SHAPE))).sum().backward()
    gradients = [None if p.grad is None else p.grad.clone() for p in student.parameters()]
    state = copy.deepcopy(student.state_dict())
    make_adversarial(name).synthesize(teacher, student)
    for parameter, gradient in zip(student.parameters(), gradients, strict=True):
        if gradient is None:
            assert parameter.grad is None
        else:
            assert parameter.grad is not None
            assert torch.equal(parameter.grad, gradient)
    for key, value in student.state_dict().items():  # no BatchNorm statistic moved either
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_counters_and_recommended_student_side(name: str, teacher: Teacher) -> None:
    cls = SYNTHESIZERS.get(name)
    synthesizer = make_adversarial(name, replay_fraction=0.0)
    synthesizer.synthesize(teacher, make_student())
    synthesizer.sample(5)
    assert synthesizer.teacher_queries == 32
    assert synthesizer.images_synthesized == 32 + 5
    # With replay (what --method auto gives zskt for a teacher without convolutions) every
    # round also stores one fresh batch in the memory, and a sample takes round(5 · 0.5) = 2 of
    # its 5 images from there.
    replaying = make_adversarial(name, replay_fraction=0.5)
    replaying.synthesize(teacher, make_student())
    replaying.sample(5)
    assert replaying.teacher_queries == 32
    assert replaying.images_synthesized == 32 + 32 + 3
    assert not cls.needs_batchnorm
    # The pipeline may use these as defaults: they name a method and bind to its constructor.
    method = METHODS.get(cls.recommended_method)
    inspect.signature(method).bind(None, None, **cls.recommended_method_params)
    assert cls.recommended_synthesize_every == {"dfad": 5, "zskt": 10}[name]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_the_collapse_probe_shows_the_current_generator_never_the_replay_memory(
    name: str, teacher: Teacher
) -> None:
    replaying = make_adversarial(name, replay_fraction=0.5)
    replaying.synthesize(teacher, make_student())
    stored = replaying.memory.sample(1, torch.Generator().manual_seed(0))
    replaying.memory.clear()
    for _ in range(3):  # a memory of one image repeated: any draw from it is that image
        replaying.memory.add(stored.expand(8, *SHAPE).clone())

    def from_memory(images: Tensor) -> int:
        return int((images - stored).flatten(1).abs().amax(dim=1).eq(0).sum())

    assert from_memory(replaying.sample(16)) == 8  # the student's batch: half replayed
    assert from_memory(replaying.probe(16)) == 0  # the probe: the generator of now only
    # Without replay the probe is the student's batch, from the same random draws.
    plain = make_adversarial(name, replay_fraction=0.0)
    plain.synthesize(teacher, make_student())
    twin = copy.deepcopy(plain)
    assert torch.equal(plain.probe(16), twin.sample(16))


class FixedLogits(nn.Module):
    """A "student" whose logits are its only parameter, whatever the images."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, images: Tensor) -> Tensor:
        return self.logits


def fixed_teacher(logits: Tensor) -> Teacher:
    return Teacher(
        FixedLogits(logits), num_classes=logits.shape[1], input_shape=SHAPE, description="test"
    )


def test_logit_l1_is_zero_on_equal_logits() -> None:
    logits = torch.randn((6, 10), generator=torch.Generator().manual_seed(0))
    method = LogitL1(FixedLogits(logits), fixed_teacher(logits))
    output = method.training_step(Batch(torch.rand((6, *SHAPE)), None))
    assert output.losses.keys() == {"l1"}
    assert float(output.losses["l1"].detach()) == 0.0
    assert float(logit_discrepancy(logits, logits)) == 0.0


def test_logit_l1_gradient_pushes_the_student_toward_the_teacher() -> None:
    rng = torch.Generator().manual_seed(1)
    teacher_logits, student_logits = torch.randn((2, 6, 10), generator=rng)
    student = FixedLogits(student_logits)
    method = LogitL1(student, fixed_teacher(teacher_logits), l1_weight=2.0)
    images = torch.rand((6, *SHAPE))
    output = method.training_step(Batch(images, None))
    torch.testing.assert_close(
        output.losses["l1"], 2.0 * (student_logits - teacher_logits).abs().mean()
    )
    output.loss.backward()
    assert student.logits.grad is not None
    # Descent direction −grad points from every student logit toward the teacher's.
    assert torch.all(-student.logits.grad * (teacher_logits - student_logits) > 0)
    with torch.no_grad():
        student.logits -= 0.5 * student.logits.grad
    assert float(method.training_step(Batch(images, None)).loss.detach()) < float(
        output.loss.detach()
    )


def test_datafree_dfad_with_logit_l1_end_to_end(tiny_teacher_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    arguments = [
        "datafree",
        "--teacher",
        str(tiny_teacher_path),
        "--method",
        "dfad",
        "--set",
        "method.name=logit-l1",
        "--set",
        "synthesize_every=5",
        "--set",
        "steps_per_epoch=10",
        "--set",
        "synthesizer.params.batch_size=16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--eval-data",
        "digits:test",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["name"] == "dfad"
    assert report["student_method"]["name"] == "logit-l1"
    assert 0 <= report["student"]["test_accuracy"] <= 1
    # Two generator rounds (steps 0 and 5) of 16 codes, ten student batches of 16.
    assert report["synthesized_images"] == 2 * 16 + 10 * 16
    assert report["teacher_queries"] == 2 * 16 + 10 * 16
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/l1" in line for line in lines), lines[-1]


def test_datafree_method_params_alone_change_the_recommended_method(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    arguments = [
        "datafree", "--teacher", str(tiny_teacher_path), "--method", "zskt",
        "--set", "method.params.temperature=2", "--set", "steps_per_epoch=2",
        "--set", "synthesizer.params.batch_size=8", "--epochs", "1", "--batch-size", "8",
        "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    # zskt's recommendation (kd, kd_weight 10) with the one parameter changed.
    assert report["student_method"]["name"] == "kd"
    assert report["student_method"]["params"]["temperature"] == 2
    assert report["student_method"]["params"]["kd_weight"] == 10
    # zskt's own default (the smoothness prior) and the base class's parameters, resolved.
    assert report["method"]["params"]["total_variation_weight"] == 1.0
    assert report["method"]["params"]["batch_size"] == 8
    assert report["method"]["params"]["replay_fraction"] == 0.0
    # The adversarial synthesizers watch for a student that has lost the game (collapse checks).
    assert report["collapse"]["discrepancy_factor"] == 3.0


@pytest.mark.parametrize(
    ("method", "setting", "message"),
    [
        ("zskt", "synthesizer.params.student_shift=-1", "student_shift must be non-negative"),
        ("zskt", "synthesizer.params.student_mixup=2", "student_mixup must lie in [0, 1]"),
        ("zskt", "synthesizer.params.class_weight=-1", "class_weight must be at least 0"),
        ("zskt", "synthesizer.params.balance_weight=-1", "balance_weight must be at least 0"),
        ("zskt", "synthesizer.params.balance_target=0", "balance_target must lie in (0, 1]"),
        ("zskt", "synthesizer.params.balance_after=-1", "balance_after must be non-negative"),
        ("zskt", "synthesizer.params.balance_target=1.5", "balance_target must lie in (0, 1]"),
        ("zskt", "synthesizer.params.generators=0", "generators must lie in [1, batch_size"),
        ("zskt", "synthesizer.params.generators=300", "generators must lie in [1, batch_size"),
        ("zskt", "synthesizer.params.confidence_weight=-1", "confidence_weight must be"),
        ("zskt", "synthesizer.params.generator_kind=pixels", "generator_kind must be one of"),
        ("zskt", "synthesizer.params.generators=2.5", "generators: expected an integer, got 2.5"),
        ("dfad", "synthesizer.params.temperature=2", "no temperature"),
        (
            "zskt",
            "synthesizer.params.total_variation_weight=-1",
            "total_variation_weight must be at least 0",
        ),
        # zskt's own __init__ passes **kwargs on; unknown names are still refused up front.
        (
            "zskt",
            "synthesizer.params.latent_dims=64",
            "has no parameter 'latent_dims'; known: total_variation_weight",
        ),
        # The collapse checks' settings (datafree.collapse), patience=0 was once a traceback.
        ("zskt", "collapse.patience=0", "patience must be at least 1; set a valid one with --set"),
        ("zskt", "collapse.discrepancy_factor=0.5", "discrepancy_factor must be above 1"),
        ("dfad", "collapse.discrepancy_floor=-1", "discrepancy_floor must be non-negative"),
    ],
)
def test_datafree_out_of_range_synthesizer_settings_fail_in_one_line(
    tiny_teacher_path: Path, tmp_path: Path, method: str, setting: str, message: str
) -> None:
    out = tmp_path / "run"
    arguments = [
        "datafree", "--teacher", str(tiny_teacher_path), "--method", method,
        "--set", setting, "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert "Traceback" not in result.output
    assert not out.exists()


def test_balance_term_is_reported_and_moves_the_generator(teacher: Teacher) -> None:
    """DAFL's information entropy as an optional term: off by default, a gradient when on."""
    assert "balance" not in make_adversarial("zskt").synthesize(teacher, make_student())
    synthesizer = SYNTHESIZERS.get("zskt")(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        batch_size=32,
        adversarial_weight=0.0,  # isolate the balance term
        balance_weight=5.0,
    )
    before = copy.deepcopy(synthesizer.generator.state_dict())
    statistics = synthesizer.synthesize(teacher, make_student())
    # −H of the mean class distribution: between −log K and 0, times the weight.
    assert -5.0 * math.log(10) <= statistics["balance"] <= 0
    changed = [
        name
        for name, value in synthesizer.generator.state_dict().items()
        if value.dtype.is_floating_point and not torch.equal(value, before[name])
    ]
    assert "head.weight" in changed


def make_balanced(**params: Any) -> AdversarialSynthesizer:
    """A zskt synthesizer whose generator moves through the balance term alone (no adversarial
    loss, no smoothness prior), its weights drawn from a fixed global seed."""
    torch.manual_seed(0)  # the generator's initial weights come from the global RNG
    return make_adversarial(
        "zskt", adversarial_weight=0.0, total_variation_weight=0.0, balance_weight=5.0, **params
    )


def first_batch_balance(synthesizer: AdversarialSynthesizer, teacher: Teacher) -> float:
    """The label balance of the batch the next generator step will draw (same codes, from a
    copy of its rng, through the teacher's normalization as ``synthesize`` maps them)."""
    rng = torch.Generator().set_state(synthesizer.rng.get_state())
    latent = torch.randn((synthesizer.batch_size, synthesizer.latent_dim), generator=rng)
    synthesizer.generator.set_pixel_statistics(*teacher_pixel_statistics(teacher))
    with torch.no_grad():
        return label_balance(teacher(synthesizer.generator.train()(latent)))


def test_balance_target_applies_the_term_only_to_unevenly_labelled_batches(
    teacher: Teacher,
) -> None:
    """Below the target the term acts; above it no generator weight moves."""
    uneven = make_balanced(balance_target=0.5)
    balance = first_batch_balance(uneven, teacher)
    assert 0 < balance < 1
    uneven.balance_target = balance + (1 - balance) / 2  # the batch is less even than asked
    statistics = uneven.synthesize(teacher, make_student())
    assert statistics["balance_active"] == 1.0
    assert -5.0 * math.log(10) <= statistics["balance"] < 0

    even = make_balanced(balance_target=0.5)
    assert first_batch_balance(even, teacher) == balance  # the same generator, the same codes
    even.balance_target = balance / 2  # the batch is even enough
    before = copy.deepcopy(dict(even.generator.named_parameters()))
    statistics = even.synthesize(teacher, make_student())
    assert statistics["balance_active"] == 0.0
    assert statistics["balance"] == 0.0
    after = dict(even.generator.named_parameters())
    assert all(torch.equal(after[name], value) for name, value in before.items())


def test_balance_active_is_logged_only_when_the_term_is_gated(teacher: Teacher) -> None:
    assert "balance_active" not in make_balanced().synthesize(teacher, make_student())
    assert "balance_active" in make_balanced(balance_after=1).synthesize(teacher, make_student())


@pytest.mark.parametrize(("after", "expected"), [(0, [True] * 3), (2, [False, False, True])])
def test_balance_after_holds_the_term_back_for_the_first_generator_steps(
    teacher: Teacher, after: int, expected: list[bool]
) -> None:
    synthesizer = make_balanced(balance_after=after, batch_size=8)
    student = make_student()
    # At target 1 the term acts (a negative entropy) on every step it is not held back.
    acted = [synthesizer.synthesize(teacher, student)["balance"] < 0 for _ in range(3)]
    assert acted == expected


def test_balance_after_counts_on_across_resume_and_restart(teacher: Teacher) -> None:
    """The hold counts generator steps over the whole run: a resumed synthesizer and one
    restarted after a collapse (``reinitialize``) do not hold the term back again."""
    student = make_student()
    first = make_balanced(balance_after=1, batch_size=8)
    assert first.synthesize(teacher, student)["balance_active"] == 0.0
    resumed = make_balanced(balance_after=1, batch_size=8)
    resumed.load_state_dict(first.state_dict())
    assert resumed.synthesize(teacher, student)["balance_active"] == 1.0
    first.reinitialize(lr_scale=1.0)
    assert first.synthesize(teacher, student)["balance_active"] == 1.0


def test_replay_mixes_earlier_generator_batches_into_student_batches(teacher: Teacher) -> None:
    def make(seed: int = 0) -> AdversarialSynthesizer:
        return SYNTHESIZERS.get("zskt")(
            image_shape=SHAPE,
            num_classes=10,
            rng=torch.Generator().manual_seed(seed),
            device=torch.device("cpu"),
            batch_size=16,
            replay_fraction=0.5,
            memory_size=40,
        )

    synthesizer = make()
    student = make_student()
    assert synthesizer.sample(8).shape == (8, *SHAPE)  # empty memory: all fresh
    synthesizer.synthesize(teacher, student)
    assert len(synthesizer.memory) == 16
    stored = synthesizer.memory.images
    assert stored is not None
    batch = synthesizer.sample(8)
    assert batch.shape == (8, *SHAPE)
    # The replayed half are stored images, the fresh half come from the current generator.
    assert all(any(torch.equal(image, s) for s in stored) for image in batch[4:])
    for _ in range(3):
        synthesizer.synthesize(teacher, student)
    assert len(synthesizer.memory) == 40  # first in, first out
    copy_ = make(seed=5)
    copy_.load_state_dict(synthesizer.state_dict())
    torch.testing.assert_close(copy_.sample(6), synthesizer.sample(6))
    synthesizer.reinitialize(lr_scale=0.5)
    assert len(synthesizer.memory) == 0
    with pytest.raises(ValueError, match="replay_fraction"):
        SYNTHESIZERS.get("zskt")(
            image_shape=SHAPE, num_classes=10, rng=torch.Generator(), device=torch.device("cpu"),
            replay_fraction=1.0,
        )  # fmt: skip


def test_student_shift_moves_the_student_batches_not_the_generator_images(
    teacher: Teacher,
) -> None:
    def make(shift: int) -> AdversarialSynthesizer:
        return make_adversarial("zskt", batch_size=16, student_shift=shift)

    plain, shifted = make(0), make(2)
    shifted.generator.load_state_dict(plain.generator.state_dict())
    a, b = plain.sample(16), shifted.sample(16)
    assert b.shape == a.shape
    assert not torch.equal(a, b)
    # Same latent codes: each shifted image is its plain twin's window of the zero-padded image.
    padded = torch.nn.functional.pad(a, (2, 2, 2, 2))
    height, width = SHAPE[1:]
    for plain_image, moved in zip(padded, b, strict=True):
        assert any(
            torch.equal(plain_image[:, dy : dy + height, dx : dx + width], moved)
            for dy in range(5)
            for dx in range(5)
        )
    with pytest.raises(ValueError, match="student_shift"):
        make(-1)


def test_student_mixup_mixes_the_student_batches_not_the_generator_images(
    teacher: Teacher,
) -> None:
    def make(mixup: float) -> AdversarialSynthesizer:
        return make_adversarial("zskt", batch_size=16, student_mixup=mixup)

    plain, mixed = make(0.0), make(0.5)
    mixed.generator.load_state_dict(plain.generator.state_dict())
    a, b = plain.sample(16), mixed.sample(16)
    # Same latent codes: half the images are as drawn, the others mixtures of two of them (an
    # image mixed with itself may come out unchanged).
    same = [i for i in range(16) if torch.equal(a[i], b[i])]
    assert 8 <= len(same) < 16
    assert float(b.min()) >= 0
    assert float(b.max()) <= 1
    with pytest.raises(ValueError, match="student_mixup"):
        make(-0.5)


def test_class_weight_makes_a_conditional_generator_that_learns_the_classes(
    teacher: Teacher,
) -> None:
    def make(class_weight: float) -> AdversarialSynthesizer:
        return make_adversarial("zskt", batch_size=40, lr=1e-2, class_weight=class_weight)

    torch.manual_seed(3)  # the generators' initial weights
    plain, conditional = make(0.0), make(1.0)
    assert plain.generator.project[0].in_features == 100
    assert conditional.generator.project[0].in_features == 110  # z and the one-hot class
    codes, targets = conditional._latent(40)
    assert targets is not None
    assert torch.bincount(targets, minlength=10).tolist() == [4] * 10
    torch.testing.assert_close(codes[:, 100:].argmax(dim=1), targets)
    student = make_student()
    first = conditional.synthesize(teacher, student)
    assert set(first) == {"adversarial", "class", "total_variation"}
    for _ in range(60):
        last = conditional.synthesize(teacher, student)
    # The teacher increasingly reads the requested class from the generator's images.
    assert last["class"] < 0.7 * first["class"]
    assert conditional.sample(8).shape == (8, *SHAPE)
    with pytest.raises(ValueError, match="class_weight"):
        make(-1.0)


def test_zskt_temperature_is_its_kl_at_that_temperature_and_dfad_refuses_one() -> None:
    def make(name: str, temperature: float) -> AdversarialSynthesizer:
        return make_adversarial(name, temperature=temperature)

    rng = torch.Generator().manual_seed(3)
    student = torch.randn((6, 10), generator=rng)
    teacher_logits = torch.randn((6, 10), generator=rng)
    # Closed form: Σ p_t (log p_t − log p_s) at T, averaged over the batch.
    p_teacher = torch.softmax(teacher_logits / 3, dim=1)
    expected = (p_teacher * (p_teacher.log() - torch.log_softmax(student / 3, dim=1))).sum(1).mean()
    torch.testing.assert_close(make("zskt", 3.0).discrepancy(student, teacher_logits), expected)
    assert make("zskt", 1.0).discrepancy(student, teacher_logits) != expected
    with pytest.raises(ValueError, match="no temperature"):
        make("dfad", 2.0)
    with pytest.raises(ValueError, match="positive"):
        make("zskt", 0.0)


def test_total_variation_prior_smooths_the_generator_images(teacher: Teacher) -> None:
    """Off by default for dfad and at weight 1 for zskt (0 turns it off); on, it is weight · R_TV
    of the generator batch, and steps that follow only the prior (adversarial weight 0) make
    the images smoother."""
    from freekd.losses.inversion import total_variation

    assert "total_variation" not in make_adversarial("dfad").synthesize(teacher, make_student())
    zskt = make_adversarial("zskt")
    assert zskt.total_variation_weight == 1.0
    assert 0 < zskt.synthesize(teacher, make_student())["total_variation"] <= 2
    off = make_adversarial("zskt", total_variation_weight=0.0)
    assert "total_variation" not in off.synthesize(teacher, make_student())
    synthesizer = make_adversarial(
        "zskt", adversarial_weight=0.0, total_variation_weight=3.0, generator_steps=20, lr=1e-2
    )
    latent = torch.randn((32, synthesizer.latent_dim), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = float(total_variation(synthesizer.generator.train()(latent)))
    statistics = synthesizer.synthesize(teacher, make_student())
    with torch.no_grad():
        after = float(total_variation(synthesizer.generator.train()(latent)))
    assert 0 < statistics["total_variation"] <= 3.0 * 2  # R_TV ≤ 2 for pixels in [0, 1]
    assert after < 0.7 * before
    with pytest.raises(ValueError, match="total_variation_weight"):
        make_adversarial("zskt", total_variation_weight=-1.0)


def mean_top_probability(
    synthesizer: AdversarialSynthesizer, latent: Tensor, teacher: Teacher
) -> float:
    with torch.no_grad():
        images = synthesizer.generator.train()(latent)
        return float(teacher(images).softmax(1).max(1).values.mean())


def test_confidence_term_moves_the_generator_toward_images_the_teacher_is_sure_of(
    teacher: Teacher,
) -> None:
    """DAFL's L_oh in the adversarial generator: reported, scaled like the smoothness prior,
    and it raises the teacher's top probability on the generator's images."""
    assert "confidence" not in make_adversarial("zskt").synthesize(teacher, make_student())
    synthesizer = make_adversarial(
        "zskt", adversarial_weight=0.0, total_variation_weight=0.0, confidence_weight=1.0,
        relative_prior=False, generator_steps=20, lr=1e-2,
    )  # fmt: skip
    synthesizer.generator.set_pixel_statistics(*teacher_pixel_statistics(teacher))
    latent = torch.randn((32, synthesizer.latent_dim), generator=torch.Generator().manual_seed(1))
    before = mean_top_probability(synthesizer, latent, teacher)
    statistics = synthesizer.synthesize(teacher, make_student())
    after = mean_top_probability(synthesizer, latent, teacher)
    assert after > before + 0.05
    assert statistics["confidence"] > 0
    # Relative: at a discrepancy of a tenth of the reference, a tenth of the weight.
    relative = make_adversarial("zskt", total_variation_weight=0.0, confidence_weight=1.0)
    reference = relative.REFERENCE_DISCREPANCY
    assert relative._relative_scale(reference / 10) == pytest.approx(0.1)


def test_the_confidence_term_is_scaled_by_the_running_discrepancy_once_per_step(
    teacher: Teacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the smoothness prior the running mean still moves once per generator step, and
    the logged term is the weight × that scale × L_oh."""
    logged = {}
    calls: list[float] = []
    for scale in (1.0, 0.25):
        calls.clear()

        def fixed(_: AdversarialSynthesizer, discrepancy: float, scale: float = scale) -> float:
            calls.append(discrepancy)
            return scale

        monkeypatch.setattr(AdversarialSynthesizer, "_relative_scale", fixed)
        torch.manual_seed(0)  # the generator's initial weights: the same images for both scales
        synthesizer = make_adversarial(
            "zskt", total_variation_weight=0.0, confidence_weight=2.0, generator_steps=1
        )
        logged[scale] = synthesizer.synthesize(teacher, make_student())["confidence"]
        assert len(calls) == 1
        again = make_adversarial(
            "zskt", total_variation_weight=0.0, confidence_weight=2.0, generator_steps=3
        )
        calls.clear()
        again.synthesize(teacher, make_student())
        assert len(calls) == 3
    # The same images (same seed, the term is logged before the generator steps): a quarter.
    assert logged[0.25] == pytest.approx(logged[1.0] / 4, rel=1e-5)
    monkeypatch.undo()
    unscaled = make_adversarial("zskt", total_variation_weight=0.0, confidence_weight=2.0)
    unscaled.synthesize(teacher, make_student())
    assert unscaled.discrepancy_scale > 0  # the running mean moved without the prior
    with pytest.raises(ValueError, match="confidence_weight must be non-negative"):
        make_adversarial("zskt", confidence_weight=-1.0)


def prior_weight(synthesizer: AdversarialSynthesizer, discrepancy: float) -> float:
    """The smoothness prior's weight for a step that measured ``discrepancy``."""
    return synthesizer.total_variation_weight * synthesizer._relative_scale(discrepancy)


def test_the_relative_prior_weakens_for_small_discrepancies_and_never_strengthens() -> None:
    synthesizer = make_adversarial("zskt", total_variation_weight=2.0)
    assert synthesizer.relative_prior  # zskt's default
    reference = synthesizer.REFERENCE_DISCREPANCY
    # The first measurement sets the running mean; a soft teacher's 1/40 of the reference...
    assert prior_weight(synthesizer, reference / 40) == pytest.approx(2.0 / 40)
    # ... then the mean moves by DISCREPANCY_MOMENTUM towards each new value.
    momentum = synthesizer.DISCREPANCY_MOMENTUM
    expected = reference / 40 + momentum * (reference - reference / 40)
    assert prior_weight(synthesizer, reference) == pytest.approx(2.0 * expected / reference)
    for _ in range(200):  # far above the reference: capped at the weight given
        weight = prior_weight(synthesizer, 10 * reference)
    assert weight == pytest.approx(2.0)
    synthesizer.reinitialize(lr_scale=1.0)
    assert synthesizer.discrepancy_scale == 0.0
    fixed = make_adversarial("zskt", total_variation_weight=2.0, relative_prior=False)
    assert prior_weight(fixed, reference / 40) == 2.0


def test_zskt_anneals_the_generator_with_the_student_and_keeps_it_across_restarts(
    teacher: Teacher,
) -> None:
    synthesizer = make_adversarial("zskt", lr=0.01)
    assert synthesizer.follow_student_schedule  # zskt's default, as in the paper
    rate = lambda: synthesizer.optimizer.param_groups[0]["lr"]  # noqa: E731
    seen: list[tuple[int, int | None]] = []

    def schedule(step: int, horizon: int | None) -> float:
        seen.append((step, horizon))
        return 0.25

    source = SyntheticSource(
        synthesizer,
        teacher=teacher,
        student=make_student(),
        steps_per_epoch=2,
        batch_size=4,
        synthesize_every=2,
        schedule=schedule,
    )
    list(source.batches(TrainState(step=6, horizon=40)))
    assert seen == [(6, 40)]  # the step, and the horizon a budget fitted
    assert rate() == pytest.approx(0.0025)
    # A restart after a collapse scales the base rate, which the schedule then scales.
    synthesizer.reinitialize(lr_scale=0.5)
    assert rate() == pytest.approx(0.00125)
    synthesizer.follow_schedule(1.0)
    assert rate() == pytest.approx(0.005)
    # The base rate is resumed with the optimizer's state.
    resumed = make_adversarial("zskt", lr=0.01)
    resumed.load_state_dict(copy.deepcopy(synthesizer.state_dict()))
    resumed.follow_schedule(0.5)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)
    # schedule_power: the student's multiplier to that power (a slower generator late on).
    squared = make_adversarial("zskt", lr=0.01, schedule_power=2.0)
    squared.follow_schedule(0.5)
    assert squared.optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)
    squared.follow_schedule(1.0)
    assert squared.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="schedule_power must be a finite number above 0"):
            make_adversarial("zskt", schedule_power=bad)
    with pytest.raises(ValueError, match="leave it 1, or set follow_student_schedule=true"):
        make_adversarial("zskt", schedule_power=2.0, follow_student_schedule=False)
    # dfad (and zskt with the option off) keep the generator's constant rate.
    for constant in (
        make_adversarial("dfad", lr=0.01),
        make_adversarial("zskt", lr=0.01, follow_student_schedule=False),
    ):
        constant.follow_schedule(0.25)
        assert constant.optimizer.param_groups[0]["lr"] == 0.01


def test_several_generators_each_learn_on_their_own_part_and_resume_exactly(
    teacher: Teacher,
) -> None:
    """``generators=3``: every generator steps on its own third of the batch, the student's
    batches and the collapse probe draw from all three, and a resumed synthesizer goes on with
    the same images as the uninterrupted one."""
    student = make_student()
    synthesizer = make_adversarial("zskt", generators=3, batch_size=12)
    members = synthesizer.generator.members  # type: ignore[union-attr]
    optimized = {id(p) for group in synthesizer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in synthesizer.generator.parameters()}
    before = [copy.deepcopy(dict(member.named_parameters())) for member in members]
    synthesizer.synthesize(teacher, student)
    for member, saved in zip(members, before, strict=True):
        # Weights, not buffers (batch statistics move on every forward pass).
        assert all(not torch.equal(p, saved[name]) for name, p in member.named_parameters())
    resumed = make_adversarial("zskt", generators=3, batch_size=12, seed=5)
    resumed.load_state_dict(copy.deepcopy(synthesizer.state_dict()))
    for copy_ in (synthesizer, resumed):
        copy_.synthesize(teacher, student)
    assert torch.equal(synthesizer.sample(9), resumed.sample(9))
    assert torch.equal(synthesizer.probe(6), resumed.probe(6))
    # One generator stays a plain Generator, so checkpoints from before the option still load.
    single = make_adversarial("zskt")
    assert not any(key.startswith("members.") for key in single.generator.state_dict())
    assert all(key.startswith("members.") for key in synthesizer.generator.state_dict())


def test_several_generators_restart_together_after_a_collapse(teacher: Teacher) -> None:
    synthesizer = make_adversarial("zskt", generators=2, batch_size=8)
    synthesizer.synthesize(teacher, make_student())
    weights = [copy.deepcopy(m.state_dict()) for m in synthesizer.generator.members]  # type: ignore[union-attr]
    synthesizer.reinitialize(lr_scale=0.5)
    for member, saved in zip(synthesizer.generator.members, weights, strict=True):  # type: ignore[union-attr]
        assert not torch.equal(member.project[0].weight, saved["project.0.weight"])


def test_the_stroke_generator_plays_the_adversarial_game(teacher: Teacher) -> None:
    synthesizer = make_adversarial("zskt", generator_kind="strokes", generator_steps=3)
    assert isinstance(synthesizer.generator, StrokeGenerator)
    student = make_student()
    before = copy.deepcopy(dict(synthesizer.generator.named_parameters()))
    latent = torch.randn((32, synthesizer.latent_dim), generator=torch.Generator().manual_seed(1))
    disagreement = discrepancy_on(synthesizer, latent, teacher, student)
    synthesizer.synthesize(teacher, student)
    assert discrepancy_on(synthesizer, latent, teacher, student) > disagreement
    for name, parameter in synthesizer.generator.named_parameters():
        assert not torch.equal(parameter, before[name]), name
    assert synthesizer.sample(1).shape == (1, *SHAPE)  # a batch of one draws too
    with pytest.raises(ValueError, match="generator_output and generator_frame"):
        make_adversarial("zskt", generator_kind="strokes", generator_frame=2)
    images = synthesizer.sample(8)
    assert images.shape == (8, *SHAPE)
    resumed = make_adversarial("zskt", generator_kind="strokes", seed=3)
    resumed.load_state_dict(copy.deepcopy(synthesizer.state_dict()))
    assert torch.equal(resumed.sample(8), synthesizer.sample(8))
