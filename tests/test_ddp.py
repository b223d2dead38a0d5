"""Data-parallel training (issue 16 part 7): two CPU processes (gloo) give the weights one process
gets with the same global batch, for both trainers; `torchrun ... -m exprengine.cli train` works
and only rank 0 writes.

The equality tests run in float64 (the trainers cast their batches to the networks' dtype) and
hold every weight to 1e-5 (measured: 4e-10 for the expression trainer, whose losses are
taken in float32 for mixed precision, 2e-13 for LATS). In float32 the two processes' gradient
sums round differently (~1e-7 relative), and Adam turns that round-off into whole steps where a
gradient is round-off itself: GANimation's conv biases and its stem's weights on the constant
AU channels, which InstanceNorm cancels (their true gradient is 0), and LATS entries whose
gradient nearly cancels over the batch (beta1 = 0: each step is about lr * sign(g)). So the
float32 command-line test holds the weights to within one step of each other (lr) and their mean
difference to 1e-6.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from exprengine.errors import UserError
from exprengine.training.distributed import World

TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def expression_trainer(out, device="cpu", world=None):
    from exprengine.data.synthetic import SyntheticFaces
    from exprengine.training.trainer import TrainConfig, Trainer
    config = TrainConfig(model="convnext2", steps=4, batch=4, lr=1e-3, image_size=32, dims=(8, 16, 32), depth=1,
                         critic_width=8, critic_steps=2, checkpoint_every=4, sample_every=1000, log_every=1, seed=3)
    return Trainer(config, SyntheticFaces(64, seed=1, identities=(0, 16), size=32), out, device, world)


def lats_trainer(out, device="cpu", world=None):
    from exprengine.training.lats_trainer import LATSTrainConfig, LATSTrainer, age_training_data
    config = LATSTrainConfig(data="synthetic-age:1:40", image_size=32, batch=4, steps=3, checkpoint_every=3,
                             sample_every=1000, log_every=1, seed=5)
    return LATSTrainer(config, age_training_data(config.data, 32), out, device, world)


TRAINERS = {"expression": expression_trainer, "lats": lats_trainer}


def _rank(rank: int, port: int, family: str, out: str) -> None:
    """One of two processes, as torchrun starts them, training in float64."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    from exprengine.training.distributed import world_from_environment
    world, device = world_from_environment("cpu")
    try:
        TRAINERS[family](out, device, world).train(progress=False)
    finally:
        world.close()


@pytest.mark.parametrize("family", ["expression", "lats"])
def test_two_processes_give_the_weights_of_one(tmp_path, family):
    import torch.multiprocessing as mp
    with float64():
        one = TRAINERS[family](tmp_path / "one")
        start = {k: v.clone() for k, v in one.state_tensors().items()}
        one.train(progress=False)
        mp.spawn(_rank, args=(free_port(), family, str(tmp_path / "two")), nprocs=2)
        two = type(one).resume(tmp_path / "two", one.data)                # rank 0's checkpoint
    assert two.step == one.step == one.config.steps and two.config == one.config
    a, b = one.state_tensors(), two.state_tensors()
    assert a.keys() == b.keys()
    weights = [k for k in a if k.startswith(("generator.", "ema.", "critic."))]
    assert weights and all(a[k].dtype == torch.float64 for k in weights)
    for k in weights:
        assert torch.allclose(a[k], b[k], rtol=0, atol=TOLERANCE), (k, (a[k] - b[k]).abs().max())
    assert any(not torch.equal(a[k], start[k]) for k in weights if k.startswith("generator."))   # they trained
    assert any(not torch.equal(a[k], start[k]) for k in weights if k.startswith("critic."))
    assert len(one.log) == len(two.log) == one.config.steps
    for e1, e2 in zip(one.log, two.log):                             # the logged losses are the global batch's
        assert e1.keys() == e2.keys()
        for k in e1:
            assert e2[k] == pytest.approx(e1[k], rel=1e-5, abs=1e-9), k     # some are taken in float32


def test_lats_training_under_torchrun_equals_one_process(tmp_path):
    """The command line under torchrun (2 processes, gloo) against one process in this test."""
    from exprengine.training.lats_trainer import LATSTrainConfig, LATSTrainer, age_training_data
    args = ["train", "--model", "lats-small", "--data", "synthetic-age:1:40", "--image-size", "32", "--batch", "4",
            "--steps", "3", "--checkpoint-every", "3", "--sample-every", "3", "--device", "cpu", "--seed", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", "--master_addr=127.0.0.1",
                           "-m", "exprengine.cli", *args, "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("trained")]
    assert lines == [f"trained {tmp_path / 'two'} to step 3: {tmp_path / 'two' / 'generator.safetensors'}"]
    config = LATSTrainConfig(data="synthetic-age:1:40", image_size=32, batch=4, steps=3, checkpoint_every=3,
                             sample_every=3, seed=5)
    one = LATSTrainer(config, age_training_data(config.data, 32), tmp_path / "one")
    start = {k: v.clone() for k, v in one.state_tensors().items()}
    one.train(progress=False)
    two = LATSTrainer.resume(tmp_path / "two", age_training_data(config.data, 32))
    assert two.step == 3 and two.config == one.config
    a, b = one.state_tensors(), two.state_tensors()
    assert a.keys() == b.keys()
    for k in a:     # float32: within a step (module docstring); on average 1-2 % of what training moved
        if k.startswith(("generator.", "ema.", "critic.")):     # them (a run on half the batch: 16 % or more)
            difference, moved = (a[k] - b[k]).abs(), (a[k] - start[k]).abs()
            assert moved.mean() > 0 and difference.max() < config.lr, (k, difference.max())
            assert difference.mean() < 0.05 * moved.mean(), (k, difference.mean(), moved.mean())
    for e1, e2 in zip(one.log, two.log):
        for k in e1:
            assert e2[k] == pytest.approx(e1[k], rel=1e-3, abs=1e-5), k
    assert sorted(p.name for p in (tmp_path / "two" / "samples").iterdir()) == ["step_0000003.png"]


def test_a_batch_that_does_not_split_evenly_is_refused():
    assert World().shard(7) == slice(0, 7)
    assert World(rank=1, size=2).shard(8) == slice(4, 8)
    with pytest.raises(UserError, match="multiple of the number of processes"):
        World(rank=0, size=2).shard(7)
    x = torch.ones(3, requires_grad=True)
    assert World().sum(x) is x and World().mean_values({"a": 1.0}) == {"a": 1.0}


def _pool_rank(rank: int, port: int, out: str) -> None:
    """One of two processes filling an age pool together; it saves what it then holds."""
    import numpy as np
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from exprengine.data.age_faces import PooledAgeFaces
    from exprengine.training.distributed import world_from_environment
    world, _ = world_from_environment("cpu")
    try:
        pool = PooledAgeFaces(150, 1, (0, 36), size=32, workers=0, progress=False)
        pool.fill(world)
        np.savez(os.path.join(out, f"rank{rank}.npz"), images=pool.images, truths=pool.truths)
    finally:
        world.close()


def test_two_processes_render_a_pool_in_halves_and_both_hold_all_of_it(tmp_path, monkeypatch):
    import numpy as np
    import torch.multiprocessing as mp

    from exprengine.data.age_faces import PooledAgeFaces
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "alone"))
    alone = PooledAgeFaces(150, 1, (0, 36), size=32, workers=0, progress=False)
    alone.fill()
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "two"))     # the two render it, not read it
    mp.spawn(_pool_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        held = np.load(tmp_path / f"rank{rank}.npz")
        assert np.array_equal(held["images"], alone.images) and np.array_equal(held["truths"], alone.truths), rank
    assert alone.images.any(axis=(1, 2, 3)).all()                  # every sample was rendered
    assert World(rank=0, size=1).assemble(alone.images) is alone.images
    cached = np.load(PooledAgeFaces(150, 1, (0, 36), size=32).cache_path())     # rank 0 kept it
    assert np.array_equal(cached[0], alone.images) and np.array_equal(cached[1], alone.truths)
