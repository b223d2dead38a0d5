"""`training.prefetch`: a run's per-step draws made ahead by a worker process come in order and
equal the draws made in this process."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from exprengine.training.prefetch import step_draws


def draw(seed: int, step: int) -> dict:
    return {"step": step, "values": np.random.default_rng([seed, step]).standard_normal(5)}


@pytest.mark.parametrize("workers", [0, 1])
def test_draws_come_in_step_order_and_equal_the_draw_made_here(workers):
    got = list(step_draws(functools.partial(draw, 7), 3, 12, workers))
    assert [d["step"] for d in got] == list(range(3, 12))
    for d in got:
        assert np.array_equal(d["values"], draw(7, d["step"])["values"])


def test_no_steps_and_one_step():
    assert list(step_draws(functools.partial(draw, 0), 5, 5)) == []
    (only,) = step_draws(functools.partial(draw, 0), 5, 6)
    assert only["step"] == 5


def test_more_than_one_worker_is_refused():
    with pytest.raises(ValueError, match="workers must be 0 or 1"):
        step_draws(functools.partial(draw, 0), 0, 4, workers=2)
