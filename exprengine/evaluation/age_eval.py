"""An age engine measured against the synthetic world's ground truth.

The synthetic age world draws any identity at any age (`data.synthetic.render(identity, aus,
age)`), so an aged face has an exact answer: the same identity and expression rendered at the
target age. Two measurements, on identities no model was trained on (900-999 of the world of
`seed`, the 10 % `exprengine train` holds out):

- per target class (the six LATS classes, each at its centre age `ages.CLASS_CENTRES`): PSNR in
  dB between the engine's aged face and the true face, beside the PSNR of not editing (the
  source face against the same truth), over samples whose source is another class;
- along a lifespan traversal (`Engine.traverse`, 101 frames by default, ages 1 to 59.5 years):
  the apparent age of every frame by the independent age estimator
  (`evaluation.age_estimator`, a CNN trained on renders of a world of its own, not the LATS
  critic or age encoder), its Spearman rank correlation with the frames' ages per face, and the
  estimator's reading of the true renders at the same ages beside it.

    report = evaluate_age_engine(engine, n=120)
    sheet = age_contact_sheet(engine, faces=4)        # uint8 image: rows engine / truth per face
"""
from __future__ import annotations

import numpy as np

from exprengine.ages import CLASS_CENTRES, NUM_AGE_CLASSES, class_label

HELD_OUT = (900, 1000)        # identities `exprengine train` holds out of a 1000-identity world


def evaluate_age_engine(engine, n: int = 120, seed: int = 0, traversals: int = 16, estimator=None) -> dict:
    """Measure the age `engine` (an `Engine` with `is_age`) on `n` held-out samples of the
    synthetic age world of `seed` (`data.age_faces.SyntheticAgeFaces`, identities HELD_OUT,
    neutral and expressive faces as trained) and `traversals` held-out faces' lifespans.

    Returns a dict: `per_class` {class label: {"psnr", "no_edit_psnr" (dB, mean over samples
    whose source is another class), "apparent_age", "true_apparent_age" (years: the estimator's
    mean on the engine's faces and on the true faces), "samples"}}; `psnr` and `no_edit_psnr`
    (dB, means over every class); `traversal` {"frames", "spearman_mean", "spearman_min"
    (engine), "truth_spearman_mean" (true renders), "monotone_fraction" (faces whose rho >= 0.9),
    "apparent_age_at" {years: mean estimated age of the engine's frame nearest that age}};
    `estimator` (its held-out error). Faces are rendered at the engine's size when it divides
    128 (area-downsampled, as the trainer's data), else at 128 px and resized to it.
    UserError / EngineError as `Engine.age`."""
    from exprengine.data.age_faces import SyntheticAgeFaces
    from exprengine.evaluation.age_estimator import load_age_estimator, spearman
    from exprengine.evaluation.metrics import psnr
    from exprengine.preprocess import resize_face

    estimator = estimator or load_age_estimator()
    size = engine.image_size
    render_size = size if size <= 128 and 128 % size == 0 else 128      # as the trainer renders its data
    data = SyntheticAgeFaces(n, seed, HELD_OUT, size=render_size)

    def at_engine_size(faces: np.ndarray) -> np.ndarray:
        return faces if render_size == size else np.stack([resize_face(f, size) for f in faces])

    sources = np.stack([data.render_at(i, data.source_age(i)) for i in range(n)])
    per_class = {}
    for c in range(NUM_AGE_CLASSES):
        idx = [i for i in range(n) if data.source_class(i) != c]
        years = CLASS_CENTRES[c]
        aged = engine.age(sources[idx], years)
        truth = np.stack([data.render_at(i, years) for i in idx])
        per_class[class_label(c)] = {
            "psnr": round(float(np.mean([psnr(a, t) for a, t in zip(aged, at_engine_size(truth))])), 3),
            "no_edit_psnr": round(float(np.mean([psnr(s, t) for s, t in zip(at_engine_size(sources[idx]),
                                                                             at_engine_size(truth))])), 3),
            "apparent_age": round(float(estimator.estimate(aged).mean()), 2),
            "true_apparent_age": round(float(estimator.estimate(truth).mean()), 2),
            "target_age": years, "samples": len(idx)}
    ages = engine.traversal_ages()
    rhos, truth_rhos, at = [], [], {a: [] for a in CLASS_CENTRES}
    for i in range(traversals):
        frames = engine.traverse(sources[i])
        est = estimator.estimate(frames)
        truth = np.stack([data.render_at(i, float(a)) for a in ages])
        rhos.append(spearman(ages, est))
        truth_rhos.append(spearman(ages, estimator.estimate(truth)))
        for a in at:
            at[a].append(float(est[int(np.argmin(np.abs(ages - a)))]))
    return {
        "per_class": per_class,
        "psnr": round(float(np.mean([v["psnr"] for v in per_class.values()])), 3),
        "no_edit_psnr": round(float(np.mean([v["no_edit_psnr"] for v in per_class.values()])), 3),
        "traversal": {"faces": traversals, "frames": int(len(ages)),
                      "spearman_mean": round(float(np.mean(rhos)), 4), "spearman_min": round(float(np.min(rhos)), 4),
                      "truth_spearman_mean": round(float(np.mean(truth_rhos)), 4),
                      "monotone_fraction": round(float(np.mean(np.asarray(rhos) >= 0.9)), 4),
                      "apparent_age_at": {f"{a:g}": round(float(np.mean(v)), 2) for a, v in at.items()}},
        "estimator": getattr(estimator, "report", {}),
        "protocol": f"{n} held-out samples (identities {HELD_OUT[0]}-{HELD_OUT[1] - 1}, world seed {seed}), "
                    f"each aged to the other five classes' centre ages; {traversals} held-out lifespans "
                    f"of {len(ages)} frames read by the independent age estimator",
    }


def age_contact_sheet(engine, faces: int = 4, seed: int = 0, tile: int = 128) -> np.ndarray:
    """A contact sheet, uint8 [2*faces*tile, 7*tile, 3]: for each of `faces` held-out
    faces of the world `seed`, one row of the engine's faces and one of the true renders: the
    source (at its base age) then the six class centre ages (1, 4.5, 8, 17, 34.5, 59.5 years),
    each tile `tile` px. The engine's row is aged in one `Engine.age` call per face; both rows are
    drawn at the engine's size when it divides 128 (as its training data) and resized to `tile`."""
    from exprengine.data.age_faces import SyntheticAgeFaces
    from exprengine.preprocess import resize_face

    size = engine.image_size
    data = SyntheticAgeFaces(faces, seed, HELD_OUT, size=size if size <= 128 and 128 % size == 0 else 128,
                             expressions=False)
    rows = []
    for i in range(faces):
        source = data.render_at(i, data.source_age(i))
        aged = engine.age([source] * NUM_AGE_CLASSES, list(CLASS_CENTRES))
        truth = [data.render_at(i, a) for a in CLASS_CENTRES]
        for row in ([source, *aged], [source, *truth]):
            rows.append(np.concatenate([resize_face(np.ascontiguousarray(t), tile) for t in row], axis=1))
    return np.concatenate(rows, axis=0)
