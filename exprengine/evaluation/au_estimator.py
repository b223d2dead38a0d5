"""An AU estimator for the synthetic world, independent of any GAN critic.

GANimation's own critic regresses AUs too, but measuring an edit with the critic it was
trained against rewards fooling that critic. This estimator is a separate small CNN trained
only on the renderer's images with their exact AUs, from identities and expressions that no
generator sees (`ESTIMATOR_SEED`, a world of its own). It plays the part OpenFace plays for
real photos.

    y = W_17 GAP(conv_s2(...conv_s2(x)))        x: 64x64 RGB in [-1,1] (128x128 faces area-downsampled)

Train (a few minutes on 2 CPU cores): `exprengine train-au-estimator --out au_estimator.safetensors`.
The package ships the trained file (`exprengine/assets/au_estimator.safetensors`) with its
measured error on held-out identities.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from exprengine.aus import AU_SCALE, NUM_AUS
from exprengine.errors import UserError
from exprengine.pixels import network_tensor

ESTIMATOR_SEED = 424242         # the estimator's own synthetic world
INPUT_SIZE = 64
FORMAT = "exprengine-au-estimator"


class AUEstimator(nn.Module):
    """Five stride-2 conv blocks (BatchNorm, ReLU), global average pooling, a linear head -> [N,17] in 0..5."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 96, 128, 192)):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(cin, NUM_AUS)
        self.widths = widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float [N,3,64,64] in [-1,1] -> AU intensities [N,17] (OpenFace scale: the head's
        output * 5; trained on 0..5, not clamped). AssertionError for another input shape."""
        assert x.ndim == 4 and x.shape[1:] == (3, INPUT_SIZE, INPUT_SIZE), f"expected [N,3,64,64], got {tuple(x.shape)}"
        return self.head(self.trunk(x).mean(dim=(2, 3))) * AU_SCALE

    @torch.no_grad()
    def estimate(self, faces: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 [N,S,S,3] faces -> AU intensities float32 [N,17] (resampled to 64x64 as in training)."""
        from exprengine.data.synthetic import SIZE, resize_faces
        from exprengine.preprocess import resize_face
        self.eval()
        if faces.shape[1] == SIZE:
            faces = resize_faces(faces, INPUT_SIZE)          # exactly the training resampling
        elif faces.shape[1] != INPUT_SIZE:
            faces = np.stack([resize_face(f, INPUT_SIZE) for f in faces])
        out = []
        for s in range(0, len(faces), batch):
            x = network_tensor(faces[s:s + batch])
            out.append(self(x).numpy())
        return np.concatenate(out).astype(np.float32)


def render_examples(seed: int, start: int, count: int, identities: tuple[int, int]):
    """(faces uint8 [count,64,64,3], aus [count,17]) of the estimator's world; example i depends on (seed, i)."""
    from exprengine.data.synthetic import Identity, render, resize_faces, sample_aus
    faces, labels = [], []
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        identity = Identity.sample(np.random.default_rng([seed, int(rng.integers(*identities))]))
        aus = sample_aus(rng, 1)[0]
        if rng.random() < 0.3:                  # also single AUs over the whole 0..5 range
            aus[:] = 0
            aus[rng.integers(NUM_AUS)] = rng.uniform(0, 5)
        faces.append(identity)
        labels.append(aus)
    labels = np.stack(labels)
    return resize_faces(render(faces, labels), INPUT_SIZE), labels


def _render_chunk(args):
    return render_examples(*args)


def render_pool(seed: int, count: int, identities: tuple[int, int], workers: int = 2, progress: bool = True):
    """`render_examples(seed, 0, count, identities)` rendered in chunks of 256 by `workers`
    spawned processes: (faces uint8 [count,64,64,3], aus float32 [count,17] in 0..5)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm
    chunks = [(seed, s, min(256, count - s), identities) for s in range(0, count, 256)]
    faces, labels = [], []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool, \
            tqdm(total=count, desc="rendering", disable=not progress) as bar:
        for f, a in pool.map(_render_chunk, chunks):
            faces.append(f)
            labels.append(a)
            bar.update(len(a))
    return np.concatenate(faces), np.concatenate(labels)


def _tensors(faces: np.ndarray, aus: np.ndarray):
    return network_tensor(faces), torch.from_numpy(aus)


def train_au_estimator(examples: int = 10000, steps: int = 2000, batch: int = 64, seed: int = ESTIMATOR_SEED,
                       lr: float = 2e-3, workers: int = 2, progress: bool = True) -> tuple[AUEstimator, dict]:
    """Render `examples` faces of identities [0, 4000) of the estimator's world, train on them with
    horizontal-shift augmentation, and report MAE on held-out identities [4000, 4500)."""
    from tqdm import tqdm
    faces, aus = render_pool(seed, examples, (0, 4000), workers, progress)
    x_all, y_all = _tensors(faces, aus)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = AUEstimator()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="AU estimator", disable=not progress):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        shift = int(torch.randint(-2, 3, (1,), generator=gen))
        x = torch.roll(x, shift, dims=3)
        loss = nn.functional.smooth_l1_loss(model(x) / AU_SCALE, y / AU_SCALE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, evaluate_estimator(model, seed)


def evaluate_estimator(model: AUEstimator, seed: int = ESTIMATOR_SEED, n: int = 512) -> dict:
    """Mean absolute error (intensity units) per AU on held-out identities of the estimator's world."""
    x, y = _tensors(*render_examples(seed + 1, 0, n, (4000, 4500)))
    model.eval()
    with torch.no_grad():
        pred = model(x)
    mae = (pred - y).abs().mean(0).numpy()
    from exprengine.aus import AU_NAMES
    return {"mae": float(mae.mean()), "mae_per_au": {a: round(float(v), 4) for a, v in zip(AU_NAMES, mae)},
            "samples": n, "held_out_identities": [4000, 4500], "seed": seed + 1}


def save_estimator(model: AUEstimator, path: str | os.PathLike, report: dict) -> None:
    """Write `model` to `path` as safetensors (its state dict, metadata: format
    "exprengine-au-estimator", its widths and `report` as JSON), atomically (`files.write_bytes`);
    `load_estimator` reads it back. UserError when `path` cannot be written (or the disk is full)."""
    from safetensors.torch import save

    from exprengine.files import write_bytes
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes(path, save(tensors, metadata={"format": FORMAT, "widths": json.dumps(list(model.widths)),
                                                          "report": json.dumps(report)}))


def load_estimator(path: str | os.PathLike | None = None) -> AUEstimator:
    """The estimator at `path`, or the one shipped with the package."""
    from exprengine.models.weights import read_safetensors
    if path is None:
        from importlib import resources
        path = resources.files("exprengine") / "assets" / "au_estimator.safetensors"
    meta, tensors = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not an exprengine AU estimator")
    model = AUEstimator(tuple(json.loads(meta["widths"])))
    model.load_state_dict(tensors)
    model.report = json.loads(meta.get("report", "{}"))
    return model.eval()
