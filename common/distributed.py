"""torch.distributed for a trainer started by torchrun: which rank this process is, and the sums that
keep every rank's parameters identical.

    torchrun --standalone --nproc_per_node=2 -m agents.ppo --env CartPole-v1

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the process is the only rank and nothing
here communicates. The process group's rank is RANK (not LOCAL_RANK, which only picks the GPU), so
the same command works across nodes (`--nnodes N --rdzv-endpoint HOST:PORT`). Backend: NCCL for
CUDA, gloo for CPU.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (identity on one rank)."""
        if self.distributed:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def any_(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is set on any rank (one small all-reduce; `flag` itself on one rank)."""
        if not self.distributed:
            return flag
        return bool(self.sum_(torch.tensor([float(flag)], device=device)).item() > 0)

    def sum_grads_(self, params) -> None:
        """Sum every parameter's gradient over ranks in one flat all-reduce (one message, not one per
        tensor). Trainers scale their losses by the global sample count, so the sum is the gradient
        of the global batch."""
        if not self.distributed:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def same_everywhere(self, params) -> bool:
        """Whether every rank holds the same parameters (compared by a checksum per rank)."""
        if not self.distributed:
            return True
        with torch.no_grad():  # on the parameters' device: NCCL moves no CPU tensors
            checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1).nan_to_num()
        gathered = [torch.zeros_like(checksum) for _ in range(self.size)]
        torch.distributed.all_gather(gathered, checksum)
        return all(torch.equal(g, checksum) for g in gathered)

    def close(self) -> None:
        """Every rank leaves together: a rank that tore its connections down while rank 0 was still
        saving could make gloo's threads on either side abort (seen once as SIGABRT on a busy CPU)."""
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def from_env() -> World:
    """This process's place, from torchrun's variables (one rank without them); starts nothing."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                 int(os.environ.get("LOCAL_RANK", "0")))


def init(device_type: str = "cpu") -> World:
    """The World of this process, with the process group started when torchrun launched several."""
    world = from_env()
    if world.distributed and not torch.distributed.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(world.local_rank)
        # Ranks wait for rank 0 while it evaluates or checkpoints: a long Atari evaluation must not
        # run into the default 30-minute collective timeout.
        torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                             timeout=datetime.timedelta(hours=4))
    return world
