"""The two `torch.utils.data.DataLoader` arguments every loader of ours passes: items go through
as they are (`as_is`, its `collate_fn`) and each worker process uses one thread
(`one_thread`, its `worker_init_fn`), so that workers that render or decode leave the cores to
the training process. Module-level functions, so that they pickle into worker processes."""
from __future__ import annotations


def as_is(item):
    """`collate_fn` that returns the worker's item unchanged (no batching, no conversion)."""
    return item


def one_thread(worker_id: int) -> None:
    """`worker_init_fn`: the worker process `worker_id` runs PyTorch on one thread."""
    import torch
    torch.set_num_threads(1)


__all__ = ["as_is", "one_thread"]
