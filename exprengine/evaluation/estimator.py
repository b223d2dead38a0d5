"""What the independent estimators of the synthetic world share: the CNN, its training data and its file.

The AU estimator (`au_estimator`) and the apparent-age estimator (`age_estimator`) are the same
small CNN with another head, each trained only on the renderer's images of a world of its own
(a seed no generator is trained in), and each measured on identities it never saw:

    y = scale * W GAP(conv_s2(...conv_s2(x)))     x: 64x64 RGB in [-1,1] (128x128 faces area-downsampled)

An estimator's examples are drawn one at a time: example i of world `seed` shows identity
`rng.integers(*identities)` of that world, and a `draw(rng)` of the estimator's own gives its AUs,
its age and its label, all from `np.random.default_rng([seed, i])`, so any example can be
rendered again. A file is safetensors with the state dict and metadata: `format` (the kind of
estimator: "exprengine-au-estimator", "exprengine-age-estimator"), `widths` and `report` (JSON).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from exprengine.errors import UserError
from exprengine.pixels import network_tensor

INPUT_SIZE = 64
WIDTHS = (32, 64, 96, 128, 192)
#: Identities an estimator trains on, and the ones held out for its report (of its own world).
TRAIN_IDENTITIES = (0, 4000)
HELD_OUT_IDENTITIES = (4000, 4500)
#: The kinds of estimator file: `format` metadata -> what it is, in words.
KINDS = {"exprengine-au-estimator": "AU estimator", "exprengine-age-estimator": "age estimator"}

#: draw(rng) -> (AUs float32 [17] 0..5, age in years or None for `render`'s reference age, label float32 [K])
Draw = Callable[[np.random.Generator], tuple[np.ndarray, float | None, np.ndarray]]


class ConvEstimator(nn.Module):
    """Five stride-2 conv blocks (BatchNorm, ReLU), global average pooling, a linear head -> [N,outputs]
    times `scale` (the label's range: the head is trained on label / scale).

    A subclass names its kind: FORMAT, its file's `format` metadata (a key of `KINDS`)."""

    FORMAT = ""

    def __init__(self, outputs: int, scale: float, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(cin, outputs)
        self.widths, self.scale = tuple(widths), float(scale)
        self.report: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float [N,3,64,64] in [-1,1] -> [N,outputs]: the head's output * scale (not clamped).
        AssertionError for another input shape."""
        assert x.ndim == 4 and x.shape[1:] == (3, INPUT_SIZE, INPUT_SIZE), f"expected [N,3,64,64], got {tuple(x.shape)}"
        return self.head(self.trunk(x).mean(dim=(2, 3))) * self.scale

    @torch.no_grad()
    def estimate(self, faces: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 [N,S,S,3] faces -> float32 [N,outputs]. 128x128 faces are area-downsampled to
        64x64 exactly as in training; other sizes are resized by `preprocess.resize_face`.
        UserError if `faces` is not a uint8 array [N,S,S,3] of square faces."""
        from exprengine.data.synthetic import SIZE, resize_faces
        from exprengine.preprocess import resize_face
        faces = np.asarray(faces)
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[3] != 3 or faces.shape[1] != faces.shape[2]:
            raise UserError(f"`faces` must be uint8 [N,S,S,3] square RGB faces, got {faces.dtype} {faces.shape}")
        self.eval()
        out = [np.zeros((0, self.head.out_features), np.float32)]
        if len(faces) == 0:
            return out[0]
        if faces.shape[1] == SIZE:
            faces = resize_faces(faces, INPUT_SIZE)          # exactly the training resampling
        elif faces.shape[1] != INPUT_SIZE:
            faces = np.stack([resize_face(f, INPUT_SIZE) for f in faces])
        for s in range(0, len(faces), batch):
            out.append(self(network_tensor(faces[s:s + batch])).numpy())
        return np.concatenate(out).astype(np.float32)


def render_examples(seed: int, start: int, count: int, identities: tuple[int, int], draw: Draw):
    """Examples `start .. start+count-1` of world `seed`: (faces uint8 [count,64,64,3], labels
    float32 [count,K]). Example i shows identity `rng.integers(*identities)` of the world, with
    the AUs, age and label of `draw(rng)`, rng = default_rng([seed, i]): each depends on (seed, i)."""
    from exprengine.data.synthetic import Identity, render, resize_faces
    faces, aus, ages, labels = [], [], [], []
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        faces.append(Identity.sample(np.random.default_rng([seed, int(rng.integers(*identities))])))
        a, age, label = draw(rng)
        aus.append(a)
        ages.append(age)
        labels.append(label)
    aged = any(a is not None for a in ages)
    images = render(faces, np.stack(aus), age=np.array(ages, np.float64) if aged else None)
    return resize_faces(images, INPUT_SIZE), np.stack(labels).astype(np.float32)


def _render_chunk(args):
    return render_examples(*args)


def render_pool(seed: int, count: int, identities: tuple[int, int], draw: Draw, workers: int = 2,
                progress: bool = True):
    """`render_examples(seed, 0, count, identities, draw)` rendered in chunks of 256 by `workers`
    spawned processes (`draw` must be a module-level function): (faces uint8 [count,64,64,3],
    labels float32 [count,K])."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm
    chunks = [(seed, s, min(256, count - s), identities, draw) for s in range(0, count, 256)]
    faces, labels = [], []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool, \
            tqdm(total=count, desc="rendering", disable=not progress) as bar:
        for f, y in pool.map(_render_chunk, chunks):
            faces.append(f)
            labels.append(y)
            bar.update(len(y))
    return np.concatenate(faces), np.concatenate(labels)


def fit(model: ConvEstimator, faces: np.ndarray, labels: np.ndarray, steps: int, batch: int, seed: int,
        lr: float, flip: bool = False, progress: bool = True) -> ConvEstimator:
    """Train `model` on faces uint8 [N,64,64,3] with labels float32 [N,K] (in the model's units):
    AdamW (weight decay 1e-4) under a one-cycle schedule peaking at `lr`, `steps` batches of
    `batch` drawn with replacement, smooth-L1 on label / scale, each batch rolled sideways by
    -2..2 pixels and, with `flip`, each face mirrored left-right with probability 1/2."""
    from tqdm import tqdm
    x_all, y_all = network_tensor(faces), torch.from_numpy(labels)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc=KINDS.get(model.FORMAT, "estimator"), disable=not progress):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        shift = int(torch.randint(-2, 3, (1,), generator=gen))
        x = torch.roll(x, shift, dims=3)
        if flip:
            mirror = torch.rand(batch, generator=gen) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        loss = nn.functional.smooth_l1_loss(model(x) / model.scale, y / model.scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def save_estimator(model: ConvEstimator, path: str | os.PathLike, report: dict) -> None:
    """Write `model` to `path` as safetensors (its state dict, metadata: format `model.FORMAT`, its
    widths and `report` as JSON), atomically (`files.write_bytes`); `read_estimator` reads it back.
    UserError when `path` cannot be written (or the disk is full)."""
    from safetensors.torch import save

    from exprengine.files import write_bytes
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes(path, save(tensors, metadata={"format": model.FORMAT, "widths": json.dumps(list(model.widths)),
                                              "report": json.dumps(report)}))


def read_estimator(path: str | os.PathLike | None, cls: type[ConvEstimator], shipped: str) -> ConvEstimator:
    """The estimator of class `cls` at `path`, or the file `shipped` of the package's assets when
    `path` is None, in eval mode with its `report`. UserError (one sentence naming `path`) when
    the file is unreadable, or is not of `cls`'s kind (its `format` metadata is not `cls.FORMAT`)."""
    from exprengine.models.weights import read_safetensors
    if path is None:
        from importlib import resources
        path = resources.files("exprengine") / "assets" / shipped
    meta, tensors = read_safetensors(path)
    if meta.get("format") != cls.FORMAT:
        other, kind = KINDS.get(meta.get("format")), KINDS[cls.FORMAT]
        raise UserError(f"{path} is an exprengine {other}, not an {kind}" if other
                        else f"{path} is not an exprengine {kind}")
    model = cls(tuple(json.loads(meta["widths"])))
    model.load_state_dict(tensors)
    model.report = json.loads(meta.get("report", "{}"))
    return model.eval()
