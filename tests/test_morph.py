import numpy as np
import pytest

from exprengine.aus import AUs
from exprengine.engine import Engine
from exprengine.errors import UserError
from exprengine.morph import SCHEDULES, au_trajectory, schedule_weights

from helpers import perturbed_generator


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedules_run_over_0_1(schedule):
    a = schedule_weights(24, schedule)
    assert a.shape == (24,) and a[-1] == pytest.approx(1.0)
    assert (a > 0).all() and (a <= 1).all() and (np.diff(a) > 0).all()
    b = schedule_weights(5, schedule, include_source=True)
    assert b[0] == pytest.approx(0.0) and b[-1] == pytest.approx(1.0)


def test_eased_schedule_differs_from_linear():
    lin, ease = schedule_weights(10, "linear"), schedule_weights(10, "ease-in-out")
    assert ease[0] < lin[0] and abs(ease[4] - 0.5) < abs(lin[3] - 0.5) + 0.2
    assert not np.allclose(lin, ease)


def test_trajectory_formula():
    src, dst = AUs.preset("sadness").values, AUs.preset("happiness", 1.5).values
    traj = au_trajectory(src, dst, 8, "linear")
    a = np.arange(1, 9) / 8
    np.testing.assert_allclose(traj, a[:, None] * dst + (1 - a[:, None]) * src, rtol=1e-6)
    np.testing.assert_allclose(traj[-1], dst)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_frames(bad):
    with pytest.raises(UserError):
        schedule_weights(bad)
    with pytest.raises(UserError):
        schedule_weights(4, "bouncy")


@pytest.fixture(scope="module")
def eager():
    return Engine.from_generator(perturbed_generator("convnext2"), max_batch=64)


def test_morph_is_one_call_and_equals_per_frame_edits(eager, face):
    src, dst = AUs.preset("natural"), AUs.preset("surprise", 1.5)
    calls = eager.backend_calls
    frames = eager.morph(face, src, dst, frames=12, schedule="ease-in-out")
    assert eager.backend_calls == calls + 1
    assert frames.shape == (12, 128, 128, 3) and frames.dtype == np.uint8
    traj = au_trajectory(src.values, dst.values, 12, "ease-in-out")
    per_frame = np.concatenate([eager.edit(face, row) for row in traj])
    assert eager.backend_calls == calls + 1 + 12
    diff = np.abs(frames.astype(int) - per_frame.astype(int))
    assert diff.max() <= 1            # same maths; batched BLAS may round the last bit differently
    assert (diff > 0).mean() < 0.01
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).max() > 0


def test_morph_splits_only_by_max_batch(face):
    eng = Engine.from_generator(perturbed_generator("convnext2"), max_batch=5)
    eng.morph(face, "natural", "happiness", frames=12)
    assert eng.backend_calls == 3          # ceil(12 / 5)


def test_edit_batches_and_broadcasting(eager, face, rng):
    faces = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    calls = eager.backend_calls
    out = eager.edit(faces, "happiness@1.5")                      # [17] broadcast to 4 faces
    assert out.shape == (4, 128, 128, 3) and eager.backend_calls == calls + 1
    per_face = np.stack([AUs.preset(p).values for p in ("anger", "fear", "sadness", "contempt")])
    assert eager.edit(faces, per_face).shape == (4, 128, 128, 3)  # one row per face
    assert eager.edit(face, per_face).shape == (4, 128, 128, 3)   # one face, 4 expressions
    assert eager.edit([face, faces[0], face[:, :100]], "anger").shape == (3, 128, 128, 3)
    with pytest.raises(UserError, match="faces but"):
        eager.edit(faces, per_face[:3])
    gray = face.mean(axis=2).astype(np.uint8)
    assert eager.edit(gray, "anger").shape == (1, 128, 128, 3)
    with pytest.raises(UserError):
        eager.edit(face.astype(np.float32), "anger")
