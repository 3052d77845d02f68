"""Several processes, one run: the torch.distributed helpers the Trainer uses under ``torchrun``.

``torchrun --nproc-per-node N -m rnnkit <task> train ...`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each one's environment.
``setup`` reads them and joins the process group (gloo on CPU, nccl on GPU); with no such
environment, or ``WORLD_SIZE=1``, nothing changes and training is the single-process code path.

How the Trainer uses them (see ``Trainer``):

- the model's forward and backward run through ``DistributedDataParallel`` (``TaskLoss`` wraps the
  task's loss so DDP sees every parameter, however the task calls its model), which broadcasts rank
  0's parameters at the start and averages the gradients;
- data: every rank reads the same stream (same seed), so the stream's position, and the checkpoint
  that stores it, is the same on every rank. A task with ``shard(batch, rank, world_size)`` splits
  each batch between the ranks (``split_batch`` helps), so N ranks train on the batches one process
  would, and give its weights; a task without one is sharded by batch: rank r trains on batches
  r, r + N, r + 2N, ... of the stream, so one step sees N batches (scale the learning rate to taste);
- only rank 0 writes (checkpoints, metrics.jsonl, plots, console output); the others wait at a
  barrier after each checkpoint, and decisions that depend on a clock or on an evaluation (the time
  budget's step count, stopping, the best checkpoint) are rank 0's, broadcast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Group:
    """This process's place in the run: rank ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process: the collectives below are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes."""
        return self.rank == 0


def from_env() -> Group:
    """The Group that torchrun's environment variables describe (rank 0 of 1 without them)."""
    values = {}
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        text = os.environ.get(name, default)
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"environment variable {name} must be an integer (torchrun sets it), "
                             f"got {text!r}") from None
    group = Group(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if group.world_size < 1 or not 0 <= group.rank < group.world_size:
        raise ValueError(f"RANK={group.rank} and WORLD_SIZE={group.world_size}: expected 0 <= RANK < WORLD_SIZE")
    return group


def backend_for(device: torch.device) -> str:
    """nccl for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device: torch.device | str) -> Group:
    """Join the process group torchrun describes (once; later calls return the same Group).

    On CUDA each process takes the GPU ``LOCAL_RANK`` (call this before the model is built, as the
    CLI does, so that ``--device cuda`` means that GPU).
    """
    group = from_env()
    if not group.active:
        return group
    device = torch.device(device)
    if dist.is_initialized():
        if dist.get_world_size() != group.world_size or dist.get_rank() != group.rank:
            raise RuntimeError(f"a process group of {dist.get_world_size()} processes (rank {dist.get_rank()}) is "
                               f"already running, but the environment says rank {group.rank} of {group.world_size}")
        return group
    if device.type == "cuda":
        torch.cuda.set_device(group.local_rank if device.index is None else device.index)
    dist.init_process_group(backend_for(device), rank=group.rank, world_size=group.world_size)
    return group


def cleanup() -> None:
    """Leave the process group (``destroy_process_group``), if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: Group) -> None:
    """Wait for every rank (a no-op in one process)."""
    if group.active:
        dist.barrier()


def broadcast(value: Any, group: Group) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object; returned unchanged in one process)."""
    if not group.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, group: Group) -> list[Any]:
    """Every rank's ``value`` on rank 0, in rank order (any picklable object; [value] in one process)."""
    if not group.active:
        return [value]
    values = [None] * group.world_size if group.is_main else None
    dist.gather_object(value, values, dst=0)
    return values if group.is_main else [value]


def sum_floats(values: list[float], group: Group, device: torch.device) -> list[float]:
    """The sum over the ranks of each of ``values`` (float64, so token counts stay exact)."""
    if not group.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def split_batch(tensor: Tensor, rank: int, world_size: int, dim: int) -> Tensor:
    """Rank ``rank``'s contiguous share of ``tensor`` along its batch dimension ``dim`` (for a task's ``shard``).

    The batch size must divide by the number of processes, so that every rank's mean loss weighs
    the same number of examples and DDP's average of the gradients equals one process's.
    """
    size = tensor.shape[dim]
    if size % world_size:
        raise ValueError(f"the batch has {size} examples (dimension {dim} of a {tuple(tensor.shape)} tensor), which "
                         f"does not divide between {world_size} processes: choose a batch size that is a "
                         f"multiple of {world_size}")
    share = size // world_size
    return tensor.narrow(dim, rank * share, share)


class TaskLoss(nn.Module):
    """The task's loss as a module, so DistributedDataParallel can run it.

    Tasks call their model in different ways (``model(x)``, ``model.loss(batch)``); DDP only needs
    the forward it runs to use the parameters it registered, which ``model`` here provides.
    """

    def __init__(self, model: nn.Module, loss: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Any, carry: Any) -> Any:
        return self.loss(batch, carry)


def data_parallel(model: nn.Module, loss: Callable, group: Group) -> nn.Module:
    """``loss`` (the task's) under DistributedDataParallel over ``model``'s parameters."""
    # find_unused_parameters: a task's step may leave some parameters without a gradient (the
    # Trainer allows it); without this DDP would fail at the next step waiting for them
    return nn.parallel.DistributedDataParallel(TaskLoss(model, loss), find_unused_parameters=True)


class WorkerFinished(Exception):
    """Raised by ``Trainer.fit`` on ranks > 0 once training ends, where ``end_workers_after_fit`` asked.

    The CLI asks, so that what a task does after training (score the test split, write
    ``test.json`` and plots) runs once, on rank 0, while the task's code stays the same.
    """


_END_WORKERS_AFTER_FIT = False


def end_workers_after_fit(end: bool = True) -> None:
    """Make ``Trainer.fit`` raise ``WorkerFinished`` on ranks > 0 when it is done (the CLI's choice)."""
    global _END_WORKERS_AFTER_FIT
    _END_WORKERS_AFTER_FIT = end


def ending_workers_after_fit() -> bool:
    return _END_WORKERS_AFTER_FIT


class NoLog:
    """``MetricsLog``'s interface, writing nothing: the metrics log of ranks > 0."""

    def write(self, record: dict) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass
