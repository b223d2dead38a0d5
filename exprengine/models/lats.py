"""Lifespan Age Transformation Synthesis (`lats`, `lats-small`): the age generator family, its
multi-class discriminator and age encoder, and the import of the authors' generator files.

Written from the facts of the public reference code (Or-El et al., ECCV 2020,
github.com/royorel/Lifespan_Age_Transformation_Synthesis; no code copied), SPEC section 8:

    features = E_id(image)                      [N, 256, 64, 64]   identity, spatial
    style    = M(age_code)                      [N, 256]           age_code [N, 300]
    output   = tanh(D(features, style))         [N, 3, 256, 256]   in [-1, 1]

Facts relied on (file / name in the reference):

- Options (`options/base_options.py`): ngf 64, n_downsample 2, use_modulated_conv,
  conv_weight_norm (equalised learning rate everywhere), id_enc_norm and decoder_norm "pixel",
  activation "lrelu", normalize_mlp, gen_dim_per_style 50, six classes from sort_order
  "0-2,3-6,7-9,15-19,30-39,50-69" (`exprengine.ages.AGE_CLASSES`); fineSize 256. `Generator`'s
  n_blocks defaults to 4 (`define_G` does not pass it).
- Equalised learning rate (`EqualLR`, `EqualConv2d`, `EqualLinear`): the parameter is stored as
  `<name>_orig` (N(0, 1) at init, biases 0) and a forward pre-hook uses
  weight_orig * sqrt(2 / fan_in), fan_in = in_channels * kh * kw. `ModulatedConv2d` stores a
  plain `weight` [out, in, 3, 3] and applies the same constant in its forward. Ours keeps the
  stored (unscaled) parameters and applies sqrt(2 / fan_in) at run time (`EqualConv2d`,
  `EqualLinear`, `ModulatedConv2d` below), so the reference's learning rates still apply when
  training; an imported `weight_orig` is copied as it is, and the He constant is applied by our
  forward exactly where the reference applies it.
- `PixelNorm`: x / sqrt(mean over channels (dim 1) of x^2 + 1e-5).
- `IdentityEncoder` (`id_encoder.encoder`, a Sequential): reflect-pad 3, conv 7x7 3->64, PixelNorm,
  ReLU; twice reflect-pad 1, conv 3x3 stride 2 (64->128->256), PixelNorm, ReLU; then 4
  `ResnetBlock`s: x + PN(conv3(pad(ReLU(PN(conv3(pad(x))))))) (`conv_block.1`, `conv_block.5`).
- `AgeEncoder` (`age_encoder.encoder`): reflect-pad 3, conv 7x7 3->64, LeakyReLU(0.2); four times
  reflect-pad 1, conv 3x3 stride 2 (64->128->256->512->1024), LeakyReLU(0.2); conv 1x1 1024->300;
  the mean over the spatial axes: [N, 300]. Trained to give back the age code (L1).
- The age code (`LATS_model.get_conditions`): 300 values, 50 per class; a class's code is 1 on its
  50 values (class c: values 50c .. 50c+49) and 0 elsewhere, plus N(0, 0.2^2) noise on all 300
  values unless --no_cond_noise, at training *and* at test time (so the reference's outputs vary
  from run to run). Ours: `age_code` is the noiseless code (its mean), so that inference is
  deterministic and engines can be verified; `noise` adds the reference's noise for training.
- The mapping network (`StyledDecoder.mlp = MLP(300, 256, 256, 8, weight_norm, lrelu,
  normalize_mlp)`, keys `decoder.mlp.model.{1,4,..,22}.linear`): PixelNorm; 7 times EqualLinear,
  LeakyReLU(0.2), PixelNorm; EqualLinear 256->256, PixelNorm: style [N, 256].
- The decoder (`StyledDecoder`): `StyledConvBlock_0..3` at 256 channels (64x64), `StyledConvBlock_up0`
  256->128 (128x128), `StyledConvBlock_up1` 128->64 (256x256), `conv_img` = EqualConv2d(64, 3, 1)
  then tanh. A `StyledConvBlock` is conv0 (upsampling in the up blocks), LeakyReLU(0.2) * sqrt(2),
  PixelNorm, conv1, LeakyReLU(0.2) * sqrt(2), PixelNorm; every conv is a `ModulatedConv2d` fed the
  same style.
- `ModulatedConv2d`: s = 1 + PixelNorm(EqualLinear(256 -> in)(style)) (`mlp_class_std.0.linear`);
  w' = s * w (per input channel); demodulation (3x3 only; not for 1x1 kernels)
  w'' = w' * rsqrt(sum over in, kh, kw of w'^2 + 1e-5) per output channel and sample; when
  upsampling, nearest x2 before the conv; reflect-pad 1; a grouped conv (groups = batch) of the
  batch reshaped to one image; + bias (`bias` [1, out, 1, 1]); then, when upsampling, the blur.
  Ours computes the same batch-independently: conv(pad(up(x * s)), w) * d + bias with
  d[n, o] = rsqrt(sum_i s[n, i]^2 * sum_k w[o, i, k]^2 + 1e-5), one shared weight for the whole
  batch; `grouped=True` runs the reference's grouped form (tests prove the two agree).
- `Blur`: the depthwise 3x3 kernel [1, 2, 1] x [1, 2, 1] / 16, zero padding 1, applied through a
  custom autograd Function (`BlurFunction` / `BlurFunctionBackward`) that ONNX export cannot
  trace; its `weight` and `weight_flip` buffers are saved in checkpoints. Ours is an ordinary
  depthwise `F.conv2d` with a non-persistent buffer (the same numbers, exportable, twice
  differentiable for R1); importing checks the saved buffers hold that kernel and drops them.
- Noise injection: the reference generator has none (no StyleGAN noise inputs); there is nothing
  random in our forward pass.
- Continuous aging (`StyledDecoder.forward(traverse=True)`, `run_scripts/traversal.sh`
  --interp_step 0.05): the styles of the 6 classes are computed, then for each pair of adjacent
  classes alpha = 1, 1-step, .., step and style = alpha * w_i + (1 - alpha) * w_{i+1}, plus the
  last class's style: 5 * 20 + 1 = 101 frames, decoded in one batch with the identity features
  repeated. The interpolation is of styles (the mapping's outputs), not of age codes
  (`interpolate_styles`, `LATSGenerator.style_at`, `traversal_positions`).
- `StyleGANDiscriminator(3, ndf 64, n_layers 6, numClasses 6)`: EqualConv2d 1x1 3->64,
  LeakyReLU(0.2); six non-modulated `StyledConvBlock(downsample)` to min(2 * width, 512):
  reflect-pad 1, conv 3x3, LeakyReLU; blur, reflect-pad 1, conv 3x3, 2x2 average pool, LeakyReLU
  (no gain, no PixelNorm); minibatch standard deviation (one channel: the mean over C, H, W of
  sqrt(var over the batch + 1e-8)); reflect-pad 1, conv 3x3 513->512, LeakyReLU, conv 4x4 512->6,
  LeakyReLU: one logit per class ([N, 6, 1, 1]; ours returns [N, 6]). The loss
  (`SelectiveClassesNonSatGANLoss`) reads the target class's logit.
- Files (`base_model.save_network`, `LATS_model.save`): `latest_net_G.pth` (the trained
  generator) and `latest_net_g_running.pth` (its exponential moving average, decay 0.999, what
  test.py loads), `latest_net_D.pth`; plain `torch.save(state_dict)` of the unwrapped module
  (DataParallel's `module.` prefix is stripped on saving; we strip it too if present).

The layers (equalised convs and linears, pixel norm, blur, modulated conv, the blocks) are in
`exprengine.models.lats_layers`.

Sizes: `lats` is the reference's (about 17 M generator parameters, 6 M of them in the age encoder,
which inference does not use); `lats-small` divides every width by 4 (about 1.1 M), small enough
to train on a few CPU cores. Both are built by the same code from `LATSConfig`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from exprengine.ages import AGE_CLASSES, NUM_AGE_CLASSES
from exprengine.errors import UserError
from exprengine.models.lats_layers import (LEAK, Blur, DownBlock, EqualConv2d, EqualLinear, IdentityBlock,
                                           ModulatedConv2d, StyledBlock, blur_kernel, minibatch_stddev, pixel_norm)

CODE_PER_CLASS = 50                             # gen_dim_per_style
CODE_DIM = CODE_PER_CLASS * NUM_AGE_CLASSES     # 300
CODE_NOISE = 0.2                                # the reference's noise_sigma on age codes
FAMILY = "lats"


# --- config -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LATSConfig:
    """Everything needed to rebuild a LATS model (stored as JSON beside its weights).

    encoder_dims: the identity encoder's widths (stem, then after each stride-2 conv); the last is
    the features' width. decoder_dims: the styled blocks' width (= encoder_dims[-1]), then each
    upsampling block's; as many as encoder_dims, so the output has the input's size.
    """

    name: str = "lats"
    family: str = FAMILY
    image_size: int = 256
    encoder_dims: tuple[int, ...] = (64, 128, 256)
    encoder_blocks: int = 4
    decoder_dims: tuple[int, ...] = (256, 128, 64)
    decoder_blocks: int = 4
    age_encoder_dims: tuple[int, ...] = (64, 128, 256, 512, 1024)
    mapping_dim: int = 256
    mapping_layers: int = 8
    style_dim: int = 256
    num_classes: int = NUM_AGE_CLASSES
    code_per_class: int = CODE_PER_CLASS
    discriminator_dims: tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512)

    @property
    def code_dim(self) -> int:
        """The age code's length, num_classes * code_per_class (300)."""
        return self.num_classes * self.code_per_class

    @property
    def feature_size(self) -> int:
        """The identity features' side in pixels (64 at 256x256)."""
        return self.image_size >> (len(self.encoder_dims) - 1)

    def generator_fields(self) -> dict:
        """The fields that shape the generator (all but name, image size and the discriminator)."""
        d = self.to_dict()
        for k in ("name", "image_size", "discriminator_dims"):
            d.pop(k)
        return d

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict (widths as lists, `family` "lats"), as stored in weights
        files and engine manifests; `from_dict` reads it back."""
        d = asdict(self)
        for k in ("encoder_dims", "decoder_dims", "age_encoder_dims", "discriminator_dims"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LATSConfig":
        """The config from `to_dict()`'s form, read from a file: every field checked for type and
        bounds and the widths for consistency. Raises UserError."""
        fields = {f for f in cls.__dataclass_fields__}
        if not isinstance(d, dict) or set(d) != fields:
            wrong = sorted(map(str, (set(d) ^ fields) if isinstance(d, dict) else fields))[:3]
            raise UserError(f"a LATS config needs exactly the fields {', '.join(sorted(fields))} "
                            f"(wrong or missing: {', '.join(w[:40] for w in wrong)})")

        def whole(key, value, low, high):
            if type(value) is not int or not low <= value <= high:
                raise UserError(f"LATS config {key} must be a whole number in {low}..{high}, not {str(value)[:40]}")
            return value

        def widths(key, count):
            v = d[key]
            if not isinstance(v, (list, tuple)) or not count[0] <= len(v) <= count[1]:
                raise UserError(f"LATS config {key} must be a list of {count[0]} to {count[1]} widths")
            return tuple(whole(key, w, 1, 4096) for w in v)

        if d["family"] != FAMILY or not isinstance(d["name"], str) or not 1 <= len(d["name"]) <= 64:
            raise UserError("a LATS config's family must be 'lats' and its name 1 to 64 characters")
        config = cls(name=d["name"], image_size=whole("image_size", d["image_size"], 32, 1024),
                     encoder_dims=widths("encoder_dims", (2, 6)), encoder_blocks=whole("encoder_blocks", d["encoder_blocks"], 0, 32),
                     decoder_dims=widths("decoder_dims", (2, 6)), decoder_blocks=whole("decoder_blocks", d["decoder_blocks"], 0, 32),
                     age_encoder_dims=widths("age_encoder_dims", (1, 8)),
                     mapping_dim=whole("mapping_dim", d["mapping_dim"], 1, 4096),
                     mapping_layers=whole("mapping_layers", d["mapping_layers"], 1, 32),
                     style_dim=whole("style_dim", d["style_dim"], 1, 4096),
                     num_classes=whole("num_classes", d["num_classes"], NUM_AGE_CLASSES, NUM_AGE_CLASSES),
                     code_per_class=whole("code_per_class", d["code_per_class"], 1, 256),
                     discriminator_dims=widths("discriminator_dims", (1, 10)))
        if config.decoder_dims[0] != config.encoder_dims[-1] or len(config.decoder_dims) != len(config.encoder_dims):
            raise UserError("LATS config decoder_dims must start at the features' width (encoder_dims' last) "
                            "and have as many widths as encoder_dims")
        if config.image_size != 4 << (len(config.discriminator_dims) - 1):
            raise UserError(f"LATS config image_size {config.image_size} must be 4 * 2^(number of discriminator "
                            f"downsamplings, {len(config.discriminator_dims) - 1}): the critic ends at 4x4")
        return config


LATS_CONFIGS: dict[str, LATSConfig] = {
    "lats": LATSConfig(),
    "lats-small": LATSConfig(name="lats-small", encoder_dims=(16, 32, 64), decoder_dims=(64, 32, 16),
                             age_encoder_dims=(16, 32, 64, 128, 256), mapping_dim=64, style_dim=64,
                             discriminator_dims=(16, 32, 64, 128, 128, 128, 128)),
}
LATS_DESCRIPTIONS = {
    "lats": "Lifespan Age Transformation Synthesis at the reference's size (256x256, 6 age classes; "
            "imports the authors' generators)",
    "lats-small": "LATS with every width / 4 (trains on a few CPU cores)",
}


def lats_config(name: str) -> LATSConfig:
    """The registered LATSConfig called `name` ("lats", "lats-small"); UserError otherwise."""
    if name not in LATS_CONFIGS:
        raise UserError(f"unknown LATS model {name!r}; choose one of: {', '.join(LATS_CONFIGS)}")
    return LATS_CONFIGS[name]


# --- networks -----------------------------------------------------------------------------------
class LATSIdentityEncoder(nn.Module):
    """Image [N, 3, S, S] in [-1, 1] -> identity features [N, encoder_dims[-1], S/4, S/4] (two
    stride-2 convs for the default three widths): stem 7x7, stride-2 3x3 convs, each followed by
    pixel_norm and ReLU, then `encoder_blocks` IdentityBlocks."""

    def __init__(self, config: LATSConfig):
        super().__init__()
        dims = config.encoder_dims
        self.stem = EqualConv2d(3, dims[0], 7, pad=3)
        self.downs = nn.ModuleList(EqualConv2d(a, b, 3, stride=2, pad=1) for a, b in zip(dims, dims[1:]))
        self.blocks = nn.ModuleList(IdentityBlock(dims[-1]) for _ in range(config.encoder_blocks))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, C, S', S']."""
        x = torch.relu(pixel_norm(self.stem(image)))
        for down in self.downs:
            x = torch.relu(pixel_norm(down(x)))
        for block in self.blocks:
            x = block(x)
        return x


class LATSAgeEncoder(nn.Module):
    """Image [N, 3, S, S] in [-1, 1] -> age code estimate [N, code_dim] (300): stem 7x7, stride-2
    3x3 convs, each followed by LeakyReLU(0.2), a 1x1 conv to code_dim, mean over the image. For
    training (the age-code L1 of the generated and the real image); inference does not use it."""

    def __init__(self, config: LATSConfig):
        super().__init__()
        dims = config.age_encoder_dims
        self.stem = EqualConv2d(3, dims[0], 7, pad=3)
        self.downs = nn.ModuleList(EqualConv2d(a, b, 3, stride=2, pad=1) for a, b in zip(dims, dims[1:]))
        self.head = EqualConv2d(dims[-1], config.code_dim, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, code_dim]."""
        x = F.leaky_relu(self.stem(image), LEAK)
        for down in self.downs:
            x = F.leaky_relu(down(x), LEAK)
        return self.head(x).mean(dim=(2, 3))


class LATSMapping(nn.Module):
    """Age code [N, code_dim] -> style [N, style_dim]: pixel_norm, then `mapping_layers` equalised
    linear layers, each followed by LeakyReLU(0.2) (not the last) and pixel_norm."""

    def __init__(self, config: LATSConfig):
        super().__init__()
        dims = [config.code_dim] + [config.mapping_dim] * (config.mapping_layers - 1) + [config.style_dim]
        self.layers = nn.ModuleList(EqualLinear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """[N, code_dim] -> [N, style_dim]."""
        x = pixel_norm(code)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.leaky_relu(x, LEAK)
            x = pixel_norm(x)
        return x


class LATSDecoder(nn.Module):
    """Features [N or 1, C, s, s] and style [N, style_dim] -> image [N, 3, S, S] in [-1, 1]:
    `decoder_blocks` StyledBlocks at decoder_dims[0], one upsampling StyledBlock per further
    width, an equalised 1x1 conv to RGB, tanh."""

    def __init__(self, config: LATSConfig):
        super().__init__()
        dims, sd = config.decoder_dims, config.style_dim
        self.blocks = nn.ModuleList([StyledBlock(dims[0], dims[0], sd) for _ in range(config.decoder_blocks)]
                                    + [StyledBlock(a, b, sd, upsample=True) for a, b in zip(dims, dims[1:])])
        self.to_rgb = EqualConv2d(dims[-1], 3, 1)

    def forward(self, features: torch.Tensor, style: torch.Tensor, grouped: bool = False) -> torch.Tensor:
        """[N or 1, C, s, s], [N, style_dim] -> [N, 3, S, S]; `grouped`: the reference's conv form."""
        x = features
        for block in self.blocks:
            x = block(x, style, grouped)
        return torch.tanh(self.to_rgb(x))


class LATSGenerator(nn.Module):
    """The LATS generator: identity encoder, mapping network, modulated decoder (and the age
    encoder, trained with it and stored in the same file).

        features = g.encode(image)                  # [N,3,256,256] in [-1,1] -> [N,256,64,64]
        style    = g.age_style(g.age_code([0, 5]))  # [N,300] -> [N,256]
        style    = g.style_at(torch.tensor([2.5]))  # a continuous class position, 0..5
        out      = g.decode(features, style)        # -> [N,3,256,256] in [-1,1]
        out      = g(image, code)                   # the same in one call

    (widths for `lats`; `lats-small`'s are a quarter.) Deterministic: no noise anywhere."""

    def __init__(self, config: LATSConfig | None = None):
        super().__init__()
        self.config = config = config or LATSConfig()
        self.identity_encoder = LATSIdentityEncoder(config)
        self.age_encoder = LATSAgeEncoder(config)
        self.mapping = LATSMapping(config)
        self.decoder = LATSDecoder(config)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Identity features of images [N, 3, S, S] in [-1, 1] (S = config.image_size):
        [N, encoder_dims[-1], S/4, S/4]."""
        s = self.config.image_size
        assert image.ndim == 4 and tuple(image.shape[1:]) == (3, s, s), \
            f"image must be [N,3,{s},{s}], got {tuple(image.shape)}"
        return self.identity_encoder(image)

    def age_code(self, classes, noise: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """`age_code(classes, self.config.code_per_class, noise, generator)`: [N, code_dim]."""
        return age_code(classes, self.config.code_per_class, noise, generator, device=self.decoder.to_rgb.weight.device)

    def age_style(self, code: torch.Tensor) -> torch.Tensor:
        """Style vectors of age codes: [N, code_dim] (300) -> [N, style_dim] (the mapping network)."""
        assert code.ndim == 2 and code.shape[1] == self.config.code_dim, \
            f"age code must be [N,{self.config.code_dim}], got {tuple(code.shape)}"
        return self.mapping(code)

    def class_styles(self) -> torch.Tensor:
        """The styles of the classes' noiseless codes, [num_classes, style_dim], class 0 first."""
        return self.age_style(self.age_code(range(self.config.num_classes)))

    def style_at(self, positions) -> torch.Tensor:
        """Styles at continuous class positions (floats in 0..num_classes-1, e.g. from
        `exprengine.ages.class_position`), [M] -> [M, style_dim]: the reference's interpolation of
        adjacent classes' styles (`interpolate_styles` of `class_styles()`)."""
        return interpolate_styles(self.class_styles(), positions)

    def decode(self, features: torch.Tensor, style: torch.Tensor, grouped: bool = False) -> torch.Tensor:
        """Images [N, 3, S, S] in [-1, 1] from features [N or 1, C, S/4, S/4] and styles
        [N, style_dim]; features with a batch of one are shared by every style. `grouped`: the
        reference's grouped-conv form (tests only)."""
        c, f = self.config.encoder_dims[-1], self.config.feature_size
        assert features.ndim == 4 and tuple(features.shape[1:]) == (c, f, f), \
            f"features must be [N,{c},{f},{f}], got {tuple(features.shape)}"
        assert style.ndim == 2 and style.shape[1] == self.config.style_dim, \
            f"style must be [N,{self.config.style_dim}], got {tuple(style.shape)}"
        return self.decoder(features, style, grouped)

    def forward(self, image: torch.Tensor, age_code: torch.Tensor) -> torch.Tensor:
        """image [N, 3, S, S] in [-1, 1], age_code [N, code_dim] -> image [N, 3, S, S] in [-1, 1]."""
        return self.decode(self.encode(image), self.age_style(age_code))


class LATSDiscriminator(nn.Module):
    """The multi-class critic (training only): image [N, 3, S, S] -> one logit per age class
    [N, num_classes]. A 1x1 conv from RGB, one DownBlock per further width (S / 64 = 4 at the
    end for the default seven widths), minibatch standard deviation, a 3x3 conv, a 4x4 conv to
    the classes, LeakyReLU(0.2) after each conv (the reference's, the logits' included). The
    minibatch statistic makes each sample's logits depend on the batch, as in the reference."""

    def __init__(self, config: LATSConfig | None = None):
        super().__init__()
        config = config or LATSConfig()
        dims = config.discriminator_dims
        self.from_rgb = EqualConv2d(3, dims[0], 1)
        self.blocks = nn.ModuleList(DownBlock(a, b) for a, b in zip(dims, dims[1:]))
        self.head = EqualConv2d(dims[-1] + 1, dims[-1], 3, pad=1)
        self.classes = EqualConv2d(dims[-1], config.num_classes, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, num_classes]."""
        x = F.leaky_relu(self.from_rgb(image), LEAK)
        for block in self.blocks:
            x = block(x)
        x = F.leaky_relu(self.head(minibatch_stddev(x)), LEAK)
        return F.leaky_relu(self.classes(x), LEAK).flatten(1)


# --- age codes and styles -----------------------------------------------------------------------
def age_code(classes, code_per_class: int = CODE_PER_CLASS, noise: float = 0.0,
             generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """The age codes of whole classes: [N] class indices (ints, or a tensor of whole numbers)
    -> [N, NUM_AGE_CLASSES * code_per_class] float32 (300 values), 1 on the class's block of
    `code_per_class` values and 0 elsewhere, plus N(0, noise^2) on every value when `noise` > 0
    (the reference trains with noise 0.2, `CODE_NOISE`; inference uses none).
    UserError for a class that is not a whole number in 0..5. For ages between classes
    interpolate styles, not codes (`interpolate_styles`), as the reference does."""
    c = torch.as_tensor(list(classes) if not isinstance(classes, torch.Tensor) else classes).reshape(-1)
    if c.is_floating_point() and not bool((c == c.round()).all()):
        raise UserError("`classes` must be whole age classes; interpolate styles for positions between classes")
    if c.numel() and not (c.dtype != torch.bool and bool((c >= 0).all()) and bool((c < NUM_AGE_CLASSES).all())):
        raise UserError(f"`classes` must be age classes 0 to {NUM_AGE_CLASSES - 1} ({', '.join(f'{a}-{b}' for a, b in AGE_CLASSES)})")
    c = c.long().to(device)
    code = torch.zeros(c.numel(), NUM_AGE_CLASSES, code_per_class, device=device)
    code[torch.arange(c.numel(), device=device), c] = 1.0
    code = code.reshape(c.numel(), -1)
    if noise > 0:
        code = code + noise * torch.randn(code.shape, generator=generator).to(code.device)
    return code


def interpolate_styles(class_styles: torch.Tensor, positions) -> torch.Tensor:
    """Styles at continuous class positions: class_styles [C, D] (class 0 first), positions [M]
    floats in 0..C-1 -> [M, D]. Position i + t (0 <= t < 1) is alpha * w_i + (1 - alpha) * w_{i+1}
    with alpha = 1 - t, the reference's traversal formula; position C-1 is w_{C-1}.
    UserError for a position outside 0..C-1 or not finite."""
    p = torch.as_tensor(positions, dtype=class_styles.dtype, device=class_styles.device).reshape(-1)
    top = class_styles.shape[0] - 1
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or bool((p > top).any()):
        raise UserError(f"`positions` must be class positions between 0 and {top}")
    i = p.floor().clamp(max=top - 1).long()
    alpha = (1.0 - (p - i.to(p.dtype)))[:, None]
    return alpha * class_styles[i] + (1.0 - alpha) * class_styles[i + 1]


def traversal_positions(step: float = 0.05, num_classes: int = NUM_AGE_CLASSES) -> torch.Tensor:
    """The class positions of the reference's traversal (float32, [ (num_classes-1)/step + 1 ]):
    0, step, 2 step, .., num_classes - 1; 101 for step 0.05 (traversal.sh), 11 for 0.5 (the
    default interp_step). UserError unless 1/step is a whole number (the reference's alphas
    otherwise leave an uneven last gap)."""
    per = round(1.0 / step) if step > 0 else 0
    if per < 1 or abs(per * step - 1.0) > 1e-6:
        raise UserError(f"`step` must divide 1 into whole steps (0.5, 0.1, 0.05, ...), got {step!r}")
    return torch.arange((num_classes - 1) * per + 1, dtype=torch.float32) / per


# --- the authors' checkpoints ---------------------------------------------------------------------
#: Reference key patterns (after `module.` is stripped) -> how they map onto ours; see `convert_lats_state_dict`.
_ID_CONV = re.compile(r"id_encoder\.encoder\.(\d+)\.conv\.(weight_orig|bias)")
_ID_BLOCK = re.compile(r"id_encoder\.encoder\.(\d+)\.conv_block\.([15])\.conv\.(weight_orig|bias)")
_AGE_CONV = re.compile(r"age_encoder\.encoder\.(\d+)\.conv\.(weight_orig|bias)")
_MLP = re.compile(r"decoder\.mlp\.model\.(\d+)\.linear\.(weight_orig|bias)")
_STYLED = re.compile(r"decoder\.StyledConvBlock_(up)?(\d+)\.conv([01])\."
                     r"(weight|bias|mlp_class_std\.0\.linear\.weight_orig|mlp_class_std\.0\.linear\.bias|blur\.weight|blur\.weight_flip)")
_TO_RGB = re.compile(r"decoder\.conv_img\.0\.conv\.(weight_orig|bias)")
_LEAF = {"weight_orig": "weight", "bias": "bias", "weight": "weight",
         "mlp_class_std.0.linear.weight_orig": "affine.weight", "mlp_class_std.0.linear.bias": "affine.bias"}


def _ranked(found: dict[int, dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The groups of a Sequential's layers in index order."""
    return [found[i] for i in sorted(found)]


def convert_lats_state_dict(state_dict: Mapping[str, torch.Tensor], source: object = "checkpoint"
                            ) -> tuple[LATSConfig, dict[str, torch.Tensor]]:
    """(config, state dict with our key names) of a generator state dict in the reference's layout
    (`networks.Generator`: `id_encoder.encoder.*`, `age_encoder.encoder.*`, `decoder.mlp.model.*`,
    `decoder.StyledConvBlock_{k,upk}.conv{0,1}.*`, `decoder.conv_img.0.*`; `module.` /
    `_orig_mod.` prefixes allowed). The config's widths are read from the shapes; it is named
    after the registered config of the same generator ("lats" for the authors' files), else
    "lats-imported" (256x256). Key mapping, in each Sequential's index order:

    | reference                                        | ours                                   |
    |--------------------------------------------------|----------------------------------------|
    | id_encoder.encoder.{1; 5, 9}.conv.weight_orig    | identity_encoder.{stem; downs.j}.weight|
    | id_encoder.encoder.{12..}.conv_block.{1,5}.conv  | identity_encoder.blocks.j.conv{1,2}    |
    | age_encoder.encoder.{1; 4..13; 15}.conv          | age_encoder.{stem; downs.j; head}      |
    | decoder.mlp.model.{1,4,..,22}.linear             | mapping.layers.j                       |
    | decoder.StyledConvBlock_k / _upk .convc          | decoder.blocks.{k / blocks+k}.convc    |
    |   .weight, .bias [1,out,1,1]                     |   .weight, .bias [out]                 |
    |   .mlp_class_std.0.linear.weight_orig, .bias     |   .affine.weight, .affine.bias         |
    |   .blur.weight, .blur.weight_flip                |   checked to be the fixed kernel, dropped |
    | decoder.conv_img.0.conv                          | decoder.to_rgb                         |

    `weight_orig` values are copied unscaled: our layers apply sqrt(2 / fan_in) at run time as the
    reference's hooks do. Tensors are not copied or cast. Raises UserError naming `source` for a
    discriminator's or another model's keys, a key that fits no layer, a missing part, a blur
    buffer that is not the fixed kernel, or widths that do not chain."""
    from exprengine.models.ganimation import strip_module_prefix
    sd = strip_module_prefix(state_dict)
    tops = {k.partition(".")[0] for k in sd}
    sample = ", ".join(sorted(sd)[:3]) or "none"
    if "gan_head" in tops:
        raise UserError(f"{source} is a LATS discriminator checkpoint (keys {sample}), not a generator")
    if not {"id_encoder", "decoder"} <= tops:
        raise UserError(f"{source} is not a LATS generator checkpoint (keys {sample}); expected the authors' "
                        "layout (id_encoder.*, age_encoder.*, decoder.*), e.g. latest_net_g_running.pth")
    id_convs: dict[int, dict] = {}
    id_blocks: dict[int, dict] = {}
    age_convs: dict[int, dict] = {}
    mlp: dict[int, dict] = {}
    styled: dict[tuple[int, int], dict] = {}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    kernel = blur_kernel()
    for key, value in sd.items():
        if m := _ID_CONV.fullmatch(key):
            id_convs.setdefault(int(m[1]), {})[_LEAF[m[2]]] = value
        elif m := _ID_BLOCK.fullmatch(key):
            id_blocks.setdefault(int(m[1]), {})[f"conv{1 if m[2] == '1' else 2}.{_LEAF[m[3]]}"] = value
        elif m := _AGE_CONV.fullmatch(key):
            age_convs.setdefault(int(m[1]), {})[_LEAF[m[2]]] = value
        elif m := _MLP.fullmatch(key):
            mlp.setdefault(int(m[1]), {})[_LEAF[m[2]]] = value
        elif m := _STYLED.fullmatch(key):
            leaf = m[4]
            if leaf.startswith("blur."):
                if value.ndim != 4 or tuple(value.shape[1:]) != (1, 3, 3) or \
                        not torch.allclose(value.float().cpu(), kernel.expand_as(value), atol=1e-6):
                    raise UserError(f"{source} has a blur buffer {key} that is not the reference's fixed "
                                    "[1,2,1]x[1,2,1]/16 kernel")
                continue
            if leaf == "bias" and value.ndim == 4:
                value = value.reshape(-1)
            styled.setdefault((1 if m[1] else 0, int(m[2])), {})[f"conv{m[3]}.{_LEAF[leaf]}"] = value
        elif m := _TO_RGB.fullmatch(key):
            out[f"decoder.to_rgb.{_LEAF[m[1]]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise UserError(f"{source}: {len(unknown)} keys fit no layer of the LATS generator "
                        f"({', '.join(unknown[:3])})")
    convs, blocks, ages, linears = _ranked(id_convs), _ranked(id_blocks), _ranked(age_convs), _ranked(mlp)
    plain = sorted(k for k in styled if k[0] == 0)
    ups = sorted(k for k in styled if k[0] == 1)
    parts = {"identity encoder convs": len(convs) >= 2, "age encoder convs": len(ages) >= 2,
             "mapping layers": bool(linears), "upsampling styled blocks": bool(ups),
             "RGB conv": "decoder.to_rgb.weight" in out}
    missing = [name for name, ok in parts.items() if not ok]
    if missing:
        raise UserError(f"{source} does not hold a complete LATS generator (no {', '.join(missing)})")
    for name, group in (("identity_encoder.stem", convs[0]), ("age_encoder.stem", ages[0]), ("age_encoder.head", ages[-1])):
        out.update({f"{name}.{k}": v for k, v in group.items()})
    for prefix, groups in (("identity_encoder.downs", convs[1:]), ("identity_encoder.blocks", blocks),
                           ("age_encoder.downs", ages[1:-1]), ("mapping.layers", linears),
                           ("decoder.blocks", [styled[k] for k in plain + ups])):
        for j, group in enumerate(groups):
            out.update({f"{prefix}.{j}.{k}": v for k, v in group.items()})

    def width(group: dict, axis: int = 0) -> int:
        w = group.get("weight", group.get("conv0.weight"))
        if w is None or w.ndim < 2:
            raise UserError(f"{source} has a LATS layer without a weight of at least two dimensions")
        return int(w.shape[axis])

    linear_widths = [width(g) for g in linears]
    code_dim = width(linears[0], 1)
    if code_dim % NUM_AGE_CLASSES:
        raise UserError(f"{source} has an age code of {code_dim} values, not {NUM_AGE_CLASSES} classes of equal length")
    fields = dict(encoder_dims=tuple(width(g) for g in convs), encoder_blocks=len(blocks),
                  decoder_dims=(width(styled[ups[0]], 1), *(width(styled[k]) for k in ups)),
                  decoder_blocks=len(plain), age_encoder_dims=tuple(width(g) for g in ages[:-1]),
                  mapping_dim=linear_widths[0], mapping_layers=len(linears), style_dim=linear_widths[-1],
                  code_per_class=code_dim // NUM_AGE_CLASSES)
    config = _config_for(fields, source)
    return config, out


def _config_for(fields: dict, source: object) -> LATSConfig:
    """The registered config whose generator has these fields, else a checked "lats-imported" one."""
    for config in LATS_CONFIGS.values():
        if all(config.generator_fields()[k] == (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()):
            return config
    e0 = fields["encoder_dims"][0]
    d = LATSConfig(name="lats-imported").to_dict()
    d.update({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
    d["discriminator_dims"] = [e0] + [min(e0 << (i + 1), 512) for i in range(6)]
    try:
        return LATSConfig.from_dict(d)
    except UserError as e:
        raise UserError(f"{source} holds a LATS generator of an unsupported shape ({e})") from None


def import_lats_checkpoint(path: str | os.PathLike, model_name: str | None = None) -> LATSGenerator:
    """A `LATSGenerator` (on the CPU, eval mode, float32 weights) from the authors' generator file
    (`latest_net_g_running.pth` or `latest_net_G.pth`: a plain or legacy-format `torch.save` of
    the state dict, `module.` prefixes allowed, read with `torch.load(weights_only=True)` only,
    `ganimation.load_state_dict`) converted by `convert_lats_state_dict`, or from our own
    `.safetensors` of a LATS model (`weights.load_weights`).

    model_name: None (the architecture is read from the file), or a registered LATS name that the
    file must hold ("lats" for the authors' files). Raises UserError (one sentence naming the path)
    for an unknown `model_name` (before any reading), a missing or unreadable file, a pickle that
    references Python objects, a file of another model or layout (GANimation, our weights of
    another model, a LATS discriminator, unknown keys), shapes that do not fit, non-finite weights."""
    if model_name is not None:
        lats_config(model_name)                          # unknown names fail before any reading
    from exprengine.models.ganimation import _looks_like_safetensors, load_state_dict
    from exprengine.models.weights import existing_file, load_strictly, load_weights
    p = existing_file(path, "checkpoint")
    if p.suffix.lower() == ".safetensors" or _looks_like_safetensors(p):
        model = load_weights(p)
        if not isinstance(model, LATSGenerator):
            raise UserError(f"{p} holds a {model.config.name} model, not a LATS generator")
    else:
        config, state_dict = convert_lats_state_dict(load_state_dict(p), p)
        model = LATSGenerator(config)
        load_strictly(model, state_dict, p)
    if model_name is not None and model.config.generator_fields() != lats_config(model_name).generator_fields():
        raise UserError(f"{p} holds a {model.config.name} generator, not {model_name}; "
                        f"use `model_name` {model.config.name} or None")
    return model.eval()


__all__ = [
    "AGE_CLASSES", "CODE_DIM", "CODE_NOISE", "CODE_PER_CLASS", "LATS_CONFIGS", "LATSConfig", "LATSGenerator",
    "LATSIdentityEncoder", "LATSAgeEncoder", "LATSMapping", "LATSDecoder", "LATSDiscriminator", "ModulatedConv2d",
    "Blur", "EqualConv2d", "EqualLinear", "age_code", "interpolate_styles", "traversal_positions", "lats_config",
    "convert_lats_state_dict", "import_lats_checkpoint",
]
