"""An apparent-age estimator for the synthetic world, independent of any age model's critic.

An age model's discriminator also judges age, but an edit measured by the critic it was trained
against is rewarded for fooling that critic. This estimator is the AU estimator's small CNN
(`exprengine.evaluation.estimator`) with one output, years (the head's output * 70), trained
only on the renderer's images at ages drawn uniformly over 0..70 years (continuous), of
identities of a world no generator sees (`AGE_ESTIMATOR_SEED`; the LATS training world is seed 0,
the AU estimator's 424242), each with a data set's expression (`sample_aus`, a quarter of them
neutral) so that an expression does not read as an age. It is measured on held-out identities
[4000, 4500): mean absolute error in years over 0..70 and in each LATS age class, and how well
it ranks one face rendered along 0..70 years (Spearman's rank correlation, `TRAVERSAL_AGES`).

    ages = apparent_age(faces)          # uint8 [N,S,S,3] -> float32 [N] years, the shipped estimator

The renderer draws every age from 20 to 27 years alike (growth has ended, no adult curve has
started: `exprengine.data.aging`), so no estimator can tell those ages apart: its error there
is at least the spread of that span. Train (about 10 minutes on the 2-core development CPU):
`exprengine train-age-estimator --out age_estimator.safetensors`; the package ships the trained
file (`exprengine/assets/age_estimator.safetensors`) with its report in the metadata.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from exprengine.ages import AGE_CLASSES, MAX_AGE, MIN_AGE, class_label
from exprengine.errors import UserError
from exprengine.evaluation import estimator as shared
from exprengine.evaluation.estimator import ConvEstimator, save_estimator

AGE_ESTIMATOR_SEED = 515151     # the age estimator's own synthetic world; held-out draws use seed + 1
FORMAT = "exprengine-age-estimator"
#: The ages (years) of the report's traversals: 0..70 with one age in 20..27, where every render is alike.
TRAVERSAL_AGES = (0.0, 2.0, 4.5, 7.0, 10.0, 13.0, 17.0, 22.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 62.0, 70.0)
SHIPPED = "age_estimator.safetensors"
#: The age estimator's widths: half the AU estimator's (one number to read, not 17; a step is
#: about 3.5x cheaper on a CPU).
AGE_WIDTHS = (16, 32, 48, 64, 96)
__all__ = ["AGE_ESTIMATOR_SEED", "AGE_WIDTHS", "FORMAT", "TRAVERSAL_AGES", "AgeEstimator", "apparent_age", "draw_age",
           "evaluate_age_estimator", "held_out_mae", "load_age_estimator", "save_estimator", "spearman",
           "train_age_estimator", "traversal_correlations"]


class AgeEstimator(ConvEstimator):
    """The shared CNN (`ConvEstimator`) with one output: a face's apparent age in years (the head's
    output * 70; trained on 0..70, not clamped)."""

    FORMAT = FORMAT

    def __init__(self, widths: tuple[int, ...] = AGE_WIDTHS):
        super().__init__(1, MAX_AGE, widths)

    def estimate(self, faces: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 [N,S,S,3] faces -> apparent ages float32 [N], years. 128x128 faces are
        area-downsampled to 64x64 exactly as in training, other sizes resized
        (`preprocess.resize_face`). UserError if `faces` is not uint8 [N,S,S,3]."""
        return super().estimate(faces, batch)[:, 0]


def draw_age(rng: np.random.Generator, lo: float = MIN_AGE, hi: float = MAX_AGE):
    """One example's (AUs [17], age, label [age]): a data set's expression (`sample_aus`; neutral a
    quarter of the time) and an age uniform in [lo, hi) years."""
    from exprengine.data.synthetic import sample_aus
    aus = sample_aus(rng, 1)[0]
    if rng.random() < 0.25:
        aus[:] = 0
    age = float(rng.uniform(lo, hi))
    return aus, age, np.array([age], np.float32)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two equal-length 1-D sequences (Pearson's correlation of
    their ranks, ties given their mean rank): 1.0 when y rises wherever x does. 0.0 when either
    is constant (an estimate that ignores x ranks nothing). UserError for sequences of
    different lengths or shorter than 2."""
    from scipy.stats import rankdata
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if len(x) != len(y) or len(x) < 2:
        raise UserError(f"`x` and `y` must be two sequences of one length (at least 2), got {len(x)} and {len(y)}")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    norm = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / norm) if norm > 0 else 0.0


def held_out_mae(model: AgeEstimator, n: int = 512, start: int = 0, seed: int = AGE_ESTIMATOR_SEED,
                 lo: float = MIN_AGE, hi: float = MAX_AGE) -> tuple[float, float]:
    """(mean absolute error, mean signed error), years, of `model` on examples start..start+n-1 of
    world `seed + 1`: held-out identities [4000, 4500) at ages uniform in [lo, hi)."""
    draw = functools.partial(draw_age, lo=lo, hi=hi)
    faces, y = shared.render_examples(seed + 1, start, n, shared.HELD_OUT_IDENTITIES, draw)
    err = model.estimate(faces) - y[:, 0]
    return float(np.abs(err).mean()), float(err.mean())


def traversal_correlations(model: AgeEstimator, count: int = 16, start: int = 0, seed: int = AGE_ESTIMATOR_SEED,
                           ages: tuple[float, ...] = TRAVERSAL_AGES) -> tuple[np.ndarray, np.ndarray]:
    """(Spearman correlation per traversal float64 [count], estimates float32 [count, len(ages)]):
    traversal t (start..start+count-1) is one held-out identity of world `seed + 1` with one
    expression, both drawn from (seed + 1, 1_000_000 + t), rendered at each of `ages` (years)."""
    from exprengine.data.synthetic import Identity, render, sample_aus
    faces = []
    for t in range(start, start + count):
        rng = np.random.default_rng([seed + 1, 1_000_000 + t])
        identity = Identity.sample(np.random.default_rng([seed + 1, int(rng.integers(*shared.HELD_OUT_IDENTITIES))]))
        faces.append(render(identity, sample_aus(rng, 1)[0], age=np.asarray(ages, np.float64)))
    est = model.estimate(np.concatenate(faces)).reshape(count, len(ages))
    return np.array([spearman(ages, e) for e in est]), est


def evaluate_age_estimator(model: AgeEstimator, seed: int = AGE_ESTIMATOR_SEED, n: int = 512,
                           per_class: int = 64, traversals: int = 16) -> dict:
    """The report of `model` on held-out identities of world `seed + 1`: MAE in years over ages
    uniform in 0..70 (`n` faces, `held_out_mae`), MAE and mean signed error per LATS age class
    (`per_class` faces at ages uniform in each class's years, lo <= age < hi + 1), and Spearman's
    rank correlation of estimated and true age along `traversals` faces each rendered at
    `TRAVERSAL_AGES` (mean, minimum, and the fraction of consecutive steps whose estimate rises)."""
    mae, bias = held_out_mae(model, n, 0, seed)
    per = {class_label(c): held_out_mae(model, per_class, 0, seed, lo, min(hi + 1.0, MAX_AGE))
           for c, (lo, hi) in enumerate(AGE_CLASSES)}
    rho, est = traversal_correlations(model, traversals, 0, seed)
    return {"mae": mae, "bias": bias, "samples": n,
            "mae_per_class": {k: round(v[0], 3) for k, v in per.items()},
            "bias_per_class": {k: round(v[1], 3) for k, v in per.items()}, "samples_per_class": per_class,
            "traversal_spearman_mean": float(rho.mean()), "traversal_spearman_min": float(rho.min()),
            "traversal_rising_steps": float((np.diff(est, axis=1) > 0).mean()), "traversals": traversals,
            "traversal_ages": list(TRAVERSAL_AGES), "held_out_identities": list(shared.HELD_OUT_IDENTITIES),
            "seed": seed + 1}


def train_age_estimator(examples: int = 8000, steps: int = 3000, batch: int = 64, seed: int = AGE_ESTIMATOR_SEED,
                        lr: float = 2e-3, workers: int = 2, widths: tuple[int, ...] = AGE_WIDTHS,
                        progress: bool = True) -> tuple[AgeEstimator, dict]:
    """Render `examples` faces of identities [0, 4000) of world `seed` at ages uniform in 0..70
    (`draw_age`), train an `AgeEstimator` on them (`estimator.fit`: shifts and mirror images),
    and report it on held-out identities (`evaluate_age_estimator`), with the training settings.
    Rendering runs in `workers` processes. UserError if `examples` or `steps` is under 1."""
    if examples < 1 or steps < 1:
        raise UserError(f"`examples` and `steps` must be at least 1, got {examples} and {steps}")
    faces, ages = shared.render_pool(seed, examples, shared.TRAIN_IDENTITIES, draw_age, workers, progress)
    model = shared.fit(AgeEstimator(widths), faces, ages, steps, batch, seed, lr, flip=True, progress=progress)
    report = evaluate_age_estimator(model, seed)
    report.update(examples=examples, steps=steps, batch=batch, lr=lr, train_seed=seed,
                  train_identities=list(shared.TRAIN_IDENTITIES))
    return model, report


def load_age_estimator(path: str | os.PathLike | None = None) -> AgeEstimator:
    """The age estimator at `path`, or the one shipped with the package
    (`assets/age_estimator.safetensors`), with its `report`. UserError (one sentence naming
    `path`) for an unreadable file or one of another kind (an AU estimator, a generator)."""
    return shared.read_estimator(path, AgeEstimator, SHIPPED)


@functools.lru_cache(maxsize=1)
def _shipped() -> AgeEstimator:
    return load_age_estimator()


def apparent_age(faces: np.ndarray, estimator: AgeEstimator | None = None) -> np.ndarray:
    """The apparent age in years, float32 [N], of uint8 faces [N,S,S,3] of the synthetic world
    (128x128 or 64x64 crops as the renderer and the age models draw them), by `estimator` or
    the shipped one (loaded once). Not a measure of real photos: it has seen only the renderer.
    UserError if `faces` is not uint8 [N,S,S,3]."""
    return (estimator or _shipped()).estimate(faces)
