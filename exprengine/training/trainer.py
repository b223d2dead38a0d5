"""`exprengine train`: GANimation training of any registry generator (SPEC section 4).

One *step* is one critic update; the generator is updated after every `critic_steps`-th:

    critic     L_D = -E[D(x)] + E[D(G(x, y'))] + l_gp GP + l_au ||D_au(x) - y||^2
    generator  L_G = -E[D(x')] + l_au ||D_au(x') - y'||^2 + l_cyc |G(x', y) - x|_1
                     + l_att (mean(A) + mean(A')) + l_tv (TV(A) + TV(A'))
               with x' = G(x, y'), y = the image's AUs, y' = another image's AUs + U(-0.1, 0.1)

With `objective="paired"` (the synthetic world only, where the renderer gives the true edit
x*_{y'} = render(identity of x, y')) there is no critic; every step is a generator step:

    paired     L_G = l_paired (|x' - x*_{y'}|_1 + the same over the pixels the edit changes)
                     + l_att mean(A) + l_tv TV(A)

It learns the edit by supervision instead of by adversarial and AU-regression feedback, so a
small CPU budget gets a model whose edits move the right regions (the shipped default model);
the thesis's comparison uses the GAN objective.

Adam (lr 1e-4, betas 0.5/0.999), constant learning rate, then linearly decaying to zero over
the last `decay_fraction` of the steps. Mixed precision (bfloat16 autocast) on CUDA.

Everything a step draws (which samples, which target AUs, the target noise, the gradient
penalty's interpolation weights) is a function of (seed, step), so a run resumed from a
checkpoint continues exactly as if it had not stopped. Checkpoints (`checkpoint.safetensors`:
both networks, both optimisers, the step, the config, the loss log; no pickle) are written
atomically every `checkpoint_every` steps and at the end; a killed run loses at most one
interval. The run directory also gets `generator.safetensors` (for `exprengine build
--checkpoint`), sample grids and loss curves as PNG.

Data-parallel under torchrun (`exprengine.training.distributed`): each process computes its
shard of every step's global batch (the same draws), gradients are averaged after each backward
pass, and rank 0 writes; the result equals one process training on the whole batch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from exprengine.aus import AU_SCALE, NUM_AUS, PRESETS, AUs
from exprengine.errors import UserError
from exprengine.models import AttentionGenerator, build_generator, generator_config
from exprengine.models.discriminator import Discriminator
from exprengine.pixels import blend, network_tensor
from exprengine.training import losses
from exprengine.training.distributed import World, world_from_environment

CHECKPOINT = "checkpoint.safetensors"
GENERATOR = "generator.safetensors"
CHECKPOINT_FORMAT = "exprengine-train-checkpoint"
CHECKPOINT_VERSION = 1
OBJECTIVES = ("gan", "paired")
#: Bounds of one width in `TrainConfig.dims` (channels of the stem and the two downsampling stages).
MAX_WIDTH = 4096


def parse_dims(text: str | None) -> tuple[int, int, int] | None:
    """`dims` written "A,B,C" (spaces allowed) -> (A, B, C): the channel widths of the stem and
    of the two downsampling stages, each in 1..MAX_WIDTH; None stays None.

    UserError naming `dims` for anything else (not three whole numbers, or a width out of bounds).
    """
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(re.fullmatch(r"\d{1,6}", p) for p in parts):
        raise UserError(f"`dims` {text!r}: expected three comma-separated positive integers (stem, down 1, down 2), "
                        f"e.g. 16,32,64")
    widths = tuple(int(p) for p in parts)
    if not all(1 <= w <= MAX_WIDTH for w in widths):
        raise UserError(f"`dims` {text!r}: each width must be between 1 and {MAX_WIDTH}")
    return widths


@dataclass
class TrainConfig:
    """One training run's settings (saved in its checkpoint, `to_dict`/`from_dict`).

    `dims` may be given as the text "A,B,C" (`parse_dims`, UserError when malformed); it is
    kept as a tuple of three widths. The other fields are documented beside them.
    """
    model: str = "convnext6"
    objective: str = "gan"                # "gan" (GANimation, SPEC section 4) | "paired" (synthetic ground truth)
    data: str = "synthetic"               # what `exprengine train --data` was given (for --resume)
    steps: int = 100_000                  # critic steps
    batch: int = 25
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    critic_steps: int = 5                 # critic updates per generator update
    decay_fraction: float = 1 / 3         # the last third decays linearly to 0
    lambda_gp: float = 10.0
    lambda_au: float = 160.0
    lambda_cycle: float = 10.0
    lambda_attention: float = 0.1
    lambda_tv: float = 1e-5
    lambda_paired: float = 10.0           # objective="paired": L1 to the renderer's true edit
    target_noise: float = 0.1             # on the network's AU scale (intensity / 5)
    init: str | None = None               # start the generator from these weights (fine-tuning)
    seed: int = 0
    checkpoint_every: int = 1000
    sample_every: int = 1000
    log_every: int = 10
    # model size overrides (small experiments and tests); None keeps the registry's
    image_size: int | None = None
    dims: tuple[int, ...] | None = None
    depth: int | None = None
    critic_width: int = 64

    def __post_init__(self):
        if isinstance(self.dims, str):
            self.dims = parse_dims(self.dims)

    def generator_config(self):
        """The registry's GeneratorConfig for `model` with this run's overrides (`image_size`,
        `dims`, `depth`, where not None). UserError for a model the registry does not know."""
        cfg = generator_config(self.model)
        overrides = {k: v for k, v in (("image_size", self.image_size), ("dims", self.dims), ("depth", self.depth))
                     if v is not None}
        return dataclasses.replace(cfg, **overrides)

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (`dims` a list), as the checkpoint stores them."""
        d = dataclasses.asdict(self)
        if d["dims"] is not None:
            d["dims"] = list(d["dims"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config from `to_dict()`'s form, read from a run's checkpoint: every field checked
        for type and bounds (those of `exprengine train`'s options). Raises UserError."""
        if not isinstance(d, dict):
            raise UserError(f"a training config must be a JSON object, not {type(d).__name__}")
        d = dict(d)
        d.setdefault("objective", "gan")   # checkpoints written before objectives existed
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k)[:40] for k in set(d) - known)
        if unknown:
            raise UserError(f"the training config has unknown fields ({', '.join(unknown[:3])})")
        for key, value in d.items():
            if value is None and key in _OPTIONAL_FIELDS:
                continue
            check = _FIELD_CHECKS[key]
            if not check(value):
                raise UserError(f"the training config's {key} is {str(value)[:40]!s}, not {check.__doc__}")
        if d.get("dims") is not None:
            d["dims"] = tuple(d["dims"])
        if d["objective"] not in OBJECTIVES:
            raise UserError(f"the training config's objective is {d['objective']!r}, not one of {', '.join(OBJECTIVES)}")
        config = cls(**d)
        config.generator_config()          # an unknown model is a UserError
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


def _dims(v) -> bool:
    """three widths in 1..4096"""
    return isinstance(v, list) and len(v) == 3 and all(type(w) is int and 1 <= w <= MAX_WIDTH for w in v)


def _image_size(v) -> bool:
    """one of 16, 32, 64, 128, 256, 512"""
    return type(v) is int and v in (16, 32, 64, 128, 256, 512)


# Bounds of every TrainConfig field read back from a checkpoint (`exprengine train`'s option
# bounds where it has one; generous but finite elsewhere).
_FIELD_CHECKS = {
    "model": _text, "objective": _text, "data": _text, "init": _text,
    "steps": _whole(1, 1_000_000_000), "batch": _whole(1, 4096), "lr": _real(1e-12, 1.0),
    "beta1": _real(0.0, 0.999999), "beta2": _real(0.0, 0.999999), "critic_steps": _whole(1, 1000),
    "decay_fraction": _real(0.0, 1.0), "target_noise": _real(0.0, 1.0),
    **{f"lambda_{k}": _real(0.0, 1e9) for k in ("gp", "au", "cycle", "attention", "tv", "paired")},
    "seed": _whole(0, 2**32 - 1), "checkpoint_every": _whole(1, 1_000_000_000),
    "sample_every": _whole(1, 1_000_000_000), "log_every": _whole(1, 1_000_000_000),
    "image_size": _image_size, "dims": _dims, "depth": _whole(1, 64), "critic_width": _whole(1, 1024),
}
_OPTIONAL_FIELDS = ("init", "image_size", "dims", "depth")


def make_critic(image_size: int, width: int) -> Discriminator:
    """GANimation's critic scaled to the image: log2(S) - 1 stride-2 layers (6 at 128), widths doubling."""
    layers = int(math.log2(image_size)) - 1
    dims = tuple(min(width * 2 ** i, 32 * width) for i in range(layers))
    return Discriminator(image_size=image_size, dims=dims)


def read_run_checkpoint(out: str | os.PathLike, fmt: str, version: int, kind: str,
                        tensors: bool = True) -> tuple[dict, dict]:
    """(metadata, tensors) of a training run's `out/checkpoint.safetensors` (tensors {} unless
    `tensors`), checked to carry format `fmt` at `version`; shared by every trainer. UserError
    for a missing or unreadable file, or one of another format ("{path} is not {kind} checkpoint")."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"nothing to resume: {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            values = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        from exprengine.models.weights import first_line
        raise UserError(f"checkpoint {path} is not readable ({first_line(e)})") from None
    if meta.get("format") != fmt or meta.get("format_version") != str(version):
        raise UserError(f"{path} is not {kind} checkpoint (version {version})")
    return meta, values


def step_batch(data, config: TrainConfig, part: slice, step: int, truth: bool = False) -> dict:
    """Everything step `step` of a run with `config` draws for the shard `part` of its global
    batch, on the CPU: "images" float [n,3,S,S] in [-1, 1], "aus" and "target" float32 [n,17] on
    the network's AU scale (0..1: OpenFace intensity / AU_SCALE; the targets another sample's
    AUs plus uniform noise of +-target_noise, clipped), "indices" int64 [n] and, with `truth`,
    "truth" float32 [n,3,S,S] (the synthetic world's render of each identity with its target
    AUs). A function of (config.seed, step) only, so a loader's worker draws the same."""
    rng = np.random.default_rng([config.seed, step])
    idx = rng.integers(0, len(data), config.batch)
    other = rng.integers(0, len(data), config.batch)
    items = [data[int(i)] for i in idx[part]]
    images = torch.stack([it[0] for it in items])
    aus = torch.stack([torch.as_tensor(it[1], dtype=torch.float32) for it in items]) / AU_SCALE
    target = np.stack([data.aus(int(j)) for j in other]).astype(np.float32) / AU_SCALE
    target += rng.uniform(-config.target_noise, config.target_noise, target.shape).astype(np.float32)
    target = torch.from_numpy(np.clip(target[part], 0, 1))
    draw = {"images": images, "aus": aus, "target": target, "indices": idx[part]}
    if truth:
        draw["truth"] = _true_edits(data, idx[part], target)
    return draw


def _true_edits(data, idx, target: torch.Tensor) -> torch.Tensor:
    """The renderer's image of each sample's identity with the target AUs, [B,3,S,S] in [-1, 1]."""
    aus = target.cpu().numpy().astype(np.float64) * AU_SCALE
    return network_tensor(np.stack([data.render_target(int(i), a) for i, a in zip(idx, aus)]))


class Trainer:
    """Holds the networks, optimisers and data of one run; `train(until)` advances it."""

    def __init__(self, config: TrainConfig, data, out: str | os.PathLike, device: str = "cpu",
                 world: World | None = None, loader_workers: int = 1):
        self.config = config
        self.loader_workers = loader_workers     # 0 or 1 (`prefetch.step_draws`); not a setting of the run
        self.world = world or World()            # alone, or one of several processes (distributed.py)
        self.data = data
        self.out = Path(out)
        self.device = torch.device(device)
        torch.manual_seed(config.seed)           # initial weights only; steps use their own generators
        self.generator: AttentionGenerator = build_generator(config.generator_config()).to(self.device).train()
        if config.init is not None:
            self._load_init(config.init)
        self.critic = make_critic(self.generator.config.image_size, config.critic_width).to(self.device).train()
        self.world.broadcast(self.generator, self.critic)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr, betas=betas)
        self.step = 0
        self.log: list[dict] = []               # averaged every log_every steps
        self._pending: list[dict] = []
        self.amp = self.device.type == "cuda"
        size = self.generator.config.image_size
        if config.objective not in OBJECTIVES:
            raise UserError(f"unknown objective {config.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        if config.objective == "paired" and not hasattr(data, "render_target"):
            raise UserError("the paired objective needs the synthetic data set (it renders the true edit); "
                            "train real photos with the gan objective")
        if getattr(data, "size", size) != size:
            raise UserError(f"the data set's images are {data.size}x{data.size}, the model takes {size}x{size}")

    def _load_init(self, path: str) -> None:
        """Fine-tuning: start from a generator's weights (exprengine .safetensors, or a public
        GANimation checkpoint for `ganimation`, read as `exprengine build --checkpoint` reads
        them); the architectures must match exactly."""
        from exprengine.models.ganimation import import_checkpoint
        source = import_checkpoint(path, self.config.model)
        if source.config != self.generator.config:
            raise UserError(f"`init` {path} holds a {source.config.name} generator with another shape than "
                            f"the one being trained ({self.generator.config.name}); pass the same `model`/`dims`")
        self.generator.load_state_dict(source.state_dict())

    @property
    def dtype(self) -> torch.dtype:
        """The networks' dtype, which batches are cast to: float32, or float64 when they were built
        under `torch.set_default_dtype(torch.float64)` (exactness tests)."""
        return next(self.generator.parameters()).dtype

    # --- schedule and per-step randomness -------------------------------------------------------
    def learning_rate(self, step: int) -> float:
        """The learning rate at `step` (GANimation's schedule): `lr` until the last
        `decay_fraction` of the steps, then linearly down to 0 at `steps`."""
        c = self.config
        decay_start = int(c.steps * (1 - c.decay_fraction))
        if step < decay_start:
            return c.lr
        return c.lr * max(0.0, (c.steps - step) / max(1, c.steps - decay_start))

    def batch(self, step: int, draw: dict | None = None):
        """(images [B,3,S,S], aus [B,17], target aus [B,17], data indices [B]) on the network's AU
        scale, for `step`: this process's shard (`World.shard`) of the global batch of `batch`,
        on the device. `draw`: `step_batch`'s draw of this step when already made."""
        if draw is None:
            draw = step_batch(self.data, self.config, self.world.shard(self.config.batch), step)
        dtype = self.dtype
        return (draw["images"].to(self.device, dtype), draw["aus"].to(self.device, dtype),
                draw["target"].to(self.device, dtype), draw["indices"])

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    # --- one step --------------------------------------------------------------------------------
    def train_step(self, draw: dict | None = None) -> dict[str, float]:
        """One step at `self.step` (then advanced by one), the learning rate set by `learning_rate`;
        `draw`: its `step_batch` draw when already made (by `train`'s worker).

        "gan" (GANimation, SPEC section 4): one critic update (WGAN-GP: d_wasserstein, d_gp,
        and the AU regression on real images, d_au); every `critic_steps`-th step also one
        generator update (g_adversarial, g_au, g_cycle, g_attention, g_tv), each term weighted
        by its `lambda_*`. "paired": one generator update against the renderer's true edit
        (g_paired, g_attention, g_tv). Returns those losses as floats."""
        c, step = self.config, self.step
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = self.learning_rate(step)
        if c.objective == "paired":
            return self._paired_step(draw)
        real, aus, target, _ = self.batch(step, draw)
        gp_rng = torch.Generator(device=self.device).manual_seed(int(np.random.default_rng([c.seed, step, 2])
                                                                     .integers(2 ** 62)))
        # critic
        with self._autocast():
            with torch.no_grad():
                color, attention = self.generator(real, target)
                fake = blend(real, color, attention)
            real_score, real_aus = self.critic(real)
            fake_score, _ = self.critic(fake.detach())
            d_adv = fake_score.float().mean() - real_score.float().mean()
            d_au = losses.au_regression(real_aus.float(), aus)
        weights = torch.rand(c.batch, 1, 1, 1, device=self.device, generator=gp_rng, dtype=real.dtype)
        gp = losses.gradient_penalty(self.critic, real, fake, weights=weights[self.world.shard(c.batch)])
        loss_d = d_adv + c.lambda_gp * gp + c.lambda_au * d_au
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.world.average_gradients(self.critic.parameters())
        self.opt_d.step()
        out = {"d_wasserstein": -d_adv.item(), "d_gp": gp.item(), "d_au": d_au.item()}
        # generator, once per critic_steps
        if (step + 1) % c.critic_steps == 0:
            with self._autocast():
                color, attention = self.generator(real, target)
                fake = blend(real, color, attention)
                fake_score, fake_aus = self.critic(fake)
                color_r, attention_r = self.generator(fake, aus)
                reconstruction = blend(fake, color_r, attention_r)
                g_adv = -fake_score.float().mean()
                g_au = losses.au_regression(fake_aus.float(), target)
                g_cycle = losses.cycle(reconstruction.float(), real)
                g_att = losses.attention_mean(attention.float()) + losses.attention_mean(attention_r.float())
                g_tv = losses.total_variation(attention.float()) + losses.total_variation(attention_r.float())
            loss_g = g_adv + c.lambda_au * g_au + c.lambda_cycle * g_cycle + c.lambda_attention * g_att \
                + c.lambda_tv * g_tv
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.world.average_gradients(self.generator.parameters())
            self.opt_g.step()
            out.update(g_adversarial=g_adv.item(), g_au=g_au.item(), g_cycle=g_cycle.item(),
                       g_attention=g_att.item(), g_tv=g_tv.item())
        self.step += 1
        return self.world.mean_values(out)

    def _paired_step(self, draw: dict | None) -> dict[str, float]:
        c = self.config
        if draw is None:
            draw = step_batch(self.data, c, self.world.shard(c.batch), self.step, truth=True)
        real, _, target, _ = self.batch(self.step, draw)
        truth = draw["truth"].to(self.device, self.dtype)
        with self._autocast():
            color, attention = self.generator(real, target)
            fake = blend(real, color, attention)
            g_paired = losses.paired(fake.float(), truth, real)
            g_att = losses.attention_mean(attention.float())
            g_tv = losses.total_variation(attention.float())
        loss_g = c.lambda_paired * g_paired + c.lambda_attention * g_att + c.lambda_tv * g_tv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.world.average_gradients(self.generator.parameters())
        self.opt_g.step()
        self.step += 1
        return self.world.mean_values({"g_paired": g_paired.item(), "g_attention": g_att.item(), "g_tv": g_tv.item()})

    def train(self, until: int | None = None, progress: bool = True) -> None:
        """Advance to step `until` (default: the config's steps), checkpointing and sampling as configured.
        A run that fails before writing anything leaves no run directory it created."""
        until = self.config.steps if until is None else min(until, self.config.steps)
        created = not self.out.exists()
        if self.world.main:                                 # only rank 0 writes
            self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._train(until, progress and self.world.main)
        except BaseException:
            if self.world.main and created and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()                            # failed before writing anything
            raise

    def _train(self, until: int, progress: bool) -> None:
        from tqdm import tqdm
        # The bar is drawn on a terminal only, and erased when training fails (one error line).
        with tqdm(total=until, initial=self.step, desc="training", unit="step", disable=None if progress else True,
                  dynamic_ncols=True) as bar:
            try:
                self._steps(until, bar)
            except BaseException:
                bar.leave = False
                raise

    def _steps(self, until: int, bar) -> None:
        from functools import partial

        from exprengine.training.prefetch import step_draws
        c = self.config
        draw = partial(step_batch, self.data, c, self.world.shard(c.batch), truth=c.objective == "paired")
        draws = step_draws(draw, self.step, until, self.loader_workers)
        while self.step < until:
            values = self.train_step(next(draws))
            self._pending.append(values)
            if self.step % c.log_every == 0 or self.step == until:
                self._flush_log()
                bar.set_postfix({k: f"{v:.3g}" for k, v in self.log[-1].items()
                                 if k in ("d_wasserstein", "d_au", "g_au", "g_cycle", "g_paired")})
            if self.step % c.checkpoint_every == 0 or self.step == until:
                self.save()
            if self.step % c.sample_every == 0 or self.step == until:
                self.write_samples()
            bar.update(1)

    def _flush_log(self) -> None:
        if not self._pending:
            return
        keys = sorted({k for v in self._pending for k in v})
        entry = {"step": self.step, "lr": self.learning_rate(self.step - 1)}
        for k in keys:
            vals = [v[k] for v in self._pending if k in v]
            entry[k] = float(np.mean(vals))
        self.log.append(entry)
        self._pending = []

    # --- checkpoints -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything the checkpoint stores as tensors, on the CPU and contiguous: the generator's
        and the critic's state dicts ("generator.*", "critic.*") and both Adam optimisers' state
        ("opt_g.<param>.<key>", "opt_d.<param>.<key>")."""
        tensors = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        tensors.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            for index, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value)
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def save(self) -> Path:
        """Write the checkpoint and the generator's weights, each atomically (rank 0 only; every
        rank keeps the same loss log)."""
        from safetensors.torch import save

        from exprengine.models.weights import save_weights
        from exprengine.files import write_bytes
        self._flush_log()
        path = self.out / CHECKPOINT
        if not self.world.main:
            return path
        metadata = {"format": CHECKPOINT_FORMAT, "format_version": str(CHECKPOINT_VERSION),
                    "step": str(self.step), "config": json.dumps(self.config.to_dict()),
                    "generator_config": json.dumps(self.generator.config.to_dict()),
                    "optimizer_groups": json.dumps({n: o.state_dict()["param_groups"]
                                                    for n, o in (("opt_g", self.opt_g), ("opt_d", self.opt_d))}),
                    "log": json.dumps(self.log)}
        write_bytes(path, save(self.state_tensors(), metadata=metadata))
        save_weights(self.generator, self.out / GENERATOR,
                     extra={"training_step": self.step, "training_config": self.config.to_dict()})
        write_loss_curves(self.log, self.out / "losses.png")
        return path

    @staticmethod
    def read_checkpoint(out: str | os.PathLike, tensors: bool = True) -> tuple[dict, dict]:
        """(metadata, tensors) of `out/checkpoint.safetensors`, checked to be ours."""
        return read_run_checkpoint(out, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "an exprengine training", tensors)

    @classmethod
    def checkpoint_config(cls, out: str | os.PathLike) -> TrainConfig:
        """The checked TrainConfig of the run in `out` (UserError for a missing or corrupt one)."""
        meta = cls.read_checkpoint(out, tensors=False)[0]
        return TrainConfig.from_dict(_json_metadata(meta, "config", Path(out) / CHECKPOINT))

    @classmethod
    def resume(cls, out: str | os.PathLike, data, device: str = "cpu", steps: int | None = None,
               world: World | None = None) -> "Trainer":
        """Rebuild a run from `out/checkpoint.safetensors` (optionally extending its step budget;
        `world`: the processes training together, as for `Trainer`).

        Everything read back is checked (config, step, log, every tensor's name and shape, the
        optimiser state against the parameters): a corrupt checkpoint is a UserError, never a
        crash in a later step. The optimisers' hyper-parameters come from the config (the file's
        `optimizer_groups` is informational), the learning rate from the schedule."""
        from exprengine.models.weights import load_strictly
        meta, tensors = cls.read_checkpoint(out)
        path = Path(out) / CHECKPOINT
        config = TrainConfig.from_dict(_json_metadata(meta, "config", path))
        step = meta.get("step", "")
        if not (isinstance(step, str) and step.isascii() and step.isdigit() and len(step) <= 10):
            raise UserError(f"checkpoint {path} has no valid step count (a whole number) in its metadata")
        log = _json_metadata(meta, "log", path)
        if not (isinstance(log, list) and all(isinstance(e, dict) and type(e.get("step")) is int and all(
                isinstance(k, str) and type(v) in (int, float) for k, v in e.items()) for e in log)):
            raise UserError(f"checkpoint {path} has a corrupt loss log (a list of step records) in its metadata")
        if steps is not None:
            config.steps = steps
        init, config.init = config.init, None     # the checkpoint's weights replace the initial ones
        trainer = cls(config, data, out, device, world)
        trainer.config.init = init
        parts: dict[str, dict[str, torch.Tensor]] = {"generator": {}, "critic": {}, "opt_g": {}, "opt_d": {}}
        for k, v in tensors.items():
            head, _, rest = k.partition(".")
            if head not in parts or not rest:
                raise UserError(f"checkpoint {path} has an unexpected tensor {k[:80]}")
            parts[head][rest] = v
        load_strictly(trainer.generator, parts["generator"], f"{path} (generator)")
        load_strictly(trainer.critic, parts["critic"], f"{path} (critic)")
        for name, opt in (("opt_g", trainer.opt_g), ("opt_d", trainer.opt_d)):
            opt.load_state_dict({"state": _optimizer_state(parts[name], opt, f"{path} ({name})", trainer.device),
                                 "param_groups": opt.state_dict()["param_groups"]})
        trainer.step = int(step)
        trainer.log = log
        return trainer

    # --- what people look at ---------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self, rows: int = 4) -> Path:
        """A grid per step: input, each preset at intensity 1.5, and the happiness attention map
        (rank 0 only)."""
        from exprengine.pixels import to_uint8_nhwc
        from exprengine.media import contact_sheet, write_image
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        if not self.world.main:
            return path
        presets = [name for name, p in PRESETS.items() if p.aus]
        self.generator.eval()
        tiles, labels = [], []
        for r in range(min(rows, len(self.data))):      # a data set may hold fewer images
            image = self.data[r][0][None].to(self.device, self.dtype)
            tiles.append(to_uint8_nhwc(image.cpu().numpy())[0])
            labels.append("input")
            for name in presets:
                aus = torch.from_numpy(AUs.preset(name, 1.5).values / AU_SCALE)[None].to(self.device, self.dtype)
                color, attention = self.generator(image, aus)
                tiles.append(to_uint8_nhwc(blend(image, color, attention).float().cpu().numpy())[0])
                labels.append(name)
                if name == "happiness":
                    att = (attention[0, 0].float().cpu().numpy() * 255).round().astype(np.uint8)
                    happiness_attention = np.repeat(att[:, :, None], 3, axis=2)
            tiles.append(happiness_attention)
            labels.append("A (happy)")
        self.generator.train()
        sheet = contact_sheet(np.stack(tiles), columns=len(presets) + 2, labels=labels)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, sheet)
        return path


def train_run(out: str | os.PathLike, config: TrainConfig, device: str = "auto", *, resume: bool = False,
              progress: bool = True) -> Trainer:
    """Train the run in directory `out` to its step budget and return its Trainer (`.step`, `.config`).

    New run (`resume` False): `config`, on the data `config.data` names (`training_data`), in
    `out` (created; UserError when it already holds a run's checkpoint: continue it with
    `resume` or choose another directory). `resume`: the run in `out` continues exactly where
    its checkpoint stopped, with the checkpoint's own config; of `config` only `steps` (the new
    step budget) is taken. `device`: "auto" (`resolve_device`: CUDA when PyTorch sees an NVIDIA
    GPU), "cpu" or "cuda" (UserError when no GPU is visible). `progress`: a line on stderr saying
    where a resumed run starts, and the trainer's progress bar.
    Under torchrun (`distributed.world_from_environment`) each process trains its shard of every
    global batch of `batch` (a multiple of the number of processes) and rank 0 writes the run.
    UserError also when `out` is a file, and for a missing or corrupt checkpoint or data set.
    """
    from exprengine.data.datasets import training_data
    from exprengine.engines.backends import resolve_device
    device = resolve_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("`device` cuda needs an NVIDIA GPU, and none is visible")
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise UserError(f"`out` {out} is a file; give a directory for the run")
    if resume:
        saved = Trainer.checkpoint_config(run)
        data = training_data(saved.data, saved.generator_config().image_size)
    else:
        if (run / CHECKPOINT).exists():
            raise UserError(f"{out} already holds a run; use `resume` to continue it or choose another `out`")
        data = training_data(config.data, config.generator_config().image_size)
    world, device = world_from_environment(device)
    try:
        world.shard((saved if resume else config).batch)          # the batch splits evenly, or a UserError now
        if resume:
            trainer = Trainer.resume(run, data, device, config.steps, world)
            if progress and world.main:
                print(f"resuming {out} at step {trainer.step} of {trainer.config.steps}", file=sys.stderr, flush=True)
        else:
            trainer = Trainer(config, data, run, device, world)
        trainer.train(progress=progress)
        world.barrier()
    finally:
        world.close()
    return trainer


def _json_metadata(meta: dict, key: str, path: Path):
    """The JSON value of a checkpoint's metadata `key`; UserError if it is missing or not JSON
    (too deep, numbers of thousands of digits, ...)."""
    if key not in meta:
        raise UserError(f"checkpoint {path} has no {key} in its metadata")
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError) as e:
        raise UserError(f"checkpoint {path} has a corrupt {key} in its metadata ({type(e).__name__})") from None


_OPTIMIZER_KEY = re.compile(r"(\d{1,6})\.(step|exp_avg|exp_avg_sq)")


def _optimizer_state(tensors: dict[str, torch.Tensor], opt: torch.optim.Optimizer, source: str,
                     device: torch.device) -> dict[int, dict[str, torch.Tensor]]:
    """Adam's per-parameter state from `INDEX.step|exp_avg|exp_avg_sq` tensors, checked against
    the optimiser's parameters (index, shape, float, finite) so that no later step can fail."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        m = _OPTIMIZER_KEY.fullmatch(k)
        if not m or int(m.group(1)) >= len(params):
            raise UserError(f"checkpoint {source} has an unexpected optimiser tensor {k[:80]}")
        index, key = int(m.group(1)), m.group(2)
        shape = () if key == "step" else tuple(params[index].shape)
        if tuple(v.shape) != shape or v.layout != torch.strided or not v.is_floating_point() \
                or not torch.isfinite(v).all():
            raise UserError(f"checkpoint {source}: optimiser tensor {k} is not a finite float tensor of shape {shape}")
        state.setdefault(index, {})[key] = v if key == "step" else v.to(device)
    incomplete = [i for i, entry in state.items() if len(entry) != 3]
    if incomplete:
        raise UserError(f"checkpoint {source}: the optimiser state of parameter {incomplete[0]} is incomplete")
    return state


def write_loss_curves(log: list[dict], path: Path) -> None:
    """Loss curves (one panel per loss) as a PNG, written atomically."""
    if not log:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exprengine.files import atomic_output
    keys = [k for k in log[-1] if k not in ("step", "lr")]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols, figsize=(4 * cols, 2.6 * math.ceil(len(keys) / cols)),
                             squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(e["step"], e[key]) for e in log if key in e]
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


__all__ = ["TrainConfig", "Trainer", "make_critic", "NUM_AUS", "step_batch"]
