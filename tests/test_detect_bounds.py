"""Detection memory is bounded: big photos are detected on a downscaled copy."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib")

from exprengine.faces import detect as det  # noqa: E402
from exprengine.faces.detect import FaceDetector  # noqa: E402


@pytest.mark.parametrize("model", ["hog", "cnn"])
def test_the_detector_never_works_on_more_pixels_than_its_bound(model, monkeypatch):
    d = FaceDetector(model)
    seen = []
    monkeypatch.setattr(d, "_detector", _Recorder(seen, model))
    big = np.zeros((1800, 2400, 3), np.uint8)                   # 4.3 MP, 17 MP after one upsampling
    d.detect(big)
    h, w = seen[0]
    assert h * w * 4 ** d.upsample <= det.MAX_WORK_PIXELS[model] * 1.01
    assert abs(w / h - 2400 / 1800) < 0.01                        # aspect kept
    seen.clear()
    d.detect(np.zeros((200, 300, 3), np.uint8))                   # small: detected as it is
    assert seen == [(200, 300)]


def test_boxes_found_on_the_downscaled_copy_come_back_in_full_size_coordinates(monkeypatch):
    from skimage import data
    face = data.astronaut()                                       # 512x512, face near (170..270, 70..172)
    big = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(face).resize((2048, 2048)))
    monkeypatch.setitem(det.MAX_WORK_PIXELS, "hog", 1_100_000)    # forces 0.26x
    boxes = FaceDetector("hog").detect(big)
    assert boxes, "the astronaut's face is found on the downscaled copy"
    b = boxes[0]
    assert 600 < (b.left + b.right) / 2 < 1000 and 300 < (b.top + b.bottom) / 2 < 600


class _Recorder:
    def __init__(self, seen, model):
        self.seen, self.model = seen, model

    def run(self, image, upsample, threshold):                    # HOG's interface
        self.seen.append(image.shape[:2])
        return [], [], []

    def __call__(self, image, upsample):                          # CNN's interface
        self.seen.append(image.shape[:2])
        return []
