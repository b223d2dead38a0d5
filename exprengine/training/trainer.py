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
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from exprengine.aus import AU_SCALE, NUM_AUS, PRESETS, AUs
from exprengine.errors import UserError
from exprengine.models import AttentionGenerator, build_generator, generator_config
from exprengine.models.discriminator import Discriminator
from exprengine.training import losses

CHECKPOINT = "checkpoint.safetensors"
GENERATOR = "generator.safetensors"
CHECKPOINT_FORMAT = "exprengine-train-checkpoint"
CHECKPOINT_VERSION = 1
OBJECTIVES = ("gan", "paired")


@dataclass
class TrainConfig:
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

    def generator_config(self):
        cfg = generator_config(self.model)
        overrides = {k: v for k, v in (("image_size", self.image_size), ("dims", self.dims), ("depth", self.depth))
                     if v is not None}
        return dataclasses.replace(cfg, **overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["dims"] is not None:
            d["dims"] = list(d["dims"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d.setdefault("objective", "gan")   # checkpoints written before objectives existed
        if d.get("dims") is not None:
            d["dims"] = tuple(d["dims"])
        return cls(**d)


def make_critic(image_size: int, width: int) -> Discriminator:
    """GANimation's critic scaled to the image: log2(S) - 1 stride-2 layers (6 at 128), widths doubling."""
    layers = int(math.log2(image_size)) - 1
    dims = tuple(min(width * 2 ** i, 32 * width) for i in range(layers))
    return Discriminator(image_size=image_size, dims=dims)


class Trainer:
    """Holds the networks, optimisers and data of one run; `train(until)` advances it."""

    def __init__(self, config: TrainConfig, data, out: str | os.PathLike, device: str = "cpu"):
        self.config = config
        self.data = data
        self.out = Path(out)
        self.device = torch.device(device)
        torch.manual_seed(config.seed)           # initial weights only; steps use their own generators
        self.generator: AttentionGenerator = build_generator(config.generator_config()).to(self.device).train()
        if config.init is not None:
            self._load_init(config.init)
        self.critic = make_critic(self.generator.config.image_size, config.critic_width).to(self.device).train()
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
        from exprengine.checkpoints import import_checkpoint
        source = import_checkpoint(path, self.config.model)
        if source.config != self.generator.config:
            raise UserError(f"--init {path} holds a {source.config.name} generator with another shape than "
                            f"the one being trained ({self.generator.config.name}); pass the same --model/--dims")
        self.generator.load_state_dict(source.state_dict())

    # --- schedule and per-step randomness -------------------------------------------------------
    def learning_rate(self, step: int) -> float:
        c = self.config
        decay_start = int(c.steps * (1 - c.decay_fraction))
        if step < decay_start:
            return c.lr
        return c.lr * max(0.0, (c.steps - step) / max(1, c.steps - decay_start))

    def batch(self, step: int):
        """(images [B,3,S,S], aus [B,17], target aus [B,17]) on the network's AU scale, for `step`."""
        c = self.config
        rng = np.random.default_rng([c.seed, step])
        idx = rng.integers(0, len(self.data), c.batch)
        other = rng.integers(0, len(self.data), c.batch)
        items = [self.data[int(i)] for i in idx]
        images = torch.stack([it[0] for it in items])
        aus = torch.stack([torch.as_tensor(it[1], dtype=torch.float32) for it in items]) / AU_SCALE
        target = np.stack([self.data.aus(int(j)) for j in other]).astype(np.float32) / AU_SCALE
        target += rng.uniform(-c.target_noise, c.target_noise, target.shape).astype(np.float32)
        target = torch.from_numpy(np.clip(target, 0, 1))
        return images.to(self.device), aus.to(self.device), target.to(self.device), idx

    def true_edits(self, idx, target: torch.Tensor) -> torch.Tensor:
        """The renderer's image of each sample's identity with the target AUs, [B,3,S,S] in [-1, 1]."""
        aus = target.cpu().numpy().astype(np.float64) * AU_SCALE
        faces = np.stack([self.data.render_target(int(i), a) for i, a in zip(idx, aus)])
        return (torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(self.device)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    # --- one step --------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        c, step = self.config, self.step
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = self.learning_rate(step)
        if c.objective == "paired":
            return self._paired_step()
        real, aus, target, _ = self.batch(step)
        gp_rng = torch.Generator(device=self.device).manual_seed(int(np.random.default_rng([c.seed, step, 2])
                                                                     .integers(2 ** 62)))
        # critic
        with self._autocast():
            with torch.no_grad():
                color, attention = self.generator(real, target)
                fake = attention * real + (1 - attention) * color
            real_score, real_aus = self.critic(real)
            fake_score, _ = self.critic(fake.detach())
            d_adv = fake_score.float().mean() - real_score.float().mean()
            d_au = losses.au_regression(real_aus.float(), aus)
        gp = losses.gradient_penalty(self.critic, real, fake, gp_rng)
        loss_d = d_adv + c.lambda_gp * gp + c.lambda_au * d_au
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        out = {"d_wasserstein": -d_adv.item(), "d_gp": gp.item(), "d_au": d_au.item()}
        # generator, once per critic_steps
        if (step + 1) % c.critic_steps == 0:
            with self._autocast():
                color, attention = self.generator(real, target)
                fake = attention * real + (1 - attention) * color
                fake_score, fake_aus = self.critic(fake)
                color_r, attention_r = self.generator(fake, aus)
                reconstruction = attention_r * fake + (1 - attention_r) * color_r
                g_adv = -fake_score.float().mean()
                g_au = losses.au_regression(fake_aus.float(), target)
                g_cycle = losses.cycle(reconstruction.float(), real)
                g_att = losses.attention_mean(attention.float()) + losses.attention_mean(attention_r.float())
                g_tv = losses.total_variation(attention.float()) + losses.total_variation(attention_r.float())
            loss_g = g_adv + c.lambda_au * g_au + c.lambda_cycle * g_cycle + c.lambda_attention * g_att \
                + c.lambda_tv * g_tv
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            out.update(g_adversarial=g_adv.item(), g_au=g_au.item(), g_cycle=g_cycle.item(),
                       g_attention=g_att.item(), g_tv=g_tv.item())
        self.step += 1
        return out

    def _paired_step(self) -> dict[str, float]:
        c = self.config
        real, _, target, idx = self.batch(self.step)
        truth = self.true_edits(idx, target)
        with self._autocast():
            color, attention = self.generator(real, target)
            fake = attention * real + (1 - attention) * color
            g_paired = losses.paired(fake.float(), truth, real)
            g_att = losses.attention_mean(attention.float())
            g_tv = losses.total_variation(attention.float())
        loss_g = c.lambda_paired * g_paired + c.lambda_attention * g_att + c.lambda_tv * g_tv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.step += 1
        return {"g_paired": g_paired.item(), "g_attention": g_att.item(), "g_tv": g_tv.item()}

    def train(self, until: int | None = None, progress: bool = True) -> None:
        """Advance to step `until` (default: the config's steps), checkpointing and sampling as configured."""
        from tqdm import tqdm
        c = self.config
        until = c.steps if until is None else min(until, c.steps)
        self.out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=until, initial=self.step, desc="training", unit="step", disable=not progress,
                  dynamic_ncols=True) as bar:
            while self.step < until:
                values = self.train_step()
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
        tensors = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        tensors.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            for index, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value)
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def save(self) -> Path:
        """Write the checkpoint and the generator's weights, each atomically."""
        from safetensors.torch import save

        from exprengine.checkpoints import _write_atomically, save_weights
        self._flush_log()
        metadata = {"format": CHECKPOINT_FORMAT, "format_version": str(CHECKPOINT_VERSION),
                    "step": str(self.step), "config": json.dumps(self.config.to_dict()),
                    "generator_config": json.dumps(self.generator.config.to_dict()),
                    "optimizer_groups": json.dumps({n: o.state_dict()["param_groups"]
                                                    for n, o in (("opt_g", self.opt_g), ("opt_d", self.opt_d))}),
                    "log": json.dumps(self.log)}
        path = self.out / CHECKPOINT
        _write_atomically(path, save(self.state_tensors(), metadata=metadata))
        save_weights(self.generator, self.out / GENERATOR,
                     extra={"training_step": self.step, "training_config": self.config.to_dict()})
        write_loss_curves(self.log, self.out / "losses.png")
        return path

    @staticmethod
    def read_checkpoint(out: str | os.PathLike, tensors: bool = True) -> tuple[dict, dict]:
        """(metadata, tensors) of `out/checkpoint.safetensors`, checked to be ours."""
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
            raise UserError(f"checkpoint {path} is not readable ({str(e).splitlines()[0]})") from None
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("format_version") != str(CHECKPOINT_VERSION):
            raise UserError(f"{path} is not an exprengine training checkpoint (version {CHECKPOINT_VERSION})")
        return meta, values

    @classmethod
    def checkpoint_config(cls, out: str | os.PathLike) -> TrainConfig:
        return TrainConfig.from_dict(json.loads(cls.read_checkpoint(out, tensors=False)[0]["config"]))

    @classmethod
    def resume(cls, out: str | os.PathLike, data, device: str = "cpu", steps: int | None = None) -> "Trainer":
        """Rebuild a run from `out/checkpoint.safetensors` (optionally extending its step budget)."""
        meta, tensors = cls.read_checkpoint(out)
        config = TrainConfig.from_dict(json.loads(meta["config"]))
        if steps is not None:
            config.steps = steps
        init, config.init = config.init, None     # the checkpoint's weights replace the initial ones
        trainer = cls(config, data, out, device)
        trainer.config.init = init
        trainer.generator.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("generator.")})
        trainer.critic.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("critic.")})
        groups = json.loads(meta["optimizer_groups"])
        for name, opt in (("opt_g", trainer.opt_g), ("opt_d", trainer.opt_d)):
            state: dict[int, dict] = {}
            for k, v in tensors.items():
                if k.startswith(name + "."):
                    _, index, key = k.split(".", 2)
                    state.setdefault(int(index), {})[key] = v.to(trainer.device) if key != "step" else v
            opt.load_state_dict({"state": state, "param_groups": groups[name]})
        trainer.step = int(meta["step"])
        trainer.log = json.loads(meta["log"])
        return trainer

    # --- what people look at ---------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self, rows: int = 4) -> Path:
        """A grid per step: input, each preset at intensity 1.5, and the happiness attention map."""
        from exprengine.kernels.blend import to_uint8_nhwc
        from exprengine.media import contact_sheet, write_image
        presets = [name for name, p in PRESETS.items() if p.aus]
        self.generator.eval()
        tiles, labels = [], []
        for r in range(rows):
            image = self.data[r][0][None].to(self.device)
            tiles.append(to_uint8_nhwc(image.cpu().numpy())[0])
            labels.append("input")
            for name in presets:
                aus = torch.from_numpy(AUs.preset(name, 1.5).values / AU_SCALE)[None].to(self.device)
                color, attention = self.generator(image, aus)
                tiles.append(to_uint8_nhwc((attention * image + (1 - attention) * color).float().cpu().numpy())[0])
                labels.append(name)
                if name == "happiness":
                    att = (attention[0, 0].float().cpu().numpy() * 255).round().astype(np.uint8)
                    happiness_attention = np.repeat(att[:, :, None], 3, axis=2)
            tiles.append(happiness_attention)
            labels.append("A (happy)")
        self.generator.train()
        sheet = contact_sheet(np.stack(tiles), columns=len(presets) + 2, labels=labels)
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, sheet)
        return path


def write_loss_curves(log: list[dict], path: Path) -> None:
    """Loss curves (one panel per loss) as a PNG, written atomically."""
    if not log:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exprengine.media import atomic_output
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


__all__ = ["TrainConfig", "Trainer", "make_critic", "NUM_AUS"]
