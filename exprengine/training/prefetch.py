"""A run's per-step draws made ahead of its training loop, by a worker process.

Both trainers draw each step's batch as a function of (seed, step) alone (`trainer.step_batch`,
`lats_trainer.step_arrays`): images read or rendered, targets, noise. On the synthetic worlds the
rendering is a large part of a small model's step (about 0.28 s of a lats-small step of 0.61 s at
64x64, batch 8, on the 2-core development machine), so a `torch.utils.data.DataLoader` worker
draws the next steps while this process computes. With two cores that gains little (0.55 s a step
with the training process at one thread, OMP_NUM_THREADS=1; 0.68 s with it at two, which then
compete with the worker); with more cores it can hide the rendering (not measured here). The
draws are the same whoever makes them, so results do not depend on it.

    draws = step_draws(functools.partial(step_arrays, data, config, part), start=100, until=200)
    for step in range(100, 200):
        arrays = next(draws)            # step_arrays(data, config, part, step)
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from torch.utils.data import DataLoader, Dataset

from exprengine.data.loading import as_is, one_thread

#: Steps the worker keeps drawn ahead of the loop.
AHEAD = 4


class StepDraws(Dataset):
    """Steps start .. until - 1 as a data set: item k is draw(start + k)."""

    def __init__(self, draw: Callable[[int], object], start: int, until: int):
        self.draw, self.start, self.until = draw, start, until

    def __len__(self) -> int:
        return max(0, self.until - self.start)

    def __getitem__(self, k: int):
        return self.draw(self.start + k)


def step_draws(draw: Callable[[int], object], start: int, until: int, workers: int = 1) -> Iterator:
    """draw(start), draw(start + 1), .., draw(until - 1) in order: made by `workers` (0 or 1)
    DataLoader worker processes, up to AHEAD steps ahead, or here one at a time when `workers`
    is 0 or there is a single step. `draw` must pickle (a module-level function or a
    functools.partial of one) and must not depend on anything but its step."""
    if workers not in (0, 1):
        raise ValueError(f"workers must be 0 or 1, not {workers}")
    if workers == 0 or until - start < 2:
        return (draw(s) for s in range(start, until))
    return iter(DataLoader(StepDraws(draw, start, until), batch_size=None, num_workers=workers,
                           prefetch_factor=AHEAD, worker_init_fn=one_thread, collate_fn=as_is))


__all__ = ["AHEAD", "StepDraws", "step_draws"]
