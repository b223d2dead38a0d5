"""Data-parallel training over several processes (`torchrun`): both trainers, on CPUs or GPUs.

    torchrun --nproc_per_node=K -m exprengine.cli train --model lats-small --data synthetic-age --out runs/age

Each of the K processes (ranks) holds the whole model and computes its shard of every step's
*global* batch (`World.shard`: rank r takes samples r*B/K .. (r+1)*B/K - 1 of the B samples the
step draws from (seed, step), so every rank draws the same global batch and keeps its part).
After each backward pass the gradients are averaged over the ranks (`World.average_gradients`,
one all-reduce of the flattened gradients: what PyTorch's DistributedDataParallel does with its
buckets); every rank then takes the same optimiser step, so the weights stay identical without
being sent again. Rank 0 writes the checkpoints, samples and curves; the others write nothing.

Why not the `DistributedDataParallel` wrapper itself: both trainers take gradients of
gradients (WGAN-GP's penalty, LATS's R1 penalty: `torch.autograd.grad(create_graph=True)`),
which DDP does not support, and call their networks several times per backward pass (the
cycle), which DDP's reducer refuses without `static_graph`. Averaging after `backward()` is the
same arithmetic, done once per step instead of overlapped with the backward pass.

Statistics over the batch (the LATS critic's minibatch standard deviation) are taken over the
global batch with `World.sum`, a differentiable (also twice: R1) all-reduce, so K processes
compute what one process computes with the whole batch. With K = 1 every method is the identity
and nothing is communicated: a single process trains exactly as before.

Process groups: torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`world_from_environment` joins the group (gloo on CPUs, NCCL on CUDA, one GPU per process:
cuda:LOCAL_RANK) and `World.close` leaves it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from exprengine.errors import UserError

#: The variables torchrun sets for each process.
ENVIRONMENT = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class _SumAcrossRanks(torch.autograd.Function):
    """y = the sum of x over every rank (all-reduce); its gradient is the sum of the ranks'
    gradients, computed by the same Function, so it can be differentiated again (R1)."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return _SumAcrossRanks.apply(grad)


@dataclass(frozen=True)
class World:
    """The processes training one run together: this one's `rank` among `size` (1: alone),
    `local_rank` (its GPU on this machine), and whether this module joined the process group
    (`owns_group`: `close` leaves it then)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes files and shows progress."""
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous part of a global batch of `count` samples (all of it alone).
        UserError if `count` is not a multiple of the number of processes."""
        if count % self.size:
            raise UserError(f"`batch` {count} must be a multiple of the number of processes ({self.size}), "
                            "the global batch being split evenly among them")
        n = count // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of `x` over every rank (same shape; differentiable, twice too); `x` alone."""
        return x if self.size == 1 else _SumAcrossRanks.apply(x)

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace each parameter's `.grad` with its mean over the ranks (one all-reduce of the
        flattened gradients). Parameters without a gradient are left so (the same on every rank)."""
        if self.size == 1:
            return
        import torch.distributed as dist
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean_values(self, values: dict[str, float]) -> dict[str, float]:
        """Logged values (the same keys on every rank) averaged over the ranks: each rank's
        losses are means over its shard, so their mean is the global batch's."""
        if self.size == 1 or not values:
            return values
        import torch.distributed as dist
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return {k: float(v) / self.size for k, v in zip(keys, t.tolist())}

    def assemble(self, part: np.ndarray) -> np.ndarray:
        """The whole of an array that the ranks filled in disjoint parts: each rank passes the
        same-shaped array (any numeric dtype), holding its own part and zeros elsewhere, and every
        rank gets their element-wise sum (one all-reduce; exact, as every element is one rank's
        value plus zeros). Alone: `part` itself."""
        if self.size == 1:
            return part
        import torch.distributed as dist
        t = torch.from_numpy(np.ascontiguousarray(part)).to(self._device())
        dist.all_reduce(t)
        return t.cpu().numpy()

    def broadcast(self, *modules: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every other rank's modules (the start of a run,
        as DistributedDataParallel does)."""
        if self.size == 1:
            return
        import torch.distributed as dist
        for module in modules:
            for t in [*module.parameters(), *module.buffers()]:
                with torch.no_grad():
                    dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.size > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if `world_from_environment` joined it."""
        if self.owns_group:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()

    def _device(self) -> torch.device:
        import torch.distributed as dist
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def world_from_environment(device: str) -> tuple[World, str]:
    """(World, the device this process trains on) from torchrun's variables (ENVIRONMENT).

    Alone (WORLD_SIZE unset or 1): World() and `device` as given ("cpu", "cuda"). Otherwise
    the process joins the default process group (already joined: it is used as it is) with
    gloo for "cpu" and NCCL for "cuda"; on CUDA each process takes GPU LOCAL_RANK
    ("cuda:<LOCAL_RANK>"). UserError for malformed variables or too few GPUs."""
    size_text = os.environ.get("WORLD_SIZE", "1")
    if size_text.strip() in ("", "1"):
        return World(), device
    try:
        size, rank, local = (int(os.environ.get(k, "0")) for k in ENVIRONMENT)
    except ValueError:
        raise UserError(f"the process group's variables {', '.join(ENVIRONMENT)} must be whole numbers") from None
    if not (size >= 1 and 0 <= rank < size and local >= 0):
        raise UserError(f"the process group's variables are inconsistent (WORLD_SIZE {size}, RANK {rank}, "
                        f"LOCAL_RANK {local})")
    import torch.distributed as dist
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise UserError(f"process {rank} needs GPU {local} but only {torch.cuda.device_count()} are visible; "
                            "start at most one process per GPU")
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, init_method="env://", world_size=size, rank=rank)
    return World(rank=rank, size=size, local_rank=local, owns_group=owns), device


__all__ = ["ENVIRONMENT", "World", "world_from_environment"]
