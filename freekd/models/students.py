"""The default student for a teacher: a smaller model of its family, else a small general model.

``freekd datafree --teacher ckpt.pt`` must run with no ``--student``, also for a teacher freekd
never built (a user class, a ``torchvision:`` model, a TorchScript file). The rule:

1. A freekd family with a smaller member: that member (:data:`SMALLER_STUDENT`, the papers'
   benchmark pairs).
2. Otherwise, for a teacher of one convolution and one linear layer on grey images up to 64 px,
   ``shallow-cnn`` when it is smaller: one convolution, a pool of the teacher's kind (max or
   average: :func:`default_student_kwargs`) and a linear layer (``models.shallow``). On the
   three one-convolution tuning teachers of freekd's data-free zoo it generalized better from
   the same synthetic images than LeNet-5-half (``experiments/2026-12-datafree-zoo``, session
   40).
3. Otherwise the first *general student* for the input size with fewer parameters than the
   teacher: LeNet-5-half for grey images up to 64 px (DAFL §4.1's MNIST student, ≈16k
   parameters), the CIFAR ResNet-8 then LeNet-5-half for colour images up to 64 px, and
   torchvision's MobileNetV3-Small (Howard et al. 2019, ≈1.5M parameters at 1,000 classes)
   then ResNet-8 for larger grey or colour images (ResNet-8 then LeNet-5-half for other channel
   counts, which torchvision's models do not take).
4. None smaller: a one-line error asking for ``--student``.
"""

from __future__ import annotations

from freekd.errors import FreekdError
from freekd.models.build import build_model
from freekd.models.factory import SMALLER_STUDENT

#: Largest side (pixels) counted as a small image, where LeNet-5 and CIFAR ResNets are the norm.
SMALL_IMAGE = 64
#: The student for a teacher with a single convolution (rule 2).
SHALLOW = "shallow-cnn"


def general_students(input_shape: tuple[int, int, int]) -> tuple[str, ...]:
    """Candidate students, largest first, for a teacher of unknown family with this input."""
    channels, height, width = input_shape
    if max(height, width) <= SMALL_IMAGE:
        return ("lenet5-half",) if channels == 1 else ("resnet8", "lenet5-half")
    if channels in (1, 3):  # torchvision's models take RGB; grey images are repeated
        return ("torchvision:mobilenet_v3_small", "resnet8")
    return ("resnet8", "lenet5-half")


def parameter_count(arch: str, *, num_classes: int, input_shape: tuple[int, int, int]) -> int:
    """Parameters of the registered architecture ``arch`` for this task."""
    model = build_model(arch, num_classes=num_classes, input_shape=input_shape)
    return sum(p.numel() for p in model.parameters())


def default_student(
    arch: object,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    teacher_parameters: int,
    convolution_layers: int | None = None,
    linear_layers: int | None = None,
) -> tuple[str, str]:
    """(student architecture, why it was chosen) for a teacher; see the module docstring.
    ``convolution_layers``, ``linear_layers``: how many the teacher has (``Teacher``'s counts);
    rule 2 takes only the measured shape, one convolution and one linear layer (a ViT's patch
    embedding is one convolution too, among many linear layers).

    Raises:
        FreekdError: no candidate is smaller than the teacher.
    """
    if isinstance(arch, str) and arch in SMALLER_STUDENT:
        if SMALLER_STUDENT[arch] == arch:  # it said "the smaller model" of an equal one
            return arch, f"the teacher's own architecture ({arch} is the smallest of its family)"
        return SMALLER_STUDENT[arch], f"the smaller model of the teacher's family ({arch})"
    grey_and_small = input_shape[0] == 1 and max(input_shape) <= SMALL_IMAGE
    if convolution_layers == 1 and linear_layers == 1 and grey_and_small:
        size = parameter_count(SHALLOW, num_classes=num_classes, input_shape=input_shape)
        if size < teacher_parameters:
            return SHALLOW, (
                f"a one-convolution student for a one-convolution teacher ({size:,} "
                f"parameters, the teacher has {teacher_parameters:,})"
            )
    candidates = general_students(input_shape)
    for name in candidates:
        size = parameter_count(name, num_classes=num_classes, input_shape=input_shape)
        if size < teacher_parameters:
            shape = "×".join(map(str, input_shape))
            return name, (
                f"a general student for {shape} inputs ({size:,} parameters, the teacher "
                f"has {teacher_parameters:,})"
            )
    raise FreekdError(
        f"no default student smaller than this teacher ({teacher_parameters:,} parameters, "
        f"architecture {arch or 'unknown'!r}; tried {', '.join(candidates)}); pass --student NAME"
    )


def default_student_kwargs(name: str, pooling: str | None) -> dict[str, str]:
    """The default student's keyword arguments: ``shallow-cnn`` pools as its teacher does.

    ``pooling`` is ``"max"``, ``"avg"`` or ``None`` (no pooling, or both kinds; see
    ``Teacher.pooling``), which keeps the max-pool. On the
    zoo's ``shallow-avgpool`` teacher the max-pooling student ended 4 points below LeNet-5-half,
    the average-pooling one 2 points above it (session 40).
    """
    return {"pool": pooling} if name == SHALLOW and pooling == "avg" else {}
