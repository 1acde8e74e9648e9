"""Process-group setup for DDP launched by `torchrun` or by `srun` (one task per GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistInfo:
    """Read rank and world size from torchrun's or SLURM's environment."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:  # torchrun
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:  # srun, one task per GPU
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistInfo()


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL on GPU, gloo on CPU). No-op for a single process."""
    if not info.enabled or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", _slurm_master() or "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", "0")) % 1000))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)


def _slurm_master() -> str | None:
    nodes = os.environ.get("SLURM_JOB_NODELIST")
    if not nodes:
        return None
    import subprocess

    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, timeout=10)
        return out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else None
    except (OSError, subprocess.SubprocessError):
        return None


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank if `flag` is true on any (e.g. one rank received SIGUSR1)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_value(value: float | None, info: DistInfo) -> float | None:
    """The main rank's `value` on every rank (None travels as NaN; validation runs on rank 0 only,
    and every rank's LR scheduler must step on the same value)."""
    if not info.enabled:
        return value
    t = torch.tensor([float("nan") if value is None else float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    out = float(t.item())
    return None if out != out else out
