"""`exprengine train --model lats-small`: Lifespan Age Transformation Synthesis training (SPEC section 8).

Written from the facts of the public reference code (Or-El et al., ECCV 2020,
github.com/royorel/Lifespan_Age_Transformation_Synthesis: `models/LATS_model.py`,
`models/networks.py`, `options/train_options.py`, `train.py`; no code copied). Per step, with
x a real image of class c, c' != c its target class, G = (identity encoder E_id, age encoder
E_age, mapping M, decoder) and the age codes z(c) (`lats.age_code`: 50 ones per class, plus
N(0, 0.2^2) noise drawn afresh for every code, as `get_conditions` does):

    critic (`update_D`)     x' = G(x, z(c'))  (no gradient)
        L_D = softplus(D(x')[c']) + softplus(-D(x)[c])            the selective-class non-saturating loss
              + l_r1 * sum_pixels (d mean(D(x)) / dx)^2 / N        R1 on real images (all six logits' mean)
    generator (`update_G`)  f = E_id(x), r = decode(f, z_o(c)), x' = decode(f, z_g(c')),
                            y = decode(E_id(x'), z_y(c))
        L_G = softplus(-D(x')[c'])                                  adversarial
              + l_rec |r - x|_1 + l_cyc |y - x|_1                   self-reconstruction, cycle to the source age
              + l_id |E_id(x') - f|_1                               identity features kept
              + l_age (|E_age(x') - z_g(c')|_1 + |E_age(x) - z_o(c)|_1)   age codes read back

(|.|_1 the mean absolute difference; softplus(t) = log(1 + e^t); D(.)[k] the critic's logit of
class k). The reference's weights: l_rec = l_cyc = 10, l_id = l_age = 1, l_r1 = 10. Adam with
betas (0, 0.999), lr 1e-3; the mapping network and the modulations' affine layers
(`decoder.mlp`, `mlp_class_std` there; `mapping.*`, `*.affine.*` here) at lr * 0.01; the rate
halves after epochs 50 and 100 of 400, here after 1/8 and 1/4 of the steps. One critic update
then one generator update per step, on the same images. The running generator (an exponential
moving average of G's parameters, decay 0.999, started as a copy of G) is what the reference's
test.py loads (`latest_net_g_running.pth`): it is what `generator.safetensors` holds.

Where ours differs, and why: the cycle code z_y is drawn afresh (the reference reuses the other
half of its batch's generation code, which has the same class and distribution); each image's
target class is drawn on its own (the reference pairs an image of class A with one of class B
and swaps their classes: each image's class and target have the same distribution);
data-parallel training takes the critic's minibatch statistic over the *global* batch (the
reference's DataParallel took it per GPU), so K processes compute what one process does.

Data (`age_training_data`): the synthetic age world (`SyntheticAgeFaces`: each sample's target
class is its own; its renderer's face at the target class's centre age is the ground truth,
logged as `truth_l1` = |x' - truth|_1, never a loss) or a folder in the reference's class-folder
layout (`AgeFolder`: class uniform over the six, target uniform over the other five, image
uniform within the class, as the reference's `MulticlassUnalignedDataset` draws). Images are
flipped left-right with probability 1/2 (the reference's RandomHorizontalFlip). The objective
"paired" (synthetic only) replaces the critic by l_paired |x' - truth|_1: no critic updates.

Everything a step draws (images, classes, flips, code noise) is a function of (seed, step), so a
resumed run continues exactly; checkpoints (generator, running generator, critic, both Adam
states, step, config, loss log; safetensors, no pickle) are written atomically. Several
processes under torchrun each compute their shard of the global batch (`distributed`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from exprengine.ages import NUM_AGE_CLASSES, class_label
from exprengine.errors import UserError
from exprengine.models.lats import LATSConfig, LATSDiscriminator, LATSGenerator, age_code, lats_config
from exprengine.models.lats_layers import LEAK, minibatch_stddev
from exprengine.training.distributed import World, world_from_environment

CHECKPOINT = "checkpoint.safetensors"
GENERATOR = "generator.safetensors"       # the running (moving-average) generator
CHECKPOINT_FORMAT = "exprengine-lats-train-checkpoint"
CHECKPOINT_VERSION = 1
OBJECTIVES = ("gan", "paired")
#: Image sizes a LATS model trains at (the critic ends at 4x4 after log2(S) - 2 halvings).
IMAGE_SIZES = (32, 64, 128, 256)
#: The most samples a pool of rendered faces may hold (`LATSTrainConfig.pool`).
MAX_POOL = 1_000_000
#: The data spec of the synthetic age world.
SYNTHETIC_AGE = "synthetic-age"
#: Samples drawn per step and class: images of the step, flips, four age codes' noise.
_CODES = 4                                # critic's generation code; generator's generation, source, cycle codes


@dataclass
class LATSTrainConfig:
    """One LATS training run's settings (saved in its checkpoint, `to_dict`/`from_dict`); the
    defaults are the reference's (module docstring) unless said otherwise."""
    model: str = "lats-small"             # "lats" or "lats-small" (exprengine.models.lats)
    objective: str = "gan"                # "gan" (the reference's losses) | "paired" (synthetic truth, no critic)
    data: str = SYNTHETIC_AGE             # synthetic-age[:SEED[:IDENTITIES]] or an age-class folder
    steps: int = 100_000                  # one critic and one generator update each
    batch: int = 12                       # images per step, all processes together (the reference: 6 pairs)
    lr: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.999
    mapping_lr: float = 0.01              # learning-rate factor of the mapping network and the affine layers
    decay_at: tuple[float, ...] = (0.125, 0.25)   # fractions of `steps` after which the rate is multiplied by:
    decay_gamma: float = 0.5
    lambda_rec: float = 10.0
    lambda_cycle: float = 10.0
    lambda_id: float = 1.0
    lambda_age: float = 1.0
    lambda_r1: float = 10.0
    lambda_paired: float = 10.0           # objective "paired": L1 to the renderer's aged face
    code_noise: float = 0.2               # the age codes' noise (the reference's noise_sigma)
    ema_decay: float = 0.999
    flip: bool = True
    init: str | None = None               # start from a generator's weights (ours, or the authors' .pth)
    seed: int = 0
    checkpoint_every: int = 1000
    sample_every: int = 1000
    log_every: int = 10
    image_size: int | None = None         # None: the model's (256); the synthetic world renders at most 128
    pool: int | None = None               # synthetic world: draw from this many samples rendered once (PooledAgeFaces)

    def __post_init__(self):
        self.decay_at = tuple(self.decay_at)

    def model_config(self) -> LATSConfig:
        """The model's LATSConfig at this run's image size (`lats_model_config`)."""
        return lats_model_config(self.model, self.image_size)

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (`decay_at` a list), as the checkpoint stores them."""
        d = dataclasses.asdict(self)
        d["decay_at"] = list(self.decay_at)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LATSTrainConfig":
        """The config from `to_dict()`'s form, read from a checkpoint: every field checked for type
        and bounds. Raises UserError."""
        if not isinstance(d, dict):
            raise UserError(f"a LATS training config must be a JSON object, not {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        d = {**{k: v for k, v in _ADDED_LATER.items() if k not in d}, **d}
        wrong = sorted(str(k)[:40] for k in set(d) ^ known)
        if wrong:
            raise UserError(f"the LATS training config has unknown or missing fields ({', '.join(wrong[:3])})")
        for key, value in d.items():
            if value is None and key in ("init", "image_size", "pool"):
                continue
            check = _FIELD_CHECKS[key]
            if not check(value):
                raise UserError(f"the LATS training config's {key} is {str(value)[:40]}, not {check.__doc__}")
        config = cls(**d)
        config.model_config()                 # an unknown model or image size is a UserError
        if config.objective not in OBJECTIVES:
            raise UserError(f"the LATS training config's objective is {config.objective!r}, "
                            f"not one of {', '.join(OBJECTIVES)}")
        return config


def _whole(low: int, high: int):
    def check(v) -> bool:
        return type(v) is int and low <= v <= high
    check.__doc__ = f"a whole number in {low}..{high}"
    return check


def _real(low: float, high: float):
    def check(v) -> bool:
        return type(v) in (int, float) and math.isfinite(v) and low <= v <= high
    check.__doc__ = f"a number in {low:g}..{high:g}"
    return check


def _text(v) -> bool:
    """a text of 1 to 4096 characters"""
    return isinstance(v, str) and 1 <= len(v) <= 4096


def _flag(v) -> bool:
    """true or false"""
    return type(v) is bool


def _fractions(v) -> bool:
    """a list of at most 16 fractions in 0..1"""
    return isinstance(v, (list, tuple)) and len(v) <= 16 and all(_real(0.0, 1.0)(f) for f in v)


#: Fields added after runs were written, and the value that reproduces those runs when missing.
_ADDED_LATER = {"pool": None}

_FIELD_CHECKS = {
    "model": _text, "objective": _text, "data": _text, "init": _text, "flip": _flag, "decay_at": _fractions,
    "steps": _whole(1, 1_000_000_000), "batch": _whole(1, 4096), "lr": _real(1e-12, 1.0),
    "beta1": _real(0.0, 0.999999), "beta2": _real(0.0, 0.999999), "mapping_lr": _real(0.0, 1.0),
    "decay_gamma": _real(0.0, 1.0), "code_noise": _real(0.0, 10.0), "ema_decay": _real(0.0, 1.0),
    **{f"lambda_{k}": _real(0.0, 1e9) for k in ("rec", "cycle", "id", "age", "r1", "paired")},
    "seed": _whole(0, 2**32 - 1), "checkpoint_every": _whole(1, 1_000_000_000),
    "sample_every": _whole(1, 1_000_000_000), "log_every": _whole(1, 1_000_000_000),
    "image_size": lambda v: type(v) is int and v in IMAGE_SIZES, "pool": _whole(1, MAX_POOL),
}
_FIELD_CHECKS["image_size"].__doc__ = f"one of {', '.join(map(str, IMAGE_SIZES))}"


def lats_model_config(model: str, image_size: int | None = None) -> LATSConfig:
    """The registered LATS model `model` ("lats", "lats-small") at `image_size` (None: its own,
    256): the generator is unchanged (it is fully convolutional), the critic keeps the first
    log2(S) - 1 of its widths so that it still ends at 4x4. UserError for an unknown model or a
    size not in IMAGE_SIZES."""
    base = lats_config(model)
    if image_size is None or image_size == base.image_size:
        return base
    if image_size not in IMAGE_SIZES:
        raise UserError(f"`image_size` must be one of {', '.join(map(str, IMAGE_SIZES))} for a LATS model, "
                        f"not {image_size}")
    dims = base.discriminator_dims
    count = int(math.log2(image_size)) - 1
    dims = dims[:count] + (dims[-1],) * max(0, count - len(dims))
    return dataclasses.replace(base, image_size=image_size, discriminator_dims=dims)


# --- data ---------------------------------------------------------------------------------------
def synthetic_age_world(spec: str) -> tuple[int, int] | None:
    """(world seed, number of identities) of a "synthetic-age[:SEED[:IDENTITIES]]" data spec
    (default seed 0, 1000 identities; a run trains on the first 90 % and holds out the rest), or
    None for any other data set. UserError for a malformed synthetic-age spec."""
    if not (spec == SYNTHETIC_AGE or spec.startswith(SYNTHETIC_AGE + ":")):
        return None
    parts = spec.split(":")[1:]
    if len(parts) > 2 or not all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts):
        raise UserError(f"`spec` {spec}: expected {SYNTHETIC_AGE}[:SEED[:IDENTITIES]]")
    seed = int(parts[0]) if parts else 0
    identities = int(parts[1]) if len(parts) > 1 else 1000
    if not 0 <= seed < 2**32 or not 2 <= identities <= 10_000_000:
        raise UserError(f"`spec` {spec}: the seed must be in 0..{2**32 - 1} and the identities in 2..10000000")
    return seed, identities


def age_training_data(spec: str, size: int, pool: int | None = None, progress: bool = True):
    """The training set a LATS run's `spec` names, for images of `size` pixels:

    - "synthetic-age[:SEED[:IDENTITIES]]" (default seed 0, 1000 identities): `SyntheticAgeFaces`
      of the first 90 % of the identities (the last 10 % held out, as `exprengine train` does for
      expressions), rendered at min(size, 128) (the renderer's 128 x 128; larger sizes are
      enlarged from it by Lanczos, `preprocess.resize_face`, when the images are loaded); with
      `pool`, its first `pool` samples rendered once (`PooledAgeFaces`, a progress bar on stderr
      unless not `progress`; rendered when training starts, after the run's checks) instead of
      1,000,000 rendered at every draw;
    - a directory in the reference's class-folder layout: `AgeFolder(spec, "train", size)`.

    UserError for a malformed synthetic spec, the expression world's "synthetic" (no ages), a
    `pool` with a folder (its images are read, not rendered) or outside 1..MAX_POOL, and
    anything AgeFolder refuses (not a directory, a class folder missing or empty)."""
    from exprengine.data.age_faces import AgeFolder, PooledAgeFaces, SyntheticAgeFaces
    if pool is not None and not (type(pool) is int and 1 <= pool <= MAX_POOL):
        raise UserError(f"`pool` must be a whole number in 1..{MAX_POOL}, not {str(pool)[:40]}")
    world = synthetic_age_world(spec)
    if world is not None:
        seed, identities = world
        render_size = min(size, 128)
        if 128 % render_size or size % render_size:
            raise UserError(f"synthetic faces are rendered at 128x128: the image size must divide 128 or be a "
                            f"multiple of it, not {size}")
        train_ids = identities - max(1, identities // 10)
        if pool is not None:
            return PooledAgeFaces(pool, seed, (0, train_ids), size=render_size, progress=progress)
        return SyntheticAgeFaces(1_000_000, seed, (0, train_ids), size=render_size)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        raise UserError(f"`spec` {spec} is the expression world, without ages; a LATS model trains on "
                        f"{SYNTHETIC_AGE}[:SEED[:IDENTITIES]] or a folder of age classes (train0-2/ ... train50-69/)")
    if pool is not None:
        raise UserError(f"`pool` renders synthetic faces once; the data set {spec} is read from its folder, "
                        "so it takes no pool")
    return AgeFolder(spec, "train", size)


def _is_synthetic(data) -> bool:
    return hasattr(data, "render_at") and hasattr(data, "target_class")


def draw_samples(data, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data indices, source classes, target classes), each int64 [count], drawn with `rng`:
    the synthetic world's samples with their own target classes, or (a class folder) a class
    uniform over the six, a target uniform over the other five and an image of the class."""
    if _is_synthetic(data):
        idx = rng.integers(0, len(data), count)
        source = np.array([data.source_class(int(i)) for i in idx], np.int64)
        target = np.array([data.target_class(int(i)) for i in idx], np.int64)
        return idx.astype(np.int64), source, target
    source = rng.integers(0, NUM_AGE_CLASSES, count)
    target = (source + rng.integers(1, NUM_AGE_CLASSES, count)) % NUM_AGE_CLASSES
    where = rng.random(count)
    members = _class_members(data)
    idx = np.array([members[c][int(u * len(members[c]))] for c, u in zip(source, where)], np.int64)
    return idx, source.astype(np.int64), target.astype(np.int64)


def _class_members(data) -> list[list[int]]:
    cached = getattr(data, "_lats_members", None)
    if cached is None:
        classes = list(data.classes)
        cached = [[i for i, c in enumerate(classes) if c == k] for k in range(NUM_AGE_CLASSES)]
        data._lats_members = cached
    return cached


def load_images(data, idx, size: int, flips=None, truth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 [n,S,S,3] images, uint8 [n,S,S,3] ground truth or None) of data indices `idx` at
    `size` pixels, flipped left-right where `flips` is true. The synthetic world gives each
    identity at its base age (and, with `truth`, at its target class's centre age), rendered in
    one call or read from its pool (`render_samples`); a class folder has no truth."""
    idx = [int(i) for i in idx]
    if _is_synthetic(data):
        images, truths = data.render_samples(idx, truth)
        if size != data.size:
            from exprengine.preprocess import resize_face
            images = np.stack([resize_face(f, size) for f in images])
            truths = None if truths is None else np.stack([resize_face(f, size) for f in truths])
    else:
        images, truths = np.stack([data.image(i) for i in idx]), None
    if flips is not None:
        images = np.where(np.asarray(flips)[:, None, None, None], images[:, :, ::-1], images)
        if truths is not None:
            truths = np.where(np.asarray(flips)[:, None, None, None], truths[:, :, ::-1], truths)
    return np.ascontiguousarray(images), None if truths is None else np.ascontiguousarray(truths)


# --- the critic over the global batch -------------------------------------------------------------
def critic_logits(critic: LATSDiscriminator, images: torch.Tensor, world: World | None = None) -> torch.Tensor:
    """The critic's class logits [n, 6] of this process's images [n, 3, S, S], its minibatch
    statistic taken over every process's images (`World.sum`); alone, exactly `critic(images)`.
    Follows `LATSDiscriminator.forward` layer by layer (tests check they agree)."""
    world = world or World()
    x = F.leaky_relu(critic.from_rgb(images), LEAK)
    for block in critic.blocks:
        x = block(x)
    if world.size == 1:
        x = minibatch_stddev(x)
    else:                                   # the same statistic over the global batch, two passes
        n = x.shape[0] * world.size
        mean = world.sum(x.sum(dim=0)) / n
        var = world.sum((x - mean).pow(2).sum(dim=0)) / n
        std = torch.sqrt(var + 1e-8).mean()
        x = torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)
    x = F.leaky_relu(critic.head(x), LEAK)
    return F.leaky_relu(critic.classes(x), LEAK).flatten(1)


def selective_class_loss(logits: torch.Tensor, classes: torch.Tensor, real: bool) -> torch.Tensor:
    """The reference's SelectiveClassesNonSatGANLoss: each image's logit of its class k
    (logits [N, C], classes [N] int64) -> mean softplus(-D[k]) for `real`, mean softplus(D[k]) else."""
    picked = logits.gather(1, classes[:, None])[:, 0]
    return F.softplus(-picked if real else picked).mean()


# --- a step's draw ----------------------------------------------------------------------------------
def step_arrays(data, config: LATSTrainConfig, part: slice, step: int) -> dict:
    """Everything step `step` of a run with `config` draws, for the shard `part` of its global
    batch, as CPU arrays (what `LATSTrainer.batch` puts on the device): "images" uint8
    [n,S,S,3], "truth" uint8 [n,S,S,3] (the synthetic world) or None, "source" and "target"
    int64 [n], "noise" float32 [4, n, code_dim] (the four age codes' noise), "indices" int64 [n].
    A function of (config.seed, step) only, so any process, or a loader's worker, draws the same."""
    model = config.model_config()
    size, code_dim = model.image_size, model.code_dim
    rng = np.random.default_rng([config.seed, step])
    idx, source, target = draw_samples(data, rng, config.batch)
    flips = rng.random(config.batch) < 0.5 if config.flip else np.zeros(config.batch, bool)
    noise = rng.standard_normal((_CODES, config.batch, code_dim)).astype(np.float32) * config.code_noise
    idx, source, target, flips, noise = idx[part], source[part], target[part], flips[part], noise[:, part]
    images, truth = load_images(data, idx, size, flips, truth=_is_synthetic(data))
    return {"images": images, "truth": truth, "source": source, "target": target, "noise": noise, "indices": idx}


# --- the trainer ------------------------------------------------------------------------------------
class LATSTrainer:
    """The networks, optimisers and data of one LATS run; `train(until)` advances it.

        t = LATSTrainer(LATSTrainConfig(steps=1000, batch=8, image_size=64), age_training_data(SYNTHETIC_AGE, 64), "runs/age")
        t.train()        # checkpoint.safetensors, generator.safetensors (running G), samples/, losses.png
    """

    def __init__(self, config: LATSTrainConfig, data, out: str | os.PathLike, device: str = "cpu",
                 world: World | None = None, loader_workers: int = 1):
        self.config = config
        self.loader_workers = loader_workers      # 0 or 1 (`prefetch.step_draws`); not a setting of the run
        self.data = data
        self.out = Path(out)
        self.device = torch.device(device)
        self.world = world or World()
        if config.objective not in OBJECTIVES:
            raise UserError(f"unknown objective {config.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        self.model_config = model_config = config.model_config()
        size = model_config.image_size
        self.synthetic = _is_synthetic(data)
        if config.objective == "paired" and not self.synthetic:
            raise UserError("the paired objective needs the synthetic age world (it renders the true aged face); "
                            "train a folder of age classes with the gan objective")
        data_size = getattr(data, "size", None)
        if not (data_size == size or self.synthetic and data_size == min(size, 128) and size % data_size == 0):
            raise UserError(f"the data set's images are {data_size}x{data_size}, the model takes {size}x{size}")
        if len(data) < 1:
            raise UserError("the age data set holds no images")
        torch.manual_seed(config.seed)           # initial weights only; steps draw from (seed, step)
        self.generator = LATSGenerator(model_config).to(self.device).train()
        if config.init is not None:
            self._load_init(config.init)
        self.critic = LATSDiscriminator(model_config).to(self.device).train()
        self.world.broadcast(self.generator, self.critic)
        self.ema = LATSGenerator(model_config).to(self.device).eval().requires_grad_(False)
        self.ema.load_state_dict(self.generator.state_dict())
        slow = [p for n, p in self.generator.named_parameters() if _slow(n)]
        fast = [p for n, p in self.generator.named_parameters() if not _slow(n)]
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam([{"params": fast}, {"params": slow}], lr=config.lr, betas=betas)
        self._lr_factors = (1.0, config.mapping_lr)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr, betas=betas)
        self.step = 0
        self.log: list[dict] = []
        self._pending: list[dict] = []

    def _load_init(self, path: str) -> None:
        """Fine-tuning: the generator (and the running generator) start from `path`'s weights (our
        .safetensors of a LATS model or the authors' generator file, `import_lats_checkpoint`)."""
        from exprengine.models.lats import import_lats_checkpoint
        source = import_lats_checkpoint(path)
        if source.config.generator_fields() != self.model_config.generator_fields():
            raise UserError(f"`init` {path} holds a {source.config.name} generator with another shape than the "
                            f"one being trained ({self.model_config.name}); pass the same `model`")
        self.generator.load_state_dict(source.state_dict())

    @property
    def dtype(self) -> torch.dtype:
        """The networks' dtype, which batches are cast to: float32, or float64 when they were built
        under `torch.set_default_dtype(torch.float64)` (exactness tests)."""
        return next(self.generator.parameters()).dtype

    # --- schedule and per-step draws ------------------------------------------------------------
    def learning_rate(self, step: int) -> float:
        """The base learning rate at `step`: `lr` times `decay_gamma` for each `decay_at` fraction
        of `steps` already passed (the mapping and affine layers take `mapping_lr` times this)."""
        c = self.config
        return c.lr * c.decay_gamma ** sum(step >= round(f * c.steps) for f in c.decay_at)

    def batch(self, step: int, arrays: dict | None = None) -> dict:
        """This process's shard of `step`'s global batch (`World.shard`), on the device:
        real [n,3,S,S] in [-1,1], source and target classes [n] int64, the four age codes
        [n, 300] (critic's generation code; generator's generation, source and cycle codes, each
        with fresh N(0, code_noise^2) noise), truth [n,3,S,S] (synthetic only, else None), and
        the data indices. `arrays`: `step_arrays`' draw of this step when already made (by the
        prefetching worker of `train`), else it is drawn here."""
        if arrays is None:
            arrays = step_arrays(self.data, self.config, self.world.shard(self.config.batch), step)
        from exprengine.pixels import network_tensor
        per = self.model_config.code_per_class
        source, target, truth = arrays["source"], arrays["target"], arrays["truth"]
        clean = [age_code(k, per) for k in (target, target, source, source)]
        dtype = self.dtype
        codes = [(code + torch.from_numpy(n)).to(self.device, dtype) for code, n in zip(clean, arrays["noise"])]
        return {"real": network_tensor(arrays["images"]).to(self.device, dtype),
                "source": torch.from_numpy(source).to(self.device), "target": torch.from_numpy(target).to(self.device),
                "code_critic": codes[0], "code_gen": codes[1], "code_source": codes[2], "code_cycle": codes[3],
                "truth": None if truth is None else network_tensor(truth).to(self.device, dtype),
                "indices": arrays["indices"]}

    # --- one step --------------------------------------------------------------------------------
    def train_step(self, arrays: dict | None = None) -> dict[str, float]:
        """One step at `self.step` (then advanced by one; `arrays`: its `step_arrays` draw when
        already made): a critic update ("gan": d_real, d_fake,
        d_r1) then a generator update (g_adversarial ("gan"), g_paired ("paired"), g_rec,
        g_cycle, g_identity, g_age: each computed and reported only when its `lambda_*` is not 0)
        and the running generator's update; `truth_l1` on the
        synthetic world. Returns those values (means over the global batch) as floats."""
        c, world = self.config, self.world
        for opt, factors in ((self.opt_g, self._lr_factors), (self.opt_d, (1.0,))):
            for group, factor in zip(opt.param_groups, factors):
                group["lr"] = self.learning_rate(self.step) * factor
        b = self.batch(self.step, arrays)
        real, source, target = b["real"], b["source"], b["target"]
        out: dict[str, float] = {}
        g = self.generator
        if c.objective == "gan":
            with torch.no_grad():
                fake = g(real, b["code_critic"])
            real_in = real.detach().requires_grad_(True)
            d_fake = selective_class_loss(critic_logits(self.critic, fake, world), target, real=False)
            real_logits = critic_logits(self.critic, real_in, world)
            d_real = selective_class_loss(real_logits, source, real=True)
            (grad,) = torch.autograd.grad(real_logits.mean() / world.size, real_in, create_graph=True)
            d_r1 = grad.pow(2).sum() / real.shape[0]
            loss_d = d_fake + d_real + c.lambda_r1 * d_r1
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            world.average_gradients(self.critic.parameters())
            self.opt_d.step()
            out.update(d_real=d_real.item(), d_fake=d_fake.item(), d_r1=d_r1.item())
        # generator: self-reconstruction and generation share the identity features
        n = real.shape[0]
        features = g.encode(real)
        styles = g.age_style(torch.cat([b["code_source"], b["code_gen"], b["code_cycle"]]))
        decoded = g.decode(torch.cat([features, features]), styles[:2 * n])
        rec, gen = decoded[:n], decoded[n:]
        terms = {"g_rec": (c.lambda_rec, lambda: (rec - real).abs().mean())}
        if c.lambda_cycle or c.lambda_id:
            gen_features = g.encode(gen)
            terms["g_cycle"] = (c.lambda_cycle, lambda: (g.decode(gen_features, styles[2 * n:]) - real).abs().mean())
            terms["g_identity"] = (c.lambda_id, lambda: (gen_features - features).abs().mean())
        terms["g_age"] = (c.lambda_age, lambda: (g.age_encoder(gen) - b["code_gen"]).abs().mean()
                          + (g.age_encoder(real) - b["code_source"]).abs().mean())
        loss_g = real.new_zeros(())
        for name, (weight, term) in terms.items():
            if weight:                                 # a term weighted 0 is neither computed nor reported
                value = term()
                loss_g = loss_g + weight * value
                out[name] = value.item()
        if c.objective == "gan":
            self.critic.requires_grad_(False)          # its gradients here would be thrown away
            try:
                g_adv = selective_class_loss(critic_logits(self.critic, gen, world), target, real=True)
            finally:
                self.critic.requires_grad_(True)
            loss_g = loss_g + g_adv
            out["g_adversarial"] = g_adv.item()
        if b["truth"] is not None:
            truth_l1 = (gen - b["truth"]).abs().mean()
            if c.objective == "paired":
                loss_g = loss_g + c.lambda_paired * truth_l1
                out["g_paired"] = truth_l1.item()
            out["truth_l1"] = truth_l1.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        world.average_gradients(g.parameters())
        self.opt_g.step()
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), g.parameters()):
                p_ema.mul_(c.ema_decay).add_(p.detach(), alpha=1.0 - c.ema_decay)
        self.step += 1
        return world.mean_values(out)

    # --- the loop ----------------------------------------------------------------------------------
    def train(self, until: int | None = None, progress: bool = True) -> None:
        """Advance to step `until` (default: the config's steps), checkpointing and sampling as
        configured. A run that fails before writing anything leaves no run directory it created."""
        until = self.config.steps if until is None else min(until, self.config.steps)
        created = not self.out.exists()
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._train(until, progress and self.world.main)
        except BaseException:
            if self.world.main and created and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            raise

    def _train(self, until: int, progress: bool) -> None:
        from tqdm import tqdm
        if hasattr(self.data, "fill"):          # a pool is rendered now, after every check of the run
            self.data.fill(self.world)
        with tqdm(total=until, initial=self.step, desc="training", unit="step", disable=None if progress else True,
                  dynamic_ncols=True) as bar:
            try:
                c = self.config
                draws = self._draws(until)
                while self.step < until:
                    self._pending.append(self.train_step(next(draws)))
                    if self.step % c.log_every == 0 or self.step == until:
                        self._flush_log()
                        bar.set_postfix({k: f"{v:.3g}" for k, v in self.log[-1].items()
                                         if k in ("d_real", "g_adversarial", "g_rec", "g_paired", "truth_l1")})
                    if self.step % c.checkpoint_every == 0 or self.step == until:
                        self.save()
                    if self.step % c.sample_every == 0 or self.step == until:
                        self.write_samples()
                    bar.update(1)
            except BaseException:
                bar.leave = False
                raise

    def _draws(self, until: int):
        """`step_arrays` of steps self.step .. until - 1, in order, drawn ahead by a worker
        process when `loader_workers` is 1 (`prefetch.step_draws`)."""
        from functools import partial

        from exprengine.training.prefetch import step_draws
        part = self.world.shard(self.config.batch)
        return step_draws(partial(step_arrays, self.data, self.config, part), self.step, until, self.loader_workers)

    def _flush_log(self) -> None:
        if not self._pending:
            return
        keys = sorted({k for v in self._pending for k in v})
        entry = {"step": self.step, "lr": self.learning_rate(self.step - 1)}
        for k in keys:
            entry[k] = float(np.mean([v[k] for v in self._pending if k in v]))
        self.log.append(entry)
        self._pending = []

    # --- checkpoints -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything the checkpoint stores as tensors, on the CPU and contiguous: "generator.*",
        "ema.*" (the running generator), "critic.*", and both Adam states ("opt_g.<i>.<key>",
        "opt_d.<i>.<key>")."""
        tensors = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        tensors.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            for index, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value)
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def save(self) -> Path:
        """Write the checkpoint, the running generator's weights (`generator.safetensors`) and the
        loss curves, each atomically (rank 0; every rank keeps the same loss log)."""
        from safetensors.torch import save

        from exprengine.files import write_bytes
        from exprengine.models.weights import save_weights
        from exprengine.training.trainer import write_loss_curves
        self._flush_log()
        path = self.out / CHECKPOINT
        if not self.world.main:
            return path
        metadata = {"format": CHECKPOINT_FORMAT, "format_version": str(CHECKPOINT_VERSION),
                    "step": str(self.step), "config": json.dumps(self.config.to_dict()),
                    "model_config": json.dumps(self.model_config.to_dict()), "log": json.dumps(self.log)}
        write_bytes(path, save(self.state_tensors(), metadata=metadata))
        save_weights(self.ema, self.out / GENERATOR,
                     extra={"training_step": self.step, "training_config": self.config.to_dict(),
                            "weights": "running generator (exponential moving average, decay "
                                       f"{self.config.ema_decay})"})
        write_loss_curves(self.log, self.out / "losses.png")
        return path

    @staticmethod
    def read_checkpoint(out: str | os.PathLike, tensors: bool = True) -> tuple[dict, dict]:
        """(metadata, tensors) of `out/checkpoint.safetensors`, checked to be a LATS run's.
        UserError for a missing, unreadable or foreign file."""
        from exprengine.training.trainer import read_run_checkpoint
        return read_run_checkpoint(out, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "an exprengine LATS training", tensors)

    @classmethod
    def checkpoint_config(cls, out: str | os.PathLike) -> LATSTrainConfig:
        """The checked LATSTrainConfig of the run in `out` (UserError for a missing or corrupt one)."""
        from exprengine.training.trainer import _json_metadata
        meta = cls.read_checkpoint(out, tensors=False)[0]
        return LATSTrainConfig.from_dict(_json_metadata(meta, "config", Path(out) / CHECKPOINT))

    @classmethod
    def checkpoint_generator(cls, out: str | os.PathLike, running: bool = True):
        """The LATSGenerator stored in the run `out`'s checkpoint, on the CPU in eval mode: the
        running generator (`running`, "ema.*", what `generator.safetensors` holds) or the trained
        one ("generator.*"). A short run's running average still holds ema_decay^steps of the
        initial weights (0.999^2000 = 13 %), so its trained generator can be the better one.
        UserError for a missing or corrupt checkpoint."""
        from exprengine.models.lats import LATSGenerator
        from exprengine.models.weights import load_strictly
        from exprengine.training.trainer import _json_metadata
        meta, tensors = cls.read_checkpoint(out)
        path = Path(out) / CHECKPOINT
        config = LATSTrainConfig.from_dict(_json_metadata(meta, "config", path))
        head = "ema." if running else "generator."
        model = LATSGenerator(config.model_config())
        load_strictly(model, {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)},
                      f"{path} ({'running ' if running else ''}generator)")
        return model.eval()

    @classmethod
    def resume(cls, out: str | os.PathLike, data, device: str = "cpu", steps: int | None = None,
               world: World | None = None) -> "LATSTrainer":
        """Rebuild a run from `out/checkpoint.safetensors` (optionally with a new step budget
        `steps`). Everything read back is checked (config, step, log, every tensor's name and
        shape, the optimiser state against the parameters): a corrupt checkpoint is a UserError."""
        from exprengine.models.weights import load_strictly
        from exprengine.training.trainer import _json_metadata, _optimizer_state
        meta, tensors = cls.read_checkpoint(out)
        path = Path(out) / CHECKPOINT
        config = LATSTrainConfig.from_dict(_json_metadata(meta, "config", path))
        step = meta.get("step", "")
        if not (isinstance(step, str) and step.isascii() and step.isdigit() and len(step) <= 10):
            raise UserError(f"checkpoint {path} has no valid step count (a whole number) in its metadata")
        log = _json_metadata(meta, "log", path)
        if not (isinstance(log, list) and all(isinstance(e, dict) and type(e.get("step")) is int and all(
                isinstance(k, str) and type(v) in (int, float) for k, v in e.items()) for e in log)):
            raise UserError(f"checkpoint {path} has a corrupt loss log (a list of step records) in its metadata")
        if steps is not None:
            config.steps = steps
        init, config.init = config.init, None          # the checkpoint's weights replace the initial ones
        trainer = cls(config, data, out, device, world)
        trainer.config.init = init
        parts: dict[str, dict[str, torch.Tensor]] = {"generator": {}, "ema": {}, "critic": {}, "opt_g": {}, "opt_d": {}}
        for k, v in tensors.items():
            head, _, rest = k.partition(".")
            if head not in parts or not rest:
                raise UserError(f"checkpoint {path} has an unexpected tensor {k[:80]}")
            parts[head][rest] = v
        load_strictly(trainer.generator, parts["generator"], f"{path} (generator)")
        load_strictly(trainer.ema, parts["ema"], f"{path} (running generator)")
        load_strictly(trainer.critic, parts["critic"], f"{path} (critic)")
        for name, opt in (("opt_g", trainer.opt_g), ("opt_d", trainer.opt_d)):
            opt.load_state_dict({"state": _optimizer_state(parts[name], opt, f"{path} ({name})", trainer.device),
                                 "param_groups": opt.state_dict()["param_groups"]})
        trainer.step = int(step)
        trainer.log = log
        return trainer

    # --- what people look at ---------------------------------------------------------------------
    def sample_indices(self, rows: int = 4) -> list[int]:
        """The data indices the sample sheets show: `rows` spread evenly over the data set (a class
        folder is sorted by class, so they span the classes)."""
        n = len(self.data)
        return sorted({int(i * n // rows) for i in range(min(rows, n))})

    @torch.no_grad()
    def write_samples(self, rows: int = 4) -> Path:
        """`samples/step_NNNNNNN.png` (rank 0): one row per sample image, its input (labelled with
        its class) then the running generator's output at each of the six classes (noiseless codes)."""
        from exprengine.media import contact_sheet, write_image
        from exprengine.pixels import network_tensor, to_uint8_nhwc
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        if not self.world.main:
            return path
        size, tiles, labels = self.model_config.image_size, [], []
        codes = self.ema.age_code(range(NUM_AGE_CLASSES)).to(self.dtype)
        for i in self.sample_indices(rows):
            image, _ = load_images(self.data, [i], size)
            source = self.data.source_class(i) if self.synthetic else self.data.classes[i]
            out = self.ema(network_tensor(image).to(self.device, self.dtype).expand(NUM_AGE_CLASSES, -1, -1, -1), codes)
            tiles += [image[0], *to_uint8_nhwc(out.float().cpu().numpy())]
            labels += [f"input {class_label(int(source))}", *(class_label(k) for k in range(NUM_AGE_CLASSES))]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, contact_sheet(np.stack(tiles), columns=NUM_AGE_CLASSES + 1, labels=labels))
        return path


def _slow(name: str) -> bool:
    """The generator parameters the reference trains at `mapping_lr` times the rate: the mapping
    network (`decoder.mlp`) and the modulations' affine layers (`mlp_class_std`)."""
    return name.startswith("mapping.") or ".affine." in name


def train_age_run(out: str | os.PathLike, config: LATSTrainConfig, device: str = "auto", *, resume: bool = False,
                  progress: bool = True) -> LATSTrainer:
    """Train the LATS run in directory `out` to its step budget and return its LATSTrainer
    (`.step`, `.config`, `.world`), as `trainer.train_run` does for the expression models.

    New run (`resume` False): `config` on the data `config.data` names (`age_training_data`), in
    `out` (created; UserError when it already holds a run's checkpoint). `resume`: the run in
    `out` continues exactly where its checkpoint stopped, with its own config; of `config` only
    `steps` is taken. `device`: "auto", "cpu" or "cuda". `progress`: a line on stderr saying
    where a resumed run starts, and the progress bar. Under torchrun each process trains its
    shard of every global batch of `batch` (a multiple of the number of processes) and rank 0
    writes the run. UserError when `out` is a file, for a missing or corrupt checkpoint, a data
    set that is not age data, or a batch that does not split evenly."""
    from exprengine.engines.backends import resolve_device
    device = resolve_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("`device` cuda needs an NVIDIA GPU, and none is visible")
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise UserError(f"`out` {out} is a file; give a directory for the run")
    if resume:
        saved = LATSTrainer.checkpoint_config(run)
        data = age_training_data(saved.data, saved.model_config().image_size, saved.pool, progress)
    else:
        if (run / CHECKPOINT).exists():
            raise UserError(f"{out} already holds a run; use `resume` to continue it or choose another `out`")
        saved = config
        data = age_training_data(config.data, config.model_config().image_size, config.pool, progress)
    world, device = world_from_environment(device)
    try:
        world.shard(saved.batch)
        if resume:
            trainer = LATSTrainer.resume(run, data, device, config.steps, world)
            if progress and world.main:
                print(f"resuming {out} at step {trainer.step} of {trainer.config.steps}", file=sys.stderr, flush=True)
        else:
            trainer = LATSTrainer(config, data, run, device, world)
        trainer.train(progress=progress)
        world.barrier()
    finally:
        world.close()
    return trainer


__all__ = ["CHECKPOINT", "GENERATOR", "IMAGE_SIZES", "LATSTrainConfig", "LATSTrainer", "OBJECTIVES", "SYNTHETIC_AGE",
           "age_training_data", "critic_logits", "draw_samples", "lats_model_config", "load_images",
           "selective_class_loss", "step_arrays", "synthetic_age_world", "train_age_run"]
