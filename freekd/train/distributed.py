"""Process-group set-up for ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; the defaults describe a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and draws progress bars."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment; a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group (after a barrier so no rank exits while others still talk)."""
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; under torchrun each rank takes its local GPU.

    Raises:
        FreekdError: ``name`` is not ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``, or names a device
            this machine does not have.
    """
    from freekd.config import DEVICE_PATTERN
    from freekd.errors import FreekdError

    if not DEVICE_PATTERN.fullmatch(name):
        raise FreekdError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FreekdError("--device mps was asked for but MPS is not available; use --device cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FreekdError(
                f"--device {name} was asked for but no CUDA device is available; "
                "use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FreekdError(
                f"--device {name} was asked for but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); use cuda:0 or auto"
            )
        if info is not None and info.enabled and device.index is None:
            device = torch.device("cuda", info.local_rank)
    return device
