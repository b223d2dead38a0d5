import pytest
import torch

from exprengine.errors import UserError
from exprengine.models import Discriminator, create_generator, generator_config, list_generators

from helpers import perturbed_generator


def test_registry_names():
    assert list_generators() == ["ganimation", "convnext2", "convnext4", "convnext6", "convnext2-ln"]
    with pytest.raises(UserError, match="unknown model"):
        generator_config("resnet50")


@pytest.mark.parametrize("name", list_generators())
def test_generator_contract(name):
    g = perturbed_generator(name)
    image = torch.rand(2, 3, 128, 128) * 2 - 1
    aus = torch.rand(2, 17) * 0.4
    with torch.no_grad():
        color, attention = g(image, aus)
        out = g.edit(image, aus)
    assert color.shape == (2, 3, 128, 128) and attention.shape == (2, 1, 128, 128)
    assert color.abs().max() <= 1 and attention.min() >= 0 and attention.max() <= 1
    torch.testing.assert_close(out, attention * image + (1 - attention) * color)
    # the AUs condition the output
    with torch.no_grad():
        other = g.edit(image, torch.rand(2, 17) * 0.4)
    assert (other - out).abs().max() > 1e-4
    with pytest.raises(AssertionError):
        g(image, aus[:, :16])


def test_parameter_counts():
    counts = {n: sum(p.numel() for p in create_generator(n).parameters()) for n in list_generators()}
    assert counts["ganimation"] == pytest.approx(8.5e6, rel=0.01)     # SPEC: about 8.5M
    assert counts["convnext2"] < counts["convnext4"] < counts["convnext6"] < counts["ganimation"]
    assert counts["convnext2-ln"] > counts["convnext2"]                # the extra LayerNorm


def test_random_init_is_seeded():
    a, b = create_generator("convnext2", seed=3), create_generator("convnext2", seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_discriminator_shapes():
    d = Discriminator()
    realness, aus = d(torch.rand(3, 3, 128, 128) * 2 - 1)
    assert realness.shape == (3, 1, 2, 2) and aus.shape == (3, 17)
    assert [m.out_channels for m in d.trunk if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256, 512, 1024, 2048]


def test_conditioned_stem_equals_conv_of_tiled_input():
    """The factorised stem is the 20-channel conv of concat(image, tiled AUs), exactly."""
    from exprengine.models.layers import au_field, tile_aus
    g = perturbed_generator("ganimation")
    image, aus = torch.rand(3, 3, 128, 128) * 2 - 1, torch.rand(3, 17) * 0.4
    stem = g.stem
    with torch.no_grad():
        reference = stem.act(stem.norm(stem.conv(tile_aus(image, aus))))
        torch.testing.assert_close(stem(image, aus), reference, atol=1e-5, rtol=1e-5)
        for h, w, k in [(9, 13, 7), (5, 5, 7), (16, 8, 3)]:           # borders everywhere, odd sizes
            weight = torch.randn(4, 6, k, k)
            a = torch.rand(2, 6)
            tiled = a[:, :, None, None].expand(2, 6, h, w)
            torch.testing.assert_close(au_field(a, weight, h, w),
                                       torch.nn.functional.conv2d(tiled, weight, padding=k // 2),
                                       atol=1e-5, rtol=1e-5)
