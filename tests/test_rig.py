"""The AU rig (exprengine/models/rig.py): its mesh facts, its geometry, and what it does to a real face."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from exprengine.aus import AU_NAMES, AU_SCALE
from exprengine.models import rig as R
from exprengine.models.rig import FaceRig, RigConfig

S = 256


def _chains(conns) -> set[tuple[int, int]]:
    return {tuple(sorted((c.start, c.end))) for c in conns}


def _path_edges(path) -> set[tuple[int, int]]:
    return {tuple(sorted(e)) for e in zip(path[:-1], path[1:])}


def test_index_lists_are_mediapipes_topology():
    """The rig's index lists are paths of MediaPipe's own connection lists (so a mislabelled
    point cannot slip in)."""
    vision = pytest.importorskip("mediapipe.tasks.python.vision")
    C = vision.FaceLandmarksConnections
    right_eye, left_eye = _chains(C.FACE_LANDMARKS_RIGHT_EYE), _chains(C.FACE_LANDMARKS_LEFT_EYE)
    lips = _chains(C.FACE_LANDMARKS_LIPS)
    assert _path_edges((33, *R.RIGHT_UPPER_LID, 133)) <= right_eye
    assert _path_edges((33, *R.RIGHT_LOWER_LID, 133)) <= right_eye
    assert _path_edges((263, *R.LEFT_UPPER_LID, 362)) <= left_eye
    assert _path_edges((263, *R.LEFT_LOWER_LID, 362)) <= left_eye
    assert _path_edges((61, *R.UPPER_OUTER, 291)) <= lips
    assert _path_edges((61, *R.LOWER_OUTER, 291)) <= lips
    assert _path_edges(R.INNER_LIP_POLYGON + (78,)) <= lips
    brows = _chains(C.FACE_LANDMARKS_RIGHT_EYEBROW) | _chains(C.FACE_LANDMARKS_LEFT_EYEBROW)
    assert set(R.RIGHT_BROW) | set(R.LEFT_BROW) == {i for e in brows for i in e}
    assert set(R.RIGHT_IRIS) == {i for e in _chains(C.FACE_LANDMARKS_RIGHT_IRIS) for i in e} | {468}


def _mesh() -> np.ndarray:
    """A real face mesh ([478,2] crop pixels of a 256 crop) from MediaPipe on the astronaut."""
    data = pytest.importorskip("skimage.data")
    from exprengine.faces.crop import FaceCrop
    from exprengine.faces.landmarks import MediaPipeDetector
    image = data.astronaut()
    p = MediaPipeDetector().meshes(image)[0].points[:, :2].astype(np.float64)
    right, left = p[[33, 133]].mean(0), p[[362, 263]].mean(0)
    iod = float(np.linalg.norm(left - right))
    centre = (right + left) / 2 + (0, R.CROP_CENTRE * iod)
    crop = FaceCrop(float(centre[0]), float(centre[1]), int(round(R.CROP_SIDE * iod)))
    top, left_px, _ = crop.region
    return crop.extract(image, S), ((p - (left_px, top)) * S / crop.side).astype(np.float32)


@pytest.fixture(scope="module")
def face():
    return _mesh()


def _aus(**values) -> torch.Tensor:
    a = torch.zeros(1, 17)
    for name, v in values.items():
        a[0, AU_NAMES.index(name)] = v
    return a


def _disp(landmarks: np.ndarray, **values) -> torch.Tensor:
    d, _ = FaceRig().displacement(torch.from_numpy(landmarks)[None], _aus(**values))
    return d[0]


def test_fields_move_the_described_points_the_described_way(face):
    _, lm = face
    up = lambda d, idx: float(-d[list(idx), 1].mean())              # noqa: E731  (image y points down)
    d = _disp(lm, AU01=2)
    assert up(d, R.RIGHT_BROW_INNER) > 2 and up(d, R.LEFT_BROW_INNER) > 2           # pixels, IOD ~64 px
    assert abs(up(d, R.RIGHT_UPPER_LID)) < 0.3 and float(d[list(R.LOWER_OUTER)].abs().max()) < 1e-3
    d = _disp(lm, AU04=2)
    assert up(d, R.RIGHT_BROW_INNER) < -4 and d[107, 0] > 1 and d[336, 0] < -1       # down and together
    d = _disp(lm, AU12=2)
    assert up(d, (61,)) > 5 and up(d, (291,)) > 5 and d[61, 0] < -3 and d[291, 0] > 3  # up and out
    d = _disp(lm, AU15=2)
    assert up(d, (61,)) < -5 and up(d, (291,)) < -5
    d = _disp(lm, AU26=2)
    assert up(d, (152,)) < -10 and abs(up(d, (13,))) < 0.5 and up(d, (14,)) < -10     # jaw down, upper lip stays
    assert abs(up(d, (10,))) < 1e-3                                                   # the forehead stays
    d = _disp(lm, AU45=5)                                                             # fully shut
    shut = lm[list(R.RIGHT_UPPER_LID)] + d[list(R.RIGHT_UPPER_LID)].numpy()
    assert np.abs(shut - lm[list(R.RIGHT_LOWER_LID)]).max() < 1e-3


def test_fields_follow_the_head_roll_and_size(face):
    """The rig works in the face's frame: a turned, scaled, moved face moves the same way, turned and scaled."""
    _, lm = face
    aus = dict(AU12=2, AU02=1.5, AU26=1, AU45=1)
    base = _disp(lm, **aus).numpy()
    a, k, shift = math.radians(25), 0.7, np.array([11.0, -7.0])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = ((lm - 128) @ rot.T * k + 128 + shift).astype(np.float32)
    turned = _disp(moved, **aus).numpy()
    np.testing.assert_allclose(turned, base @ rot.T * k, atol=1e-3)


def test_left_and_right_are_treated_alike(face):
    """In the face's frame each AU moves a point of the right side as the mirror of its left
    partner (the mouth and eye corners, the brows' ends)."""
    _, lm = face
    rig = FaceRig()
    L = torch.from_numpy(lm)[None]
    q = rig.in_frame(L, rig.face_frame(L))
    fields = rig.fields(q)
    for name, (right, left) in {"AU12": (61, 291), "AU15": (61, 291), "AU20": (61, 291), "AU04": (107, 336),
                                "AU02": (70, 300), "AU05": (159, 386), "AU45": (159, 386)}.items():
        f = fields[AU_NAMES.index(name)].expand_as(q)[0]
        np.testing.assert_allclose(f[right].numpy() * (-1, 1), f[left].numpy(), atol=0.012, err_msg=name)
        assert float(f[right].abs().max()) > 0.01, name


def test_no_aus_is_no_edit(face):
    crop, lm = face
    rig = FaceRig().eval()
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        out = rig.edit(x, torch.zeros(1, 17), torch.from_numpy(lm)[None])
    assert float((out - x).abs().max()) < 1e-5


def test_edit_is_local_and_visible(face):
    """Intensity 2 changes the face by many grey levels where the AU acts, and leaves the
    crop's far corners alone."""
    crop, lm = face
    rig = FaceRig().eval()
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    names = ["AU01", "AU04", "AU12", "AU15", "AU26", "AU45"]
    aus = torch.zeros(len(names), 17)
    for i, n in enumerate(names):
        aus[i, AU_NAMES.index(n)] = 2 / AU_SCALE
    with torch.no_grad():
        out = rig.edit(x.expand(len(names), -1, -1, -1), aus, torch.from_numpy(lm)[None].expand(len(names), -1, -1))
    change = ((out - x).abs() * 127.5).amax(1)                     # [N,S,S] grey levels
    for i, n in enumerate(names):
        assert float(change[i].max()) > 40, n
        assert float(change[i, :16, :16].max()) < 1 and float(change[i, -16:, -16:].max()) < 1, n


def test_blink_and_jaw_drop_read_as_such_by_mediapipe(face):
    """An independent estimator (MediaPipe's blendshapes, not the rig's own numbers) sees the
    eyes shut and the jaw open."""
    from exprengine.faces.landmarks import MediaPipeDetector
    crop, lm = face
    rig = FaceRig().eval()
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    aus = torch.zeros(2, 17)
    aus[0, AU_NAMES.index("AU45")] = 3 / AU_SCALE
    aus[1, AU_NAMES.index("AU26")] = 3 / AU_SCALE
    with torch.no_grad():
        out = rig.edit(x.expand(2, -1, -1, -1), aus, torch.from_numpy(lm)[None].expand(2, -1, -1))
    images = ((out.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    det = MediaPipeDetector()
    names, before = det.blendshapes(crop)
    col = {n: i for i, n in enumerate(names)}
    _, blink = det.blendshapes(images[0])
    _, jaw = det.blendshapes(images[1])
    for side in ("eyeBlinkLeft", "eyeBlinkRight"):
        assert blink[0, col[side]] - before[0, col[side]] > 0.15
    assert jaw[0, col["jawOpen"]] - before[0, col["jawOpen"]] > 0.1


def test_config_round_trip_and_refusals():
    from exprengine.errors import UserError
    c = RigConfig()
    assert RigConfig.from_dict(c.to_dict()) == c
    for bad in ({**c.to_dict(), "image_size": 250}, {**c.to_dict(), "flow_grid": 10**6},
                {**c.to_dict(), "family": "resnet"}, {**c.to_dict(), "extra": 1}, [1, 2]):
        with pytest.raises(UserError):
            RigConfig.from_dict(bad)
