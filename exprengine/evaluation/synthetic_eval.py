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
    on_target            share of the edit's change sum|edit - input| that lies on the pixels
                         the ground truth changes (1: it moves only the right regions; an
                         edit that changes the wrong pixels scores near the changed area's
                         share of the image)
    fid                  with `inception` (the FID Inception-v3, weights the user gives):
                         Frechet distance between the edits and their ground-truth images
The same numbers for "no edit" (the input itself) are the baseline an edit must beat.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from exprengine.aus import AUWarning
from exprengine.errors import UserError
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
                       estimator=None, sheet_rows: int = 0, inception=None):
    """Metrics dict (and, with sheet_rows, a uint8 contact sheet: input | edit | ground truth)."""
    from exprengine.evaluation.au_estimator import load_estimator
    estimator = estimator or load_estimator()
    ids, src, tgt = synthetic_pairs(n, seed, identities)
    inputs, truth = render(ids, src), render(ids, tgt)
    size = engine.image_size
    if size != inputs.shape[1]:
        from exprengine.data.synthetic import resize_faces
        inputs, truth = resize_faces(inputs, size), resize_faces(truth, size)
    with warnings.catch_warnings():          # the data set's targets reach 3.0, above the user-facing cap
        warnings.simplefilter("ignore", AUWarning)
        edits = engine.edit(inputs, tgt)
    background = background_masks(ids)
    if size != background.shape[1]:
        f = background.shape[1] // size
        background = background.reshape(n, size, f, size, f).all(axis=(2, 4))
    unchanged = (inputs == truth).all(-1)
    change = np.abs(edits.astype(np.int64) - inputs.astype(np.int64)).sum(-1)

    def au_error(images):
        return float(np.abs(estimator.estimate(images) - tgt).mean())

    report = {"n": n, "seed": seed, "identities": list(identities), "image_size": size,
              "psnr": float(np.mean([psnr(e, t) for e, t in zip(edits, truth)])),
              "ssim": float(np.mean([ssim(e, t) for e, t in zip(edits, truth)])),
              "au_mae": au_error(edits), "au_mae_ground_truth": au_error(truth),
              "preserved_psnr": float(np.mean([psnr(e, i, m) for e, i, m in zip(edits, inputs, unchanged)])),
              "background_change": float(np.abs(edits.astype(int) - inputs.astype(int))[background].mean()),
              "on_target": float(change[~unchanged].sum() / max(1, change.sum())),
              "no_edit": {"psnr": float(np.mean([psnr(i, t) for i, t in zip(inputs, truth)])),
                          "ssim": float(np.mean([ssim(i, t) for i, t in zip(inputs, truth)])),
                          "au_mae": au_error(inputs)}}
    if inception is not None:
        from exprengine.evaluation.inception import inception_outputs
        from exprengine.evaluation.metrics import fid_from_features
        truth_f, _ = inception_outputs(inception, truth)
        report["fid"] = fid_from_features(inception_outputs(inception, edits)[0], truth_f)
        report["no_edit"]["fid"] = fid_from_features(inception_outputs(inception, inputs)[0], truth_f)
    sheet = None
    if sheet_rows:
        from exprengine.media import contact_sheet
        rows = min(sheet_rows, n)
        tiles = np.stack([t for r in range(rows) for t in (inputs[r], edits[r], truth[r])])
        sheet = contact_sheet(tiles, columns=6, labels=["input", "edit", "truth"] * rows)
    return report, sheet


def run_synthetic_evaluation(engine, n: int = 200, seed: int = 0, *, real_dir: str | os.PathLike | None = None,
                             inception: str | os.PathLike | None = None, sheet_path: str | os.PathLike | None = None,
                             json_path: str | os.PathLike | None = None) -> dict:
    """`evaluate_synthetic` of `n` edits of world `seed` (the module's metrics), optionally with
    FID and Inception Score on a real data set, and the outputs written; returns the report
    with "engine" (the engine's directory, `Engine.path`, as text; None in memory) and, with
    `real_dir`, "real" (`evaluate_real`: n, fid, inception_score_edits, inception_score_real).

    `real_dir`: a prepared data set whose test split is edited; needs `inception`, the FID
    Inception-v3 weights file. `sheet_path`: a PNG of 8 examples (input | edit | ground truth).
    `json_path`: the report as JSON (atomically). Output places, the data set and the weights
    are all checked before any synthetic edit.
    UserError: `real_dir` without `inception`; an output place that cannot be written; a rig
    engine (`Engine.needs_landmarks`: it edits real photos; `photo_eval.run_photo_evaluation(engine,
    photos)` evaluates it);
    and what `evaluate_real` refuses.
    """
    import json

    from exprengine.files import write_bytes
    from exprengine.media import check_output_path, write_image
    if real_dir and not inception:
        raise UserError("`real_dir` needs `inception`, the FID Inception-v3 weights (they cannot be downloaded here)")
    if sheet_path:
        check_output_path(sheet_path, "image")
    if json_path:
        check_output_path(json_path, "file")
    where = None if engine.path is None else str(engine.path)
    if engine.needs_landmarks:
        raise UserError(f"{where or 'the engine'} is a rig engine: it edits real photos and has no synthetic "
                        "evaluation; evaluate it on `photos` instead")
    real = None
    if real_dir:                # first: it reads and checks the data set and the weights before any edit
        from exprengine.evaluation.real_eval import evaluate_real
        real = evaluate_real(engine, real_dir, inception)
    report, image = evaluate_synthetic(engine, n, seed, sheet_rows=8 if sheet_path else 0)
    report["engine"] = where
    if real is not None:
        report["real"] = real
    if json_path:
        write_bytes(json_path, (json.dumps(report, indent=2) + "\n").encode())
    if sheet_path:
        write_image(sheet_path, image)
    return report


def format_synthetic_report(report: dict) -> str:
    """`run_synthetic_evaluation`'s report as lines of text: FID and IS on real photos (when
    measured), then each metric (4 decimals), then the no-edit baseline."""
    lines = []
    if "real" in report:
        real = report["real"]
        lines.append(f"{'real: FID':22s} {real['fid']:.3f} (n={real['n']}), IS edits "
                     f"{real['inception_score_edits'][0]:.3f}, IS real {real['inception_score_real'][0]:.3f}")
    for key in ("psnr", "ssim", "au_mae", "au_mae_ground_truth", "preserved_psnr", "background_change"):
        lines.append(f"{key:22s} {report[key]:.4f}")
    base = report["no_edit"]
    lines.append(f"{'no edit (baseline)':22s} psnr {base['psnr']:.4f}, ssim {base['ssim']:.4f}, "
                 f"au_mae {base['au_mae']:.4f}")
    return "\n".join(lines)


#: The demo's synthetic face: a held-out identity of the default world, with a neutral expression.
DEMO_IDENTITY = 950
DEMO_INTENSITY = 2.0


def demo_face(seed: int = 0) -> tuple[object, np.ndarray]:
    """(identity, uint8 [128,128,3]) of the demo's synthetic face (never seen in training)."""
    identity = sample_identities(seed, 1, start=DEMO_IDENTITY)[0]
    return identity, render(identity, np.zeros(17, np.float32))[0]


def preset_region_report(engine, intensity: float = DEMO_INTENSITY, seed: int = 0, faces: int = 1
                         ) -> dict[str, dict]:
    """Per preset, on `faces` held-out neutral faces from the demo's (identities DEMO_IDENTITY
    onwards) edited to the preset at `intensity`, averaged over the faces:

        in_region      share of sum|edit - input| inside the preset's AU regions (region_masks)
        region_change  mean |edit - input| inside those regions, uint8 levels (is it visible?)
        true_change    the same for the renderer's true preset face (what a perfect edit moves)
        psnr, psnr_no_edit   edit and input against the renderer's true preset face
    """
    from exprengine.aus import PRESETS, AUs
    from exprengine.data.synthetic import region_masks
    names = [n for n, p in PRESETS.items() if p.aus]
    targets = np.stack([AUs.preset(n, intensity).values for n in names])
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for k in range(faces):
        identity = sample_identities(seed, 1, start=DEMO_IDENTITY + k)[0]
        face = render(identity, np.zeros(17, np.float32))[0]
        edits = engine.edit(face, targets)
        truth = render([identity] * len(names), targets)
        for name, edit, true in zip(names, edits, truth):
            region = np.zeros(face.shape[:2], bool)
            for au in PRESETS[name].aus:
                region |= region_masks([identity], au)[0]
            change = np.abs(edit.astype(np.int64) - face.astype(np.int64)).sum(-1)
            true_change = np.abs(true.astype(np.int64) - face.astype(np.int64)).sum(-1)
            rows[name].append({"in_region": float(change[region].sum() / max(1, change.sum())),
                               "region_change": float(change[region].mean() / 3),
                               "true_change": float(true_change[region].mean() / 3),
                               "psnr": psnr(edit, true), "psnr_no_edit": psnr(face, true)})
    return {name: {key: float(np.mean([r[key] for r in values])) for key in values[0]}
            for name, values in rows.items()}
