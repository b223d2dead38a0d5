"""Evaluate an engine in the synthetic world, where every edit has its exact ground truth.

For held-out identities (the last 10 % of the world's identities, which `exprengine train
--data synthetic` never sees), a face rendered with source AUs is edited to target AUs and
compared with the renderer's image of the same face with the target AUs:

    psnr, ssim           edit vs ground truth (higher is better)
    au_mae               |estimator(edit) - target|, intensity units, by the independent AU
                         estimator (not the GAN critic); `au_mae_ground_truth` is the
                         estimator's own error on the ground truth (the floor)
    preserved_psnr       edit vs input over the pixels the ground truth says do not change
                         (the rest of the face and the identity)
    background_change    mean |edit - input| outside the head, in uint8 levels
The same numbers for "no edit" (the input itself) are the baseline an edit must beat.
"""
from __future__ import annotations

import numpy as np

from exprengine.data.synthetic import background_masks, render, sample_aus, sample_identities
from exprengine.evaluation.metrics import psnr, ssim


def synthetic_pairs(n: int, seed: int = 0, identities: tuple[int, int] = (900, 1000)):
    """(identities, source AUs [n,17], target AUs [n,17]) for evaluation, by (seed, i)."""
    ids, src, tgt = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, 77, i])
        index = int(rng.integers(*identities))
        ids.append(sample_identities(seed, 1, start=index)[0])
        a = sample_aus(rng, 1)[0]
        b = sample_aus(rng, 1)[0]
        while np.abs(a - b).max() < 0.5:          # an edit that changes something visible
            b = sample_aus(rng, 1)[0]
        src.append(a)
        tgt.append(b)
    return ids, np.stack(src), np.stack(tgt)


def evaluate_synthetic(engine, n: int = 200, seed: int = 0, identities: tuple[int, int] = (900, 1000),
                       estimator=None, sheet_rows: int = 0):
    """Metrics dict (and, with sheet_rows, a uint8 contact sheet: input | edit | ground truth)."""
    from exprengine.evaluation.au_estimator import load_estimator
    estimator = estimator or load_estimator()
    ids, src, tgt = synthetic_pairs(n, seed, identities)
    inputs, truth = render(ids, src), render(ids, tgt)
    size = engine.image_size
    if size != inputs.shape[1]:
        from exprengine.data.synthetic import resize_faces
        inputs, truth = resize_faces(inputs, size), resize_faces(truth, size)
    edits = engine.edit(inputs, tgt)
    background = background_masks(ids)
    if size != background.shape[1]:
        f = background.shape[1] // size
        background = background.reshape(n, size, f, size, f).all(axis=(2, 4))
    unchanged = (inputs == truth).all(-1)

    def au_error(images):
        return float(np.abs(estimator.estimate(images) - tgt).mean())

    report = {"n": n, "seed": seed, "identities": list(identities), "image_size": size,
              "psnr": float(np.mean([psnr(e, t) for e, t in zip(edits, truth)])),
              "ssim": float(np.mean([ssim(e, t) for e, t in zip(edits, truth)])),
              "au_mae": au_error(edits), "au_mae_ground_truth": au_error(truth),
              "preserved_psnr": float(np.mean([psnr(e, i, m) for e, i, m in zip(edits, inputs, unchanged)])),
              "background_change": float(np.abs(edits.astype(int) - inputs.astype(int))[background].mean()),
              "no_edit": {"psnr": float(np.mean([psnr(i, t) for i, t in zip(inputs, truth)])),
                          "ssim": float(np.mean([ssim(i, t) for i, t in zip(inputs, truth)])),
                          "au_mae": au_error(inputs)}}
    sheet = None
    if sheet_rows:
        from exprengine.media import contact_sheet
        rows = min(sheet_rows, n)
        tiles = np.stack([t for r in range(rows) for t in (inputs[r], edits[r], truth[r])])
        sheet = contact_sheet(tiles, columns=6, labels=["input", "edit", "truth"] * rows)
    return report, sheet
