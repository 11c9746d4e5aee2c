"""Fit a data-free run into the memory the machine has, before its first step.

A synthesizer's round holds, per image, the generator's activations and those of every teacher
(and student) pass it back-propagates through; a student step holds the student's activations.
At 28×28 that is kilobytes, at 224×224 with a ResNet teacher it is tens of megabytes, so a
batch of 256 that is nothing on MNIST needs tens of gigabytes on ImageNet-size inputs. Nothing is
guessed from layer counts: :func:`autograd_bytes` runs the real networks on one and on two random
images and counts the bytes autograd saves for the backward pass (``saved_tensors_hooks``), which
is what a training step keeps alive. :func:`plan_memory` then halves the synthesis batch, the
student batch and the memory bank until the estimate fits, or refuses in one line.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from freekd.datafree.config import DataFreeConfig
from freekd.datafree.nets import build_generator
from freekd.errors import FreekdError
from freekd.hostmemory import available_bytes
from freekd.seeding import seeded_scope

logger = logging.getLogger(__name__)

GB = 1024**3
#: Share of the free memory a run plans to fill; the rest is left for what the estimate does not
#: count (the optimizer's temporaries, the allocator's slack, the progress bar, the OS).
USABLE_SHARE = 0.7
#: Share of the free memory the synthesizer's memory bank may hold.
BANK_SHARE = 0.25
#: Factor on the measured saved activations for the gradients the backward pass creates.
BACKWARD_FACTOR = 2.0


def autograd_bytes(run: Callable[[], Tensor]) -> int:
    """Bytes autograd saves for the backward pass of ``run()``, plus its output's bytes.

    Each storage counts once (a tensor saved by two operations is one allocation).
    """
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = run()
    return sum(storages.values()) + output.numel() * output.element_size()


def bytes_per_image(
    network: nn.Module, image_shape: tuple[int, ...], *, train: bool, input_grad: bool
) -> int:
    """Activation bytes one more image adds to a training pass through ``network``.

    Measured on a copy (BatchNorm running statistics and the global random stream are left as
    they were) with one and with two random images; the difference is the per-image cost, so
    weights saved for the backward pass are not counted as activations.
    """
    probe = copy.deepcopy(network).train(train)
    parameter = next(probe.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    sizes = []
    for batch in (2, 3):  # BatchNorm in training mode needs two images
        images = torch.rand((batch, *image_shape), generator=generator).to(device)
        images.requires_grad_(input_grad)
        sizes.append(autograd_bytes(functools.partial(probe, images)))
    return max(1, sizes[1] - sizes[0])


@dataclass(frozen=True)
class MemoryPlan:
    """The batch sizes and bank a run fits into memory with, and what they were fitted to."""

    synthesis_batch: int
    student_batch: int
    memory_size: int | None
    available_bytes: int | None
    source: str
    synthesis_bytes: int  # the estimate at ``synthesis_batch``
    student_bytes: int  # the estimate at ``student_batch``
    notes: tuple[str, ...]


def _size(count: float) -> str:
    return f"{count / GB:.1f} GB" if count >= GB / 10 else f"{count / 2**20:.0f} MB"


def _largest_fitting(
    requested: int, smallest: int, cost: Callable[[int], float], room: float
) -> int:
    """``requested`` halved until ``cost(batch) <= room``; 0 if not even ``smallest`` fits."""
    batch = requested
    while cost(batch) > room and batch > smallest:
        batch = max(smallest, batch // 2)
    return batch if cost(batch) <= room else 0


def plan_memory(
    *,
    synthesis_batch: int,
    student_batch: int,
    memory_size: int | None,
    synthesis_per_image: int,
    student_per_image: int,
    fixed_bytes: int,
    image_bytes: int,
    available: int | None,
    source: str,
) -> MemoryPlan:
    """Halve the batches and the bank until the estimate fits ``available`` bytes.

    Args:
        synthesis_batch: images per synthesis round asked for.
        student_batch: images per student step asked for.
        memory_size: images the synthesizer's bank would keep (``None``: no bank).
        synthesis_per_image: activation bytes per image of a synthesis round.
        student_per_image: activation bytes per image of a student step.
        fixed_bytes: what the run holds whatever the batch (weights, gradients, Adam moments).
        image_bytes: bytes of one stored image.
        available: bytes free (``None``: unknown; nothing is changed).
        source: where ``available`` comes from, for the messages.

    Raises:
        FreekdError: not even two images per batch fit.
    """

    def synthesis(batch: int) -> float:
        return fixed_bytes + BACKWARD_FACTOR * synthesis_per_image * batch

    def student(batch: int) -> float:
        return fixed_bytes + BACKWARD_FACTOR * student_per_image * batch

    if available is None:
        return MemoryPlan(
            synthesis_batch, student_batch, memory_size, None, source,
            int(synthesis(synthesis_batch)), int(student(student_batch)), (),
        )  # fmt: skip
    notes = []
    bank = memory_size
    if memory_size is not None:
        fitting = int(BANK_SHARE * available // image_bytes)
        bank = max(2, min(memory_size, fitting))
        if bank < memory_size:
            notes.append(
                f"memory bank: {memory_size:,} images of {image_bytes / 2**20:.1f} MB would not "
                f"fit; keeping {bank:,} (--set synthesizer.params.memory_size=N)"
            )
    room = USABLE_SHARE * available - (bank or 0) * image_bytes
    chosen = []
    for what, requested, cost in (
        ("synthesis batch", synthesis_batch, synthesis),
        ("student batch", student_batch, student),
    ):
        batch = _largest_fitting(requested, 2, cost, room)
        if batch == 0:
            raise FreekdError(
                f"out of memory before the first step: a {what} of 2 images needs about "
                f"{_size(cost(2))} and {_size(available)} is free ({source}); "
                "use a smaller teacher or student (--student), free memory, or raise the limit "
                "(--set memory_gb=N)"
            )
        if batch < requested:
            notes.append(
                f"{what}: {requested} images would need about {_size(cost(requested))} "
                f"with {_size(available)} free ({source}); using {batch} "
                "(--batch-size chooses it, --set memory_gb=N sets the limit)"
            )
        chosen.append(batch)
    if bank is not None:
        bank = max(bank, chosen[0])  # the bank holds at least the newest batch
    return MemoryPlan(
        chosen[0], chosen[1], bank, available, source,
        int(synthesis(chosen[0])), int(student(chosen[1])), tuple(notes),
    )  # fmt: skip


def training_bytes(module: nn.Module) -> int:
    """Weights, gradients and two Adam moments of ``module``'s trainable parameters, plus its
    frozen weights and buffers."""
    total = 0
    for parameter in module.parameters():
        copies = 4 if parameter.requires_grad else 1
        total += copies * parameter.numel() * parameter.element_size()
    return total + sum(buffer.numel() * buffer.element_size() for buffer in module.buffers())


def synthesis_bytes_per_image(
    synthesizer_class: type,
    params: dict[str, Any],
    teacher_image: int,
    student_image: int,
    shape: tuple[int, ...],
) -> tuple[int, int]:
    """(activation bytes per image of one synthesis round, bytes of the synthesizer's weights).

    A round runs the generator (``generator_width``/``latent_dim``; or, without one, optimizes
    the pixels with Adam) and back-propagates through the teacher and the student as many times
    as the class's ``memory_passes`` says.
    """
    teacher_passes, student_passes = synthesizer_class.memory_passes  # type: ignore[attr-defined]
    per_image = teacher_passes * teacher_image + student_passes * student_image
    image = math.prod(shape) * 4
    weights = 0
    if "generator_width" in params:
        with seeded_scope(0):  # a throw-away generator: the run's random stream is untouched
            generator = build_generator(
                # An unknown kind is the synthesizer's to refuse (a usage error), not the plan's.
                kind="strokes" if params.get("generator_kind") == "strokes" else "dcgan",
                latent_dim=int(params["latent_dim"]),
                image_shape=shape,  # type: ignore[arg-type]
                width=int(params["generator_width"]),
            )
        per_image += bytes_per_image(
            generator,
            (int(params["latent_dim"]),),
            train=True,
            input_grad=False,
        )
        # Each generator of an ensemble (``generators``) has its own weights; the images of a
        # round are split among them, so the activations per image stay one generator's.
        weights = training_bytes(generator) * int(params.get("generators", 1))
        if float(params.get("generator_momentum", 0.0)) > 0:  # MAD's moving-average copy
            weights += sum(p.numel() * p.element_size() for p in generator.parameters()) * int(
                params.get("generators", 1)
            )
    elif "batch_size" in params:  # the pixels themselves are optimized, with Adam's moments
        per_image += 4 * image
    return per_image, weights


def fit_to_memory(
    config: DataFreeConfig,
    synthesizer_class: type,
    params: dict[str, Any],
    teacher: nn.Module,
    student: nn.Module,
    device: torch.device,
) -> DataFreeConfig:
    """``config`` with the synthesis batch, student batch, memory bank and collapse probe made
    to fit the memory that is free (:func:`plan_memory`); each change is a warning."""
    if "batch_size" not in params:  # nothing batched to fit (noise)
        return config
    shape = tuple(teacher.input_shape)  # type: ignore[arg-type]
    # Measured once each: the teacher as the synthesizer back-propagates through it to the
    # pixels, the student as it trains (an upper bound of its passes inside a round).
    teacher_image = bytes_per_image(teacher, shape, train=False, input_grad=True)
    student_image = bytes_per_image(student, shape, train=True, input_grad=True)
    synthesis, weights = synthesis_bytes_per_image(
        synthesizer_class, params, teacher_image, student_image, shape
    )
    available, source = available_bytes(device)
    if config.memory_gb is not None:
        limit = int(config.memory_gb * GB)
        available, source = (
            (limit, "memory_gb") if available is None or limit < available else (available, source)
        )
    memory_size = params.get("memory_size")
    plan = plan_memory(
        synthesis_batch=int(params["batch_size"]),
        student_batch=config.trainer.batch_size,
        memory_size=None if memory_size is None else int(memory_size),
        synthesis_per_image=synthesis,
        student_per_image=student_image + teacher_image,
        fixed_bytes=weights + training_bytes(student) + training_bytes(teacher),
        image_bytes=math.prod(shape) * 4,
        available=available,
        source=source,
    )
    for note in plan.notes:
        logger.warning("%s", note)
    if not plan.notes:
        return config
    synthesizer_params = {**config.synthesizer.params, "batch_size": plan.synthesis_batch}
    if plan.memory_size is not None and plan.memory_size != memory_size:
        synthesizer_params["memory_size"] = plan.memory_size
    probe = min(config.collapse.probe_size, max(2, plan.synthesis_batch))
    return dataclasses.replace(
        config,
        synthesizer=dataclasses.replace(config.synthesizer, params=synthesizer_params),
        trainer=dataclasses.replace(config.trainer, batch_size=plan.student_batch),
        collapse=dataclasses.replace(config.collapse, probe_size=probe),
    )


def warmup_within_budget(config: DataFreeConfig, resolved: dict[str, Any]) -> DataFreeConfig:
    """With an image budget (``--budget 64``), no more warm-up batches (nayer's
    ``warmup_batches``) than the budget pays for at the batch that fits (``fit_to_memory``):
    the first round would otherwise synthesize them all before the budget is checked (10
    batches of 16 for a 64-image budget). ``resolved``: the synthesizer's parameters with its
    defaults. A ``warmup_batches`` of the user's own is kept; the saved config says which ran."""
    params = config.synthesizer.params
    if (
        config.budget_images is None
        or "warmup_batches" in params
        or "warmup_batches" not in resolved
    ):
        return config
    batch = int(params.get("batch_size", resolved["batch_size"]))
    affordable = max(1, math.ceil(config.budget_images / batch))
    if int(resolved["warmup_batches"]) <= affordable:
        return config
    logger.info("warm-up: %d batches fit the image budget of %d", affordable, config.budget_images)
    return dataclasses.replace(
        config,
        synthesizer=dataclasses.replace(
            config.synthesizer, params={**params, "warmup_batches": affordable}
        ),
    )
