"""An AU estimator for the synthetic world, independent of any GAN critic.

GANimation's own critic regresses AUs too, but measuring an edit with the critic it was
trained against rewards fooling that critic. This estimator is a separate small CNN trained
only on the renderer's images with their exact AUs, from identities and expressions that no
generator sees (`ESTIMATOR_SEED`, a world of its own). It plays the part OpenFace plays for
real photos.

    y = W_17 GAP(conv_s2(...conv_s2(x)))        x: 64x64 RGB in [-1,1] (128x128 faces area-downsampled)

The network, its training data, training loop and file are the ones the age estimator shares
(`exprengine.evaluation.estimator`). Train (a few minutes on 2 CPU cores):
`exprengine train-au-estimator --out au_estimator.safetensors`. The package ships the trained
file (`exprengine/assets/au_estimator.safetensors`) with its measured error on held-out identities.
"""
from __future__ import annotations

import os

import numpy as np

from exprengine.aus import AU_NAMES, AU_SCALE, NUM_AUS
from exprengine.evaluation import estimator as shared
from exprengine.evaluation.estimator import INPUT_SIZE, WIDTHS, ConvEstimator, save_estimator

ESTIMATOR_SEED = 424242         # the estimator's own synthetic world
FORMAT = "exprengine-au-estimator"
__all__ = ["AUEstimator", "ESTIMATOR_SEED", "FORMAT", "INPUT_SIZE", "evaluate_estimator", "load_estimator",
           "draw_aus", "render_examples", "save_estimator", "train_au_estimator"]


class AUEstimator(ConvEstimator):
    """The shared CNN (`ConvEstimator`) with a 17-AU head: faces -> AU intensities [N,17] on the
    OpenFace 0..5 scale (the head's output * 5; trained on 0..5, not clamped). `estimate`: uint8
    [N,S,S,3] faces -> float32 [N,17]."""

    FORMAT = FORMAT

    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__(NUM_AUS, AU_SCALE, widths)


def draw_aus(rng: np.random.Generator):
    """One training example's (AUs [17], age None: the reference age, label = the AUs): a data set's
    expression (`sample_aus`), or 30% of the time one AU alone anywhere in 0..5."""
    from exprengine.data.synthetic import sample_aus
    aus = sample_aus(rng, 1)[0]
    if rng.random() < 0.3:                  # also single AUs over the whole 0..5 range
        aus[:] = 0
        aus[rng.integers(NUM_AUS)] = rng.uniform(0, 5)
    return aus, None, aus


def render_examples(seed: int, start: int, count: int, identities: tuple[int, int]):
    """(faces uint8 [count,64,64,3], aus float32 [count,17]) of the estimator's world; example i depends on (seed, i)."""
    return shared.render_examples(seed, start, count, identities, draw_aus)


def train_au_estimator(examples: int = 10000, steps: int = 2000, batch: int = 64, seed: int = ESTIMATOR_SEED,
                       lr: float = 2e-3, workers: int = 2, progress: bool = True) -> tuple[AUEstimator, dict]:
    """Render `examples` faces of identities [0, 4000) of the estimator's world, train on them with
    horizontal-shift augmentation (`estimator.fit`), and report MAE on held-out identities [4000, 4500)."""
    faces, aus = shared.render_pool(seed, examples, shared.TRAIN_IDENTITIES, draw_aus, workers, progress)
    model = shared.fit(AUEstimator(), faces, aus, steps, batch, seed, lr, progress=progress)
    return model, evaluate_estimator(model, seed)


def evaluate_estimator(model: AUEstimator, seed: int = ESTIMATOR_SEED, n: int = 512) -> dict:
    """Mean absolute error (intensity units) per AU on held-out identities of the estimator's world."""
    faces, y = render_examples(seed + 1, 0, n, shared.HELD_OUT_IDENTITIES)
    mae = np.abs(model.estimate(faces) - y).mean(0)
    return {"mae": float(mae.mean()), "mae_per_au": {a: round(float(v), 4) for a, v in zip(AU_NAMES, mae)},
            "samples": n, "held_out_identities": list(shared.HELD_OUT_IDENTITIES), "seed": seed + 1}


def load_estimator(path: str | os.PathLike | None = None) -> AUEstimator:
    """The AU estimator at `path`, or the one shipped with the package (`assets/au_estimator.safetensors`).
    UserError (one sentence naming `path`) for an unreadable file or one of another kind."""
    return shared.read_estimator(path, AUEstimator, "au_estimator.safetensors")
