"""The LATS age models: shapes, the batch-independent modulated conv against the reference's
grouped form, age codes and style interpolation as the reference's traversal, the authors'
checkpoint layout imported with identical outputs, refusals of other files, our weights format,
determinism.

The authors' layout is re-created in `lats_reference.py` (written from the facts in
`exprengine.models.lats`'s docstring, not copied).
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from exprengine.errors import UserError
from exprengine.models import (build_model, create_model, describe, is_lats, list_generators, list_models,
                               model_config_from_dict)
from exprengine.models.lats import (CODE_DIM, LATS_CONFIGS, LATSConfig, LATSDiscriminator, LATSGenerator,
                                    age_code, convert_lats_state_dict, import_lats_checkpoint,
                                    interpolate_styles, traversal_positions)
from exprengine.models.lats_layers import Blur, ModulatedConv2d, blur_kernel
from exprengine.models.weights import load_weights, model_sha256, save_weights

from lats_reference import ReferenceGenerator, randomise

SMALL = LATS_CONFIGS["lats-small"]


def images(n: int, seed: int, size: int = 256, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1).to(dtype)


def noisy_codes(classes: list[int], seed: int) -> torch.Tensor:
    """Class codes with the reference's training noise, so that every one of the 300 inputs matters."""
    return age_code(classes, noise=0.2, generator=torch.Generator().manual_seed(seed))


def perturbed_small(seed: int = 0) -> LATSGenerator:
    """lats-small with random biases too (fresh biases are 0), eval mode."""
    model = create_model("lats-small", seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def small():
    return perturbed_small()


@pytest.fixture(scope="module")
def reference_small(tmp_path_factory):
    """(randomised reference generator at lats-small's widths, path of its state dict saved with the
    `module.` prefix in the zip format, path of the plain state dict as a legacy (non-zip) pickle)."""
    torch.manual_seed(3)
    ref = randomise(ReferenceGenerator(ngf=16, latent_dim=64), seed=3)
    folder = tmp_path_factory.mktemp("lats-reference")
    prefixed, legacy = folder / "latest_net_G.pth", folder / "latest_net_g_running.pth"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, prefixed)
    torch.save(ref.state_dict(), legacy, _use_new_zipfile_serialization=False)
    return ref, prefixed, legacy


# --- registry and config ------------------------------------------------------------------------
def test_registry_builds_both_sizes_from_the_same_code():
    assert {"lats", "lats-small"} <= set(list_models()) and not {"lats", "lats-small"} & set(list_generators())
    assert "rig" in list_models() and "convnext6" in list_models()
    for name in ("lats", "lats-small"):
        assert describe(name)
        config = LATS_CONFIGS[name]
        assert config.to_dict()["family"] == "lats" and is_lats(config.to_dict()) and is_lats(config)
        assert model_config_from_dict(config.to_dict()) == config
        assert LATSConfig.from_dict(config.to_dict()) == config
        rebuilt = build_model(config.to_dict())
        assert isinstance(rebuilt, LATSGenerator) and not rebuilt.training and rebuilt.config == config
    assert SMALL.encoder_dims == tuple(w // 4 for w in LATS_CONFIGS["lats"].encoder_dims)
    assert SMALL.decoder_dims == tuple(w // 4 for w in LATS_CONFIGS["lats"].decoder_dims)
    assert not is_lats(create_model("rig")) and not is_lats({"family": "rig"})


def test_seeded_creation_is_reproducible():
    a, b, c = create_model("lats-small", seed=1), create_model("lats-small", seed=1), create_model("lats-small", seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.decoder.to_rgb.weight, c.decoder.to_rgb.weight)


@pytest.mark.parametrize("change, words", [
    ({"family": "rig"}, "family"),
    ({"decoder_dims": [32, 32, 16]}, "decoder_dims"),
    ({"encoder_dims": [16, "32", 64]}, "encoder_dims"),
    ({"image_size": 128}, "image_size"),
    ({"num_classes": 5}, "num_classes"),
    ({"mapping_layers": 0}, "mapping_layers"),
    ({"extra": 1}, "exactly the fields"),
])
def test_config_from_dict_refuses_bad_fields(change, words):
    d = SMALL.to_dict() | change
    with pytest.raises(UserError, match=words):
        LATSConfig.from_dict(d)


# --- shapes -------------------------------------------------------------------------------------
def test_small_generator_shapes_and_ranges(small):
    x = images(2, seed=1)
    with torch.no_grad():
        features = small.encode(x)
        assert features.shape == (2, 64, 64, 64)
        code = small.age_code([0, 5])
        assert code.shape == (2, CODE_DIM) == (2, 300)
        style = small.age_style(code)
        assert style.shape == (2, SMALL.style_dim)
        out = small.decode(features, style)
        assert out.shape == (2, 3, 256, 256) and out.abs().max() <= 1
        torch.testing.assert_close(small(x, code), out, rtol=0, atol=0)
        assert small.age_encoder(x).shape == (2, 300)
        # one face's features shared by several styles (a traversal) = the features repeated
        styles = small.style_at(torch.tensor([1.5, 5.0]))
        shared = small.decode(features[:1], styles)
        torch.testing.assert_close(shared, small.decode(features[:1].expand(2, -1, -1, -1), styles), rtol=0, atol=0)
    with pytest.raises(AssertionError, match="image must be"):
        small.encode(images(1, seed=1, size=128))


def test_reference_size_generator_has_the_reference_parameter_count():
    ours = create_model("lats")
    ref = ReferenceGenerator()                                       # ngf 64, latent 256: the authors'
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in ours.parameters()) > 17_000_000
    with torch.no_grad():
        out = ours(images(1, seed=2), ours.age_code([3]))
        assert ours.encode(images(1, seed=2)).shape == (1, 256, 64, 64)
    assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all()


def test_discriminator_gives_one_logit_per_class_and_is_twice_differentiable():
    tiny = LATSConfig.from_dict(SMALL.to_dict() | {"name": "tiny", "image_size": 64, "discriminator_dims": [8, 16, 16, 16, 16]})
    assert LATSDiscriminator(SMALL)(images(2, seed=4)).shape == (2, 6)
    d = LATSDiscriminator(tiny)
    x = images(3, seed=4, size=64).requires_grad_()
    logits = d(x)
    assert logits.shape == (3, 6)
    (grad,) = torch.autograd.grad(logits[:, 2].sum(), x, create_graph=True)   # R1 needs the second order
    grad.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())


# --- modulated convolution ----------------------------------------------------------------------
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("kernel", [3, 1])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_batch_independent_modulated_conv_equals_the_grouped_form(upsample, kernel, batch):
    torch.manual_seed(10 * batch + kernel)
    conv = ModulatedConv2d(16, 24, 32, kernel=kernel, upsample=upsample)
    with torch.no_grad():
        conv.bias.normal_()
        conv.affine.bias.normal_()
        x, style = torch.randn(batch, 16, 12, 12), torch.randn(batch, 32)
        ours, grouped = conv(x, style), conv(x, style, grouped=True)
        assert ours.shape == (batch, 24, 24 if upsample else 12, 24 if upsample else 12)
        torch.testing.assert_close(ours, grouped, rtol=1e-5, atol=1e-5)
        # each sample alone gives the same as in the batch (the point of the batch-independent form)
        torch.testing.assert_close(conv(x[-1:], style[-1:]), ours[-1:], rtol=1e-5, atol=1e-5)


def test_modulated_conv_is_its_definition_written_out():
    """y = conv(pad(x * s), w) / sqrt(sum over in, kh, kw of (w * s)^2 + 1e-5) + bias, per sample
    and output channel, with s = 1 + pixel_norm(affine(style)) and w = weight * sqrt(2 / fan_in)."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 6, 4)
    x, style = torch.randn(2, 8, 7, 7), torch.randn(2, 4)
    with torch.no_grad():
        conv.bias.normal_()
        a = conv.affine.weight * (2 / 4) ** 0.5 @ style.t()
        s = 1 + ((a + conv.affine.bias[:, None]) / torch.sqrt(((a + conv.affine.bias[:, None]) ** 2).mean(0) + 1e-5)).t()
        w = conv.weight * (2 / (8 * 9)) ** 0.5
        direct = F.conv2d(F.pad(x * s[:, :, None, None], (1, 1, 1, 1), mode="reflect"), w)
        norms = torch.sqrt(((w[None] * s[:, None, :, None, None]) ** 2).sum(dim=(2, 3, 4)) + 1e-5)
        expected = direct / norms[:, :, None, None] + conv.bias[None, :, None, None]
        torch.testing.assert_close(conv(x, style), expected, rtol=1e-5, atol=1e-5)


def test_blur_is_the_reference_kernel_as_a_depthwise_conv():
    k = blur_kernel()
    assert torch.equal(k * 16, torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]).view(1, 1, 3, 3))
    blur = Blur(5)
    assert "kernel" not in blur.state_dict()                        # not part of the weights
    x = torch.randn(2, 5, 9, 9)
    expected = torch.stack([F.conv2d(x[:, c:c + 1], k, padding=1)[:, 0] for c in range(5)], dim=1)
    torch.testing.assert_close(blur(x), expected)


def test_an_upsampling_modulated_conv_exports_to_onnx(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    conv = ModulatedConv2d(6, 4, 8, upsample=True).eval()
    x, style = torch.randn(3, 6, 10, 10), torch.randn(3, 8)
    path = tmp_path / "modconv.onnx"

    class Plain(torch.nn.Module):           # forward(x, style) only: the exporter would trace `grouped` as a tensor
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x, style):
            return self.conv(x, style)

    torch.onnx.export(Plain(), (x, style), str(path), input_names=["x", "style"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "style": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (3, 1):
        (y,) = session.run(None, {"x": x[:n].numpy(), "style": style[:n].numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y), conv(x[:n], style[:n]), rtol=1e-4, atol=1e-5)


# --- age codes and styles -----------------------------------------------------------------------
def test_age_code_of_a_class_is_one_on_its_fifty_values():
    code = age_code([0, 3, 5])
    assert code.shape == (3, 300) and code.dtype == torch.float32
    for row, c in enumerate([0, 3, 5]):
        assert torch.equal(code[row, 50 * c:50 * c + 50], torch.ones(50)) and code[row].sum() == 50
    assert torch.equal(age_code(torch.tensor([2.0])), age_code([2]))
    noisy = age_code([1], noise=0.2, generator=torch.Generator().manual_seed(0))
    assert 0.1 < (noisy - age_code([1])).std() < 0.3
    for bad in ([6], [-1], [2.5], torch.tensor([True])):
        with pytest.raises(UserError, match="classes"):
            age_code(bad)


def test_styles_interpolate_adjacent_classes_as_the_reference_traversal(small):
    with torch.no_grad():
        w = small.class_styles()
        assert w.shape == (6, SMALL.style_dim)
        torch.testing.assert_close(w, small.age_style(small.age_code(range(6))), rtol=0, atol=0)
        positions = traversal_positions(0.05)
        assert positions.shape == (101,) and positions[0] == 0 and positions[-1] == 5
        ours = small.style_at(positions)
        # the reference (StyledDecoder.forward, traverse): alphas 1, 0.95, .., 0.05 per class pair, then w_5
        alphas = torch.arange(1, 0, step=-0.05).view(-1, 1)
        frames = [alphas * w[i] + (1 - alphas) * w[i + 1] for i in range(5)] + [w[5:]]
        torch.testing.assert_close(ours, torch.cat(frames), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(small.style_at(torch.arange(6.0)), w, rtol=0, atol=1e-7)
    assert traversal_positions(0.5).tolist() == [i / 2 for i in range(11)]
    with pytest.raises(UserError, match="step"):
        traversal_positions(0.3)
    for bad in ([-0.1], [5.01], [float("nan")]):
        with pytest.raises(UserError, match="positions"):
            interpolate_styles(w, bad)


# --- the authors' checkpoints -------------------------------------------------------------------
def test_reference_recreation_uses_the_authors_key_names(reference_small):
    keys = set(randomise(ReferenceGenerator(ngf=16, latent_dim=64)).state_dict())
    assert {"id_encoder.encoder.1.conv.weight_orig", "id_encoder.encoder.9.conv.bias",
            "id_encoder.encoder.12.conv_block.1.conv.weight_orig", "id_encoder.encoder.15.conv_block.5.conv.bias",
            "age_encoder.encoder.13.conv.weight_orig", "age_encoder.encoder.15.conv.weight_orig",
            "decoder.mlp.model.1.linear.weight_orig", "decoder.mlp.model.22.linear.bias",
            "decoder.StyledConvBlock_0.conv0.weight", "decoder.StyledConvBlock_3.conv1.bias",
            "decoder.StyledConvBlock_up1.conv0.mlp_class_std.0.linear.weight_orig",
            "decoder.StyledConvBlock_up0.conv0.blur.weight", "decoder.StyledConvBlock_up0.conv1.blur.weight_flip",
            "decoder.conv_img.0.conv.weight_orig"} <= keys
    assert ReferenceGenerator(ngf=16, latent_dim=64).decoder.StyledConvBlock_0.conv0.bias.shape == (1, 64, 1, 1)


def test_authors_layout_imports_with_identical_outputs(reference_small):
    ref, prefixed, legacy = reference_small
    ours = import_lats_checkpoint(legacy)
    assert isinstance(ours, LATSGenerator) and not ours.training and ours.config == SMALL
    again = import_lats_checkpoint(prefixed, "lats-small")       # `module.` prefix, zip format
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))
    x, code = images(2, seed=7), noisy_codes([0, 5], seed=8)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), ref.id_encoder(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.age_encoder(x), ref.age_encoder(x), rtol=0, atol=1e-5)
        # float64: the two computations are the same maths, to rounding
        ref64, ours64 = copy.deepcopy(ref).double(), copy.deepcopy(ours).double()
        diff64 = (ours64(x.double(), code.double()) - ref64.infer(x.double(), code.double())).abs().max().item()
        assert diff64 < 1e-10, diff64
        # float32: the reference's grouped form and ours round differently; both lie within ~6e-5 of
        # the float64 result at random weights (14 normalised layers), so they agree to 1e-4
        diff32 = (ours(x, code) - ref.infer(x, code)).abs().max().item()
        assert diff32 < 1e-4, diff32


def test_authors_size_converts_to_the_lats_config(tmp_path):
    ref = randomise(ReferenceGenerator(), seed=4)                  # ngf 64: the released files' shapes
    config, state_dict = convert_lats_state_dict(ref.state_dict())
    assert config == LATS_CONFIGS["lats"]
    path = tmp_path / "latest_net_g_running.pth"
    torch.save(ref.state_dict(), path, _use_new_zipfile_serialization=False)
    ours = import_lats_checkpoint(path, "lats")
    assert torch.equal(ours.decoder.blocks[5].conv1.weight, ref.decoder.StyledConvBlock_up1.conv1.weight)
    assert torch.equal(ours.decoder.blocks[0].conv0.bias, ref.decoder.StyledConvBlock_0.conv0.bias.reshape(-1))
    assert torch.equal(ours.mapping.layers[7].weight, ref.decoder.mlp.model[22].linear.weight_orig)
    with pytest.raises(UserError, match="not lats-small"):
        import_lats_checkpoint(path, "lats-small")


def _one_line(e: pytest.ExceptionInfo, path) -> None:
    text = str(e.value)
    assert "\n" not in text and str(path) in text, text


def test_other_files_are_refused_with_one_sentence_naming_the_path(tmp_path, reference_small):
    from public_layouts import OriginalGenerator
    ref = reference_small[0]
    cases = {}
    torch.save(OriginalGenerator().state_dict(), cases.setdefault("ganimation", tmp_path / "gan.pth"))
    save_weights(create_model("convnext2"), cases.setdefault("ours-other", tmp_path / "convnext2.safetensors"))
    torch.save({"foo.weight": torch.zeros(3)}, cases.setdefault("random", tmp_path / "random.pth"))
    torch.save({"model.1.conv.weight_orig": torch.zeros(4, 3, 1, 1), "gan_head.1.conv.weight_orig": torch.zeros(1)},
               cases.setdefault("discriminator", tmp_path / "latest_net_D.pth"))
    sd = ref.state_dict()
    torch.save({k: v for k, v in sd.items() if k != "decoder.StyledConvBlock_2.conv1.weight"},
               cases.setdefault("missing", tmp_path / "missing.pth"))
    torch.save(sd | {"decoder.StyledConvBlock_up0.conv0.blur.weight": torch.ones(32, 1, 3, 3)},
               cases.setdefault("blur", tmp_path / "blur.pth"))
    torch.save(sd | {"decoder.extra.weight": torch.zeros(1)}, cases.setdefault("extra", tmp_path / "extra.pth"))
    torch.save(sd | {"decoder.conv_img.0.conv.bias": torch.full((3,), float("nan"))},
               cases.setdefault("nan", tmp_path / "nan.pth"))
    (tmp_path / "truncated.pth").write_bytes(reference_small[2].read_bytes()[:5000])
    cases["truncated"] = tmp_path / "truncated.pth"
    with open(cases.setdefault("pickle", tmp_path / "object.pth"), "wb") as f:
        pickle.dump({"x": print}, f)
    expected = {"ganimation": "not a LATS generator", "ours-other": "convnext2", "random": "not a LATS generator",
                "discriminator": "discriminator", "missing": "missing", "blur": "blur", "extra": "fit no layer",
                "nan": "NaN", "truncated": "not a readable", "pickle": "unpickl|not a readable"}
    for name, path in cases.items():
        with pytest.raises(UserError, match=expected[name]) as e:
            import_lats_checkpoint(path)
        _one_line(e, path)
    with pytest.raises(UserError, match="does not exist"):
        import_lats_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(UserError, match="unknown LATS model"):
        import_lats_checkpoint(tmp_path / "absent.pth", "convnext6")


# --- our weights format, determinism ------------------------------------------------------------
def test_weights_round_trip_through_our_format(tmp_path, small):
    path = tmp_path / "lats-small.safetensors"
    save_weights(small, path)
    for loaded in (load_weights(path), import_lats_checkpoint(path, "lats-small")):
        assert isinstance(loaded, LATSGenerator) and loaded.config == SMALL and not loaded.training
        assert model_sha256(loaded) == model_sha256(small)
    x, code = images(1, seed=11), small.age_code([4])
    with torch.no_grad():
        torch.testing.assert_close(load_weights(path)(x, code), small(x, code), rtol=0, atol=0)
    with pytest.raises(UserError, match="not lats"):
        import_lats_checkpoint(path, "lats")


def test_eval_mode_is_deterministic_and_batch_independent(small):
    x, code = images(2, seed=12), noisy_codes([1, 4], seed=13)
    with torch.no_grad():
        first, second = small(x, code), small(x, code)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        torch.testing.assert_close(small(x[1:2], code[1:2]), first[1:2], rtol=0, atol=1e-4)
