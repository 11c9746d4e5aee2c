"""How much memory this process can still allocate: the machine's available RAM, the cgroup's
limit, ``ulimit -v`` or a GPU's free memory (``datafree.memory`` plans a run's batches with it;
``models.build`` refuses a network a file sized beyond it)."""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _meminfo(key: str) -> int | None:
    """A ``/proc/meminfo`` figure (``MemAvailable``, ``MemTotal``) in bytes."""
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    return None


def _smallest(found: dict[str, int | None]) -> tuple[int | None, str]:
    """The smallest of the figures that could be read, and its name."""
    known = {name: value for name, value in found.items() if value is not None}
    if not known:
        return None, "unknown"
    name = min(known, key=lambda key: known[key])
    return known[name], name


def _cgroup_available() -> int | None:
    limit, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if limit is None or used is None or limit.strip() == "max":
        return None
    return max(0, int(limit) - int(used))


def _address_space_available() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) still allows this process to map."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("VmSize:"):
            return max(0, soft - int(line.split()[1]) * 1024)
    return None


def available_bytes(device: torch.device) -> tuple[int | None, str]:
    """Bytes a run on ``device`` can still allocate, and where the figure comes from.

    On a GPU the device's free memory; on the CPU the smallest of the machine's available RAM,
    the cgroup's memory limit and ``ulimit -v``. ``(None, ...)`` when none can be read.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device}"
    return _smallest(
        {
            "available RAM": _meminfo("MemAvailable"),
            "the cgroup's memory limit": _cgroup_available(),
            "ulimit -v": _address_space_available(),
        }
    )


#: What :func:`check_fits` allows when the machine's memory cannot be read.
UNKNOWN_TOTAL = 128 * 2**30


def total_bytes() -> tuple[int | None, str]:
    """The most memory this process could ever have: the smallest of the machine's RAM, the
    cgroup's limit and ``ulimit -v`` (not what is free now, which page cache and other processes
    make a poor bound for a refusal)."""
    limit = (_read("/sys/fs/cgroup/memory.max") or "max").strip()
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return _smallest(
        {
            "RAM": _meminfo("MemTotal"),
            "the cgroup's limit": int(limit) if limit.isdigit() else None,
            "ulimit -v": None if soft == resource.RLIM_INFINITY else int(soft),
        }
    )


def check_fits(size: int, what: str, fix: str) -> None:
    """Refuse, before allocating it, ``size`` bytes that exceed all the memory this process
    could ever have (:func:`total_bytes`; 128 GB when unknown): a size read from a file or a flag
    must not exhaust the machine.

    Raises:
        FreekdError: ``what`` (the thing that would be allocated) is too large; ``fix`` says
            which setting to change.
    """
    from freekd.errors import FreekdError

    total, source = total_bytes()
    if size > (total if total is not None else UNKNOWN_TOTAL):
        limit = f"{total / 2**30:.1f} GB, {source}" if total is not None else "unknown"
        raise FreekdError(
            f"{what} would hold {size / 2**30:,.1f} GB, more than this process can ever have "
            f"({limit}); {fix}"
        )
