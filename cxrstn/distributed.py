"""One training run on several GPUs (or CPU processes) with DistributedDataParallel.

    torchrun --standalone --nproc_per_node=4 stages/train.py --setting stn --fold 0

(in the pipeline: `dvc exp run -S 'train.launcher=torchrun --standalone --nproc_per_node=4'`).
torchrun starts one process per GPU and sets WORLD_SIZE, RANK and LOCAL_RANK; a plain
`python` start is a world of one, and then nothing here changes the run.

How the work is split, so that a run on N processes trains like the run on one:
- every process draws the same balanced sample sequence (same seeded generator) and takes
  every N-th position of it (`ShardedSampler`): global batch k of `classifier.batch_size`
  images is the union of the processes' k-th batches of batch_size / N images;
- DDP averages the processes' gradients, so with equal shares the step is the one the
  whole batch gives (up to the order of floating-point sums and each process's own
  augmentation stream);
- validation, checkpoints, logs and outputs are the main process's (rank 0) alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in the environment; one process without it."""
        return cls(
            size=int(os.environ.get("WORLD_SIZE", 1)),
            rank=int(os.environ.get("RANK", 0)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU); on CUDA each process takes
    the GPU of its local rank. Returns the device this process trains on."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        device = torch.device("cuda", world.local_rank)
    elif device.type != "cpu":
        raise ValueError(f"training on several processes needs CUDA or the CPU, not {device}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_batch_size(batch_size: int, world: World) -> int:
    """Each process's share of the global batch; the shares must be equal."""
    if batch_size % world.size:
        raise ValueError(
            f"classifier.batch_size {batch_size} does not split evenly over "
            f"{world.size} processes; use a multiple of {world.size}"
        )
    return batch_size // world.size


class ShardedSampler(Sampler[int]):
    """Every `world.size`-th index of `base`'s draw, from position `world.rank`.

    `base` (e.g. the balanced `WeightedRandomSampler`) must draw the same sequence in every
    process: give each the same seeded generator. The draw is cut to a multiple of the
    world size, so that every process takes as many steps as the others.
    """

    def __init__(self, base: Sampler[int], world: World):
        self.base, self.world = base, world

    def __len__(self) -> int:
        return len(self.base) // self.world.size

    def __iter__(self) -> Iterator[int]:
        drawn = list(self.base)
        drawn = drawn[: len(self) * self.world.size]
        return iter(drawn[self.world.rank :: self.world.size])
