"""Both public GANimation layouts load with identical outputs; our safetensors round-trips."""
from __future__ import annotations

import collections

import pytest
import torch

from exprengine.checkpoints import (detect_layout, import_checkpoint, import_discriminator, load_weights,
                                    save_weights, weights_sha256)
from exprengine.errors import UserError
from exprengine.models import list_generators

from helpers import perturbed_generator
from public_layouts import (OriginalDiscriminator, OriginalGenerator, ReplicateDiscriminator,
                            ReplicateGenerator, randomise)


def inputs(batch=3, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 128, 128, generator=g) * 2 - 1, torch.rand(batch, 17, generator=g) * 0.4


def assert_same_outputs(reference, ours):
    """Identical with the stem evaluated as the plain conv of the tiled input; within FP32
    rounding (relative 1e-5 of the output range) with the factorised stem we ship."""
    image, aus = inputs()
    with torch.no_grad():
        ref_c, ref_a = reference(image, aus)
        ours.stem.factorised = False
        c, a = ours(image, aus)
        ours.stem.factorised = True
        fast_c, fast_a = ours(image, aus)
    torch.testing.assert_close(c, ref_c, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a, ref_a, atol=1e-6, rtol=1e-6)
    fast = max((fast_c - ref_c).abs().max().item(), (fast_a - ref_a).abs().max().item())
    print(f"factorised stem: max abs difference {fast:.1e}")
    assert fast < 1e-4


def original_state_dict(model, stale_stats=False, prefix=""):
    sd = collections.OrderedDict()
    for k, v in model.state_dict().items():
        sd[prefix + k] = v
        if stale_stats and k.endswith(".weight") and v.ndim == 1:       # an InstanceNorm affine
            base = prefix + k[: -len("weight")]
            sd[base + "running_mean"] = torch.zeros_like(v)
            sd[base + "running_var"] = torch.ones_like(v)
    return sd


@pytest.mark.parametrize("variant", ["plain", "module_prefix", "stale_running_stats", "wrapped"])
def test_original_layout(tmp_path, variant):
    ref = randomise(OriginalGenerator(), seed=1)
    sd = original_state_dict(ref, stale_stats=variant == "stale_running_stats",
                             prefix="module." if variant == "module_prefix" else "")
    assert "attetion_reg.0.weight" in {k.removeprefix("module.") for k in sd}
    assert "main.9.main.0.weight" in {k.removeprefix("module.") for k in sd}
    path = tmp_path / "net_epoch_30_id_G.pth"
    torch.save({"state_dict": sd} if variant == "wrapped" else sd, path)
    assert detect_layout(sd) == "ganimation-original"
    assert_same_outputs(ref, import_checkpoint(path, "ganimation"))


@pytest.mark.parametrize("variant", ["plain", "module_prefix"])
def test_replicate_layout(tmp_path, variant):
    ref = randomise(ReplicateGenerator(), seed=2)
    sd = original_state_dict(ref, prefix="module." if variant == "module_prefix" else "")
    keys = {k.removeprefix("module.") for k in sd}
    assert {"model.9.conv_block.0.bias", "model.14.conv_block.3.weight", "color_top.0.weight",
            "au_top.0.weight"} <= keys
    path = tmp_path / "30_net_gen.pth"
    torch.save(sd, path)
    assert detect_layout(sd) == "ganimation-replicate"
    assert_same_outputs(ref, import_checkpoint(path, "ganimation"))


@pytest.mark.parametrize("cls", [OriginalDiscriminator, ReplicateDiscriminator])
def test_discriminator_layouts(tmp_path, cls):
    ref = randomise(cls(), seed=3)
    path = tmp_path / "d.pth"
    torch.save(ref.state_dict(), path)
    ours = import_discriminator(path)
    x = inputs()[0]
    with torch.no_grad():
        for r, o in zip(ref(x), ours(x)):
            torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list_generators())
def test_safetensors_round_trip(tmp_path, name):
    g = perturbed_generator(name)
    path = tmp_path / f"{name}.safetensors"
    save_weights(g, path)
    loaded = load_weights(path)
    assert loaded.config == g.config and weights_sha256(loaded) == weights_sha256(g)
    image, aus = inputs()
    with torch.no_grad():
        for a, b in zip(g(image, aus), loaded(image, aus)):
            assert torch.equal(a, b)
    assert import_checkpoint(path, name).config.name == name
    torch.save(g.state_dict(), tmp_path / "ours.pth")                 # our keys as a .pth work too
    assert weights_sha256(import_checkpoint(tmp_path / "ours.pth", name)) == weights_sha256(g)


def test_corrupted_safetensors_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(perturbed_generator("convnext2"), path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF                                               # inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        load_weights(path)
    path.write_bytes(bytes(data[:5000]))
    with pytest.raises(UserError):
        load_weights(path)


class Payload:
    """An object whose unpickling would run code if pickles were trusted."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_bad_checkpoints(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, evil)
    with pytest.raises(UserError, match="refusing to unpickle"):
        import_checkpoint(evil)
    good = tmp_path / "g.pth"
    torch.save(randomise(OriginalGenerator(), 1).state_dict(), good)
    truncated = tmp_path / "t.pth"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(UserError):
        import_checkpoint(truncated)
    with pytest.raises(UserError, match="does not exist"):
        import_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(UserError, match="directory"):
        import_checkpoint(tmp_path)
    with pytest.raises(UserError, match="fits --model ganimation"):
        import_checkpoint(good, "convnext6")
    sd = torch.load(good, weights_only=True)
    sd["main.0.weight"] = sd["main.0.weight"][:, :10]
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(UserError, match="shape"):
        import_checkpoint(tmp_path / "shape.pth")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="layout"):
        import_checkpoint(tmp_path / "other.pth")
