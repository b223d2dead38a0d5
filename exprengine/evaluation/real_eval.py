"""Evaluate an engine on real photos as the thesis does: FID and Inception Score between
edited and real images (Inception-v3 weights supplied by the user: `inception.py`).

The test split of a prepared data set is edited to the AUs of other test images (shuffled);
FID compares the edits with the real test images, IS is reported for both.
"""
from __future__ import annotations

import numpy as np

from exprengine.errors import UserError
from exprengine.evaluation.metrics import fid_from_features, inception_score
from exprengine.pixels import to_uint8_nhwc


def evaluate_real(engine, dataset, inception_path: str, n: int | None = None, seed: int = 0) -> dict:
    """FID and IS of `engine`'s edits on the test split of the prepared data set `dataset`
    (module docstring): `n` test images (all by default) drawn with `seed`, resized to the
    engine's size, each edited to another test image's AUs. `inception_path`: the FID
    Inception-v3 weights (`inception.load_fid_inception`).

    Returns {"n", "fid" (edits vs the real images), "inception_score_edits",
    "inception_score_real" ((mean, std) over min(10, n // 50) splits, at least 1)}.
    Raises UserError for a data set `FaceFolder` refuses, fewer than 2 test images, or weights
    that are not the FID Inception's."""
    from exprengine.data.datasets import FaceFolder
    from exprengine.evaluation.inception import inception_outputs, load_fid_inception
    ds = FaceFolder(dataset, "test", size=engine.image_size)
    count = len(ds) if n is None else min(n, len(ds))
    if count < 2:
        raise UserError(f"FID needs at least 2 test images; the test split of {dataset} has {count}")
    model = load_fid_inception(inception_path)          # both inputs checked before any edit
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds))[:count]
    faces = np.concatenate([to_uint8_nhwc(ds[int(i)][0][None].numpy()) for i in order])
    targets = np.stack([ds.aus(int(i)) for i in rng.permutation(order)])
    edits = engine.edit(faces, targets)
    real_f, real_p = inception_outputs(model, faces)
    edit_f, edit_p = inception_outputs(model, edits)
    splits = max(1, min(10, count // 50))
    return {"n": count, "fid": fid_from_features(edit_f, real_f),
            "inception_score_edits": inception_score(edit_p, splits), "inception_score_real": inception_score(real_p, splits)}
