"""Cross-modal pieces: templated pairs, the CLIP wrapper, CLIP's loss, retrieval and zero-shot."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from freekd.cli import app
from freekd.crossmodal import ClipModel, class_prompts, load_clip, save_clip, templated_pairs
from freekd.crossmodal.common import quarter_clip
from freekd.crossmodal.config import CrossModalTeacherConfig
from freekd.crossmodal.data import DIGIT_WORDS, template_family
from freekd.crossmodal.evaluate import retrieval, zero_shot_accuracy
from freekd.crossmodal.methods import CLIP, CROSSMODAL_METHODS
from freekd.data import ImageDataset
from freekd.data.batch import Batch
from freekd.errors import FreekdError
from freekd.losses.contrastive import (
    clip_contrastive,
    contrastive_relational,
    feature_distillation,
    interactive_contrastive,
)
from freekd.methods import MethodContext, build_method
from tests.conftest import assert_same_weights
from tests.crossmodal.test_towers import assert_resumes_bitwise

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 4, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_templated_pairs_name_each_class_in_words(digits_train: ImageDataset) -> None:
    pairs = templated_pairs(digits_train)
    assert template_family("digits:train") == "digit"
    assert pairs.templated
    assert pairs.class_names[:3] == ["zero", "one", "two"]
    label = int(digits_train.labels[0])
    assert pairs.caption(0, 0) == pairs.templates[0].format(pairs.class_names[label])
    prompts = class_prompts(pairs)
    assert len(prompts) == 10
    assert all(len(p) == len(pairs.templates) for p in prompts)
    first = pairs.draw_captions(torch.arange(20), torch.Generator().manual_seed(0))
    again = pairs.draw_captions(torch.arange(20), torch.Generator().manual_seed(0))
    assert first == again
    assert len(set(first)) > 1


def test_caption_families_and_bad_templates(digits_train: ImageDataset) -> None:
    assert template_family("animal-mnist:train") == "silhouette"
    assert template_family("fashion-mnist") == "photo"
    with pytest.raises(FreekdError, match="exactly one"):
        templated_pairs(digits_train, templates=["no slot here"])
    with pytest.raises(FreekdError, match="unknown caption family"):
        templated_pairs(digits_train, family="poetry")


@given(st.integers(min_value=2, max_value=12), st.integers(min_value=0, max_value=1000))
def test_clip_loss_matches_open_clip(batch: int, seed: int) -> None:
    import open_clip

    generator = torch.Generator().manual_seed(seed)
    images, texts = (
        torch.randn(batch, 8, generator=generator),
        torch.randn(batch, 8, generator=generator),
    )
    scale = torch.tensor(7.5)
    ours = clip_contrastive(images, texts, logit_scale=scale)
    theirs = open_clip.ClipLoss()(
        torch.nn.functional.normalize(images, dim=-1),
        torch.nn.functional.normalize(texts, dim=-1),
        scale,
    )
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_clip_loss_of_identical_embeddings_is_log_batch() -> None:
    features = torch.ones(6, 4)
    assert clip_contrastive(features, features, logit_scale=10.0).item() == pytest.approx(
        math.log(6), rel=1e-6
    )


def test_retrieval_recall_against_brute_force() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(30, 5, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(
        images + 0.8 * torch.randn(30, 5, generator=generator), dim=-1
    )
    labels = torch.arange(30) % 3
    result = retrieval(images, texts, labels, ks=(1, 5))
    similarity = images @ texts.T
    for k in (1, 5):
        top = similarity.topk(k, dim=1).indices
        expected = sum(int(i in top[i]) for i in range(30)) / 30
        assert result["image_to_text"][str(k)] == pytest.approx(expected)
        top_images = similarity.T.topk(k, dim=1).indices
        expected_class = (
            sum(bool((labels[top_images[i]] == labels[i]).any()) for i in range(30)) / 30
        )
        assert result["text_to_image_class"][str(k)] == pytest.approx(expected_class)
    perfect = retrieval(images, images, labels)
    assert perfect["image_to_text"]["1"] == 1.0
    assert perfect["text_to_image"]["1"] == 1.0


def test_zero_shot_picks_the_nearest_class_mean() -> None:
    prompts = torch.nn.functional.normalize(torch.eye(3).unsqueeze(1).repeat(1, 2, 1), dim=-1)
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0], [0, 0, 1.0]]), dim=-1)
    assert zero_shot_accuracy(images, prompts, torch.tensor([0, 2])) == 1.0
    assert zero_shot_accuracy(images, prompts, torch.tensor([1, 2])) == 0.5


def test_cached_tokenizer_gives_open_clips_ids_with_repeats_and_past_its_bound() -> None:
    import open_clip

    from freekd.crossmodal.clip import CaptionTokenizer

    reference = open_clip.SimpleTokenizer(context_length=12)
    cached = CaptionTokenizer(12, max_cached=3)
    for texts in (
        ["a photo of a three", "a three", "a photo of a three", "seven"],
        ["seven", "a nine, written by hand", "a three", "zero"],  # the bound clears the cache
        ["a nine, written by hand"],
    ):
        assert torch.equal(cached(texts), reference(texts))
        assert len(cached.cache) <= 4


def test_clip_model_takes_any_image_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ClipModel(TINY_CLIP, mean=[0.5] * 3, std=[0.25] * 3).eval()
    images = torch.rand(4, 1, 8, 8)
    assert model.prepare(images).shape == (4, 3, 16, 16)
    tokens = model.tokenize(["a handwritten digit one.", "the digit two."])
    assert tokens.shape == (2, 12)
    save_clip(tmp_path / "model.pt", model, config={"note": "test"})
    loaded = load_clip(tmp_path / "model.pt")
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), loaded.encode_image(images))
        assert torch.allclose(model.encode_text(tokens), loaded.encode_text(tokens))
    params = model.tower_parameters()
    assert params["image"] + params["text"] + 1 == params["total"]


def test_loading_something_else_as_a_clip_is_one_line(tiny_teacher_path: Path) -> None:
    with pytest.raises(FreekdError, match="not a freekd CLIP checkpoint"):
        load_clip(tiny_teacher_path)


TINY_TEACHER_CONFIG = {
    "pairs": "digits",
    "eval_size": 200,
    "model": TINY_CLIP,
    "trainer": {
        "epochs": 6, "batch_size": 64, "lr": 0.003, "optimizer": "adamw", "weight_decay": 0.1,
        "warmup_steps": 10, "device": "cpu", "augment": "none", "eval_every": 0,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def clip_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    folder = tmp_path_factory.mktemp("clip")
    config = folder / "clip.yaml"
    config.write_text(yaml.safe_dump(TINY_TEACHER_CONFIG))
    out = folder / "teacher"
    result = CliRunner().invoke(
        app, ["crossmodal", "teacher", "--config", str(config), "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_crossmodal_teacher_learns_digits_from_templated_captions(clip_teacher: Path) -> None:
    out = clip_teacher
    report = json.loads((out / "report.json").read_text())
    teacher = report["teacher"]
    assert report["captions"]["templated"] is True
    for key in ("zero_shot_accuracy", "recall_at_1", "recall_at_5", "recall_at_10"):
        assert 0.0 <= teacher[key] <= 1.0
    assert teacher["zero_shot_accuracy"] > 3 * teacher["chance"]["zero_shot_accuracy"]
    assert teacher["recall_at_1"] > 3 * teacher["chance"]["recall_at_1"]
    assert load_clip(out / "model.pt").embed_dim == 32
    assert (out / "metrics.jsonl").exists()
    assert (out / "config.yaml").exists()


def paired_batch(model: ClipModel, count: int = 8) -> Batch:
    texts = model.tokenize([f"a handwritten digit {word}." for word in DIGIT_WORDS[:count]])
    return Batch(torch.rand(count, 1, 8, 8), torch.arange(count), texts)


def test_relational_term_by_hand() -> None:
    # Two pairs, 2-d embeddings at 90° and 0°: the similarity matrices are written out here.
    si, st_ = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    ti, tt = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = 1 / math.sqrt(2)
    student = 2.0 * torch.tensor([[1.0, h], [0.0, h]])  # s · Î T̂ᵀ
    teacher = 5.0 * torch.eye(2)

    def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
        p, q = p_logits.softmax(-1), q_logits.softmax(-1)
        return float((p * (p.log() - q.log())).sum(-1).mean())

    expected = 0.5 * (kl(teacher, student) + kl(teacher.T, student.T))
    value = contrastive_relational(si, st_, ti, tt, student_scale=2.0, teacher_scale=5.0)
    assert value.item() == pytest.approx(expected, rel=1e-5)


@given(seed=st.integers(0, 2**16), scale=st.floats(0.5, 50.0), stretch=st.floats(0.1, 10.0))
def test_relational_term_is_zero_on_the_teachers_geometry(
    seed: int, scale: float, stretch: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    images, texts = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    rotation = torch.linalg.qr(torch.randn(5, 5, generator=generator))[0]
    same = contrastive_relational(
        stretch * images @ rotation, texts @ rotation, images, texts,
        student_scale=scale, teacher_scale=scale,
    )  # fmt: skip
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    other = contrastive_relational(
        texts, images, images, texts, student_scale=scale, teacher_scale=scale
    )
    assert other.item() >= -1e-6
    with pytest.raises(ValueError, match="same batch"):
        contrastive_relational(
            images[:3], texts[:3], images, texts, student_scale=1, teacher_scale=1
        )


@pytest.mark.parametrize("name", CROSSMODAL_METHODS.names())
def test_every_crossmodal_method_trains_the_student_only(name: str) -> None:
    torch.manual_seed(0)
    teacher = ClipModel(TINY_CLIP, mean=[0.5] * 3, std=[0.25] * 3)
    student = ClipModel(quarter_clip(TINY_CLIP), mean=[0.5] * 3, std=[0.25] * 3)
    context = MethodContext(student=student, teacher=teacher, distills=CLIP, total_steps=10)
    method = build_method(name, context, {"weight_end": 0.5}).train()
    assert not teacher.training
    output = method.training_step(paired_batch(student))
    total = sum(output.losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.requires_grad is False for p in teacher.parameters())


def test_distillation_weight_decays_linearly_and_resumes_where_it_stopped() -> None:
    torch.manual_seed(0)
    teacher = ClipModel(TINY_CLIP, mean=[0.5] * 3, std=[0.25] * 3)
    student = ClipModel(quarter_clip(TINY_CLIP), mean=[0.5] * 3, std=[0.25] * 3)
    context = MethodContext(student=student, teacher=teacher, distills=CLIP, total_steps=4)
    method = CROSSMODAL_METHODS.get("relational").from_context(context, weight=3.0, weight_end=0.0)
    method.train()
    weights = [method.distill_weight() for _ in range(6)]
    assert weights == pytest.approx([3.0, 2.0, 1.0, 0.0, 0.0, 0.0])  # 4 steps: 3 → 0
    method.eval()
    assert method.distill_weight() == 0.0
    assert int(method.state_dict()["steps"]) == 6
    resumed = CROSSMODAL_METHODS.get("relational").from_context(context, weight=3.0, weight_end=0.0)
    resumed.load_state_dict(method.state_dict())
    assert int(resumed.steps) == 6
    constant = CROSSMODAL_METHODS.get("relational")(student, teacher, weight=2.0)
    assert "steps" not in constant.state_dict()  # runs without a schedule keep their state
    assert [constant.distill_weight() for _ in range(2)] == [2.0, 2.0]
    with pytest.raises(ValueError, match="total_steps"):
        CROSSMODAL_METHODS.get("relational")(student, teacher, weight_end=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        CROSSMODAL_METHODS.get("feature")(student, teacher, weight=-1.0)
    with pytest.raises(ValueError, match="weight must be a number, got '1e-3'$"):
        CROSSMODAL_METHODS.get("feature")(student, teacher, weight="1e-3")  # from Python: as given


def test_contrastive_queue_fills_in_order_and_wraps() -> None:
    torch.manual_seed(0)
    teacher = ClipModel(TINY_CLIP, mean=[0.5] * 3, std=[0.25] * 3)
    student = ClipModel(quarter_clip(TINY_CLIP), mean=[0.5] * 3, std=[0.25] * 3)
    method = CROSSMODAL_METHODS.get("contrastive")(student, teacher, queue_size=12)
    batch = paired_batch(student)
    method.training_step(batch)
    assert int(method.image_queue.filled) == 8
    assert int(method.image_queue.pointer) == 8
    method.training_step(batch)
    assert int(method.image_queue.filled) == 12
    assert int(method.image_queue.pointer) == 4
    with torch.no_grad():
        expected = torch.nn.functional.normalize(teacher.encode_text(batch.texts), dim=-1)
    assert torch.allclose(method.text_queue.embeddings[4:8], expected[4:8], atol=1e-6)


def test_quarter_student_has_at_most_a_quarter_of_the_parameters() -> None:
    for config in (TINY_CLIP, CrossModalTeacherConfig().model):
        teacher = ClipModel(config, mean=[0.5] * 3, std=[0.25] * 3)
        student = ClipModel(quarter_clip(config), mean=[0.5] * 3, std=[0.25] * 3)
        ratio = student.tower_parameters()["total"] / teacher.tower_parameters()["total"]
        assert ratio <= 0.25, ratio


def test_distillation_losses_against_closed_forms() -> None:
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    assert feature_distillation(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)
    na, nb = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    expected = torch.nn.functional.cross_entropy(4.0 * na @ nb.T, torch.arange(5))
    assert interactive_contrastive(a, b, logit_scale=4.0).item() == pytest.approx(expected.item())
    assert feature_distillation(a, b).item() == pytest.approx(((na - nb) ** 2).sum(1).mean().item())


def test_crossmodal_distill_beats_nothing_and_reports_all_three(
    clip_teacher: Path, tmp_path: Path
) -> None:
    import yaml

    config = tmp_path / "distill.yaml"
    config.write_text(
        yaml.safe_dump(
            {key: TINY_TEACHER_CONFIG[key] for key in ("pairs", "eval_size", "trainer")}
            | {"min_steps": 0}
        )
    )
    out = tmp_path / "student"
    result = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(clip_teacher / "model.pt"),
         "--config", str(config), "--out", str(out), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    for name in ("teacher", "student", "baseline"):
        for key in ("zero_shot_accuracy", "recall_at_1", "recall_at_5", "recall_at_10"):
            assert 0.0 <= report[name][key] <= 1.0
    assert report["student"]["parameter_ratio"] <= 0.25
    assert (
        report["student"]["zero_shot_accuracy"]
        > 2 * report["student"]["chance"]["zero_shot_accuracy"]
    )
    assert (out / "baseline" / "model.pt").exists()
    assert (out / "retrieval.png").stat().st_size > 0
    assert load_clip(out / "model.pt").embed_dim == 16
    # --method auto runs relational for a CLIP teacher, and the run records what it ran
    assert report["student"]["method"] == "relational"
    saved = yaml.safe_load((out / "config.yaml").read_text())["method"]
    assert saved == {"name": "relational", "params": {"weight": 2.0}}  # auto's chosen weight


def test_crossmodal_distill_errors_are_one_line(clip_teacher: Path, tmp_path: Path) -> None:
    teacher = ["--teacher", str(clip_teacher / "model.pt")]
    cases = {  # flags → what the one-line error says
        (): "--teacher is required",
        (*teacher, "--method", "telepathy"):
            "unknown cross-modal method 'telepathy'; known: auto, ",
        # the default runs relational: a parameter of another method is refused, naming both
        (*teacher, "--set", "method.params.queue_size=10"):
            "method relational (what --method auto runs here) has no parameter",
        (*teacher, "--limit-pairs", "0"): "limit_pairs",
        (*teacher, "--set", "method.params.weight_end=-1"): "weight_end must be non-negative",
        (*teacher, "--set", "method.params.weight_end=.inf"): "and finite, got inf",
        (*teacher, "--set", "method.params.weight=true"): "weight: expected a number, got True",
        # YAML reads 1e-3 as text: the parameter's kind reads it as the number it is, and a
        # word is refused in one line.
        (*teacher, "--set", "method.params.clip_weight=lots"): "clip_weight: expected a number",
    }  # fmt: skip
    for index, (flags, message) in enumerate(cases.items()):
        out = tmp_path / str(index)
        result = CliRunner().invoke(app, ["crossmodal", "distill", *flags, "--out", str(out), "-q"])
        assert result.exit_code == 2, flags
        assert message in result.output, (flags, result.output)
        assert "Traceback" not in result.output
        assert not (out / "config.yaml").exists()  # nothing half-written


def test_limit_pairs_trains_the_student_and_its_baseline_on_that_many(
    clip_teacher: Path, tmp_path: Path, digits_train: ImageDataset
) -> None:
    import yaml

    out = tmp_path / "limited"
    result = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(clip_teacher / "model.pt"), "--pairs",
         "digits", "--limit-pairs", "120", "--epochs", "1", "--batch-size", "32",
         "--set", "min_steps=7", "--set", "eval_size=100", "--eval-pairs", "digits:train",
         "--out", str(out), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["train_pairs"] == 120
    assert report["student"]["zero_shot_images"] == len(digits_train)  # --eval-pairs
    # 120 // 32 = 3 full batches an epoch: 1 epoch is raised to 3 to reach min_steps=7
    assert report["epochs"] == 3
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["epochs"] == 3
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(line["step"] for line in steps) == 9
    baseline_lines = (out / "baseline" / "metrics.jsonl").read_text().splitlines()
    baseline = [json.loads(line) for line in baseline_lines]
    assert max(line["step"] for line in baseline) == 9


def test_weight_schedule_runs_over_the_raised_epochs(clip_teacher: Path, tmp_path: Path) -> None:
    # weight 1 → 0 over the run's 9 planned steps (3 epochs raised by min_steps): only the
    # last step's distillation term is exactly 0 (fewer planned steps would zero it earlier,
    # more would leave the last one above 0).
    out = tmp_path / "scheduled"
    result = CliRunner().invoke(
        app,
        ["crossmodal", "distill", "--teacher", str(clip_teacher / "model.pt"), "--pairs",
         "digits", "--limit-pairs", "120", "--epochs", "1", "--batch-size", "32",
         "--method", "relational", "--set", "method.params.weight_end=0", "--set",
         "min_steps=7", "--set", "trainer.log_every=1",
         "--set", "eval_size=100", "--no-baseline", "--out", str(out), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    terms = {line["step"]: line["loss/relational"] for line in lines if "loss/relational" in line}
    assert sorted(terms) == list(range(1, 10))
    assert all(terms[step] > 0 for step in range(1, 9))
    assert terms[9] == 0.0


def write_pair_folder(folder: Path, digits: ImageDataset, *, count: int, labels: bool) -> None:
    from PIL import Image

    folder.mkdir()
    lines = []
    for index in range(count):
        pixels = (digits.images[index, 0].float() * (255 / float(digits.images.max()))).byte()
        Image.fromarray(pixels.numpy(), mode="L").save(folder / f"{index}.png")
        word = DIGIT_WORDS[int(digits.labels[index])]
        row = {"file": f"{index}.png", "caption": f"digit {word}, sample {index}"}
        if labels:
            row["label"] = word
        lines.append(json.dumps(row))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("labels", [True, False])
def test_users_own_pairs_train_a_clip_and_count_exact_pairs(
    digits_train: ImageDataset, tmp_path: Path, labels: bool
) -> None:
    import yaml

    folder = tmp_path / "pairs"
    write_pair_folder(folder, digits_train, count=80, labels=labels)
    config = tmp_path / "clip.yaml"
    settings = dict(TINY_TEACHER_CONFIG, pairs=str(folder))
    settings["trainer"] = dict(TINY_TEACHER_CONFIG["trainer"], epochs=1, batch_size=16)
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["crossmodal", "teacher", "--config", str(config), "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["captions"]["templated"] is False
    assert report["teacher"]["recall_counts"] == "the exact pair"
    assert report["teacher"]["retrieval_pairs"] == 8  # a tenth held out
    assert (report["teacher"]["zero_shot_accuracy"] is None) is (not labels)


def test_trainer_augment_reaches_the_paired_batches(tmp_path: Path) -> None:
    import yaml

    weights = {}
    for name in ("none", "none-again", "crop"):
        augment = name.split("-")[0]
        settings = dict(TINY_TEACHER_CONFIG)
        settings["trainer"] = dict(
            TINY_TEACHER_CONFIG["trainer"], epochs=1, augment=augment, deterministic=True
        )
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(settings))
        out = tmp_path / name
        result = CliRunner().invoke(
            app, ["crossmodal", "teacher", "--config", str(config), "--out", str(out), "-q"]
        )
        assert result.exit_code == 0, result.output
        weights[name] = load_clip(out / "model.pt").state_dict()
    # same seed, order and captions: the runs repeat bitwise, and only shifted images differ
    assert all(torch.equal(weights["none"][k], weights["none-again"][k]) for k in weights["none"])
    assert any(not torch.equal(weights["none"][k], weights["crop"][k]) for k in weights["none"])


def test_bad_pair_folders_fail_in_one_line(digits_train: ImageDataset, tmp_path: Path) -> None:
    from freekd.crossmodal.data import load_caption_pairs

    folder = tmp_path / "pairs"
    write_pair_folder(folder, digits_train, count=3, labels=False)
    (folder / "1.png").write_bytes(b"not an image")
    with pytest.raises(FreekdError, match="cannot read image"):
        load_caption_pairs(folder)
    # A decompression bomb, a row nested 100,000 deep and a 5,000-digit label were tracebacks.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 1, 0, 0, 0, 0)  # a 40,000² grey image
    bomb = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    (folder / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bomb)
    with pytest.raises(FreekdError, match="cannot read image.*decompression bomb"):
        load_caption_pairs(folder)
    for row in (
        "[" * 100_000 + "]" * 100_000,
        '{"file": "0.png", "caption": "x", "label": 1' + "0" * 5000 + "}",
    ):
        (folder / "captions.jsonl").write_text(row + "\n")
        with pytest.raises(FreekdError, match="captions.jsonl:1 is not a captions row"):
            load_caption_pairs(folder)
    (folder / "captions.jsonl").unlink()
    (folder / "captions.csv").write_text("path,text\n0.png,a digit\n")
    with pytest.raises(FreekdError, match="columns file,caption"):
        load_caption_pairs(folder)


def test_auto_resumes_bitwise_with_the_weight_it_recorded(
    clip_teacher: Path, tmp_path: Path
) -> None:
    common = [
        "crossmodal", "distill", "--teacher", str(clip_teacher / "model.pt"), "--pairs",
        "digits", "--limit-pairs", "96", "--batch-size", "32", "--set", "min_steps=0",
        "--set", "trainer.scheduler=constant", "--set", "eval_size=50", "--no-baseline", "-q",
    ]  # fmt: skip
    assert_resumes_bitwise(common, tmp_path)


def test_clip_sizes_and_normalization_are_checked_before_the_weights_exist() -> None:
    import open_clip.model

    torch.manual_seed(3)
    plain = open_clip.model.CLIP(**TINY_CLIP)
    torch.manual_seed(3)
    checked = ClipModel(TINY_CLIP, mean=[0.5], std=[0.25])
    # The meta-device build draws no random numbers: the weights are open_clip's own.
    assert_same_weights(plain, checked.clip)
    huge = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "width": 60_000}}
    with pytest.raises(FreekdError, match="the CLIP model's weights would hold .* GB, more than"):
        ClipModel(huge, mean=[0.5], std=[0.25])  # it was a 4.9 TB allocation
    with pytest.raises(FreekdError, match="input normalization mean \\[nan"):
        ClipModel(TINY_CLIP, mean=[math.nan] * 3, std=[0.25])  # it trained until the loss was nan
    with pytest.raises(FreekdError, match="takes 1 or 3 values"):
        ClipModel(TINY_CLIP, mean=[0.5, 0.5], std=[0.25])


@pytest.mark.parametrize(
    ("tower", "key", "value", "message"),
    [
        ("text_cfg", "context_length", 0, "text_cfg.context_length must be an integer in [2,"),
        ("text_cfg", "vocab_size", 1, "text_cfg.vocab_size must be an integer in [49,408,"),
        ("text_cfg", "layers", 1_000_000, "text_cfg.layers must be an integer in [1, 1,000]"),
        ("vision_cfg", "patch_size", 64, "patch_size 64 is larger than image_size 16"),
        (None, "embed_dim", 0, "embed_dim must be an integer in [1, 65,536], got 0"),
    ],
)
def test_clip_configs_open_clip_cannot_build_are_one_line(
    tower: str | None, key: str, value: int, message: str
) -> None:
    # AssertionError, RuntimeError and IndexError tracebacks mid-run; a million text layers ran
    # away while the model was being built to check its size.
    config = (
        {**TINY_CLIP, tower: {**TINY_CLIP[tower], key: value}}
        if tower
        else {**TINY_CLIP, key: value}
    )
    with pytest.raises(FreekdError, match=re.escape(message)):
        ClipModel(config, mean=[0.5], std=[0.25])
