"""Checkpoints: both public GANimation layouts load with identical outputs, our safetensors
format round-trips and refuses damaged files, and no pickle is ever trusted.

The public architectures are re-created in `public_layouts.py` with their exact key names
and conventions (written for these tests, not copied).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from safetensors.torch import safe_open, save_file

from exprengine.errors import UserError
from exprengine.models import build_generator, create_generator, generator_config, list_generators, weights
from exprengine.models.ganimation import (convert_discriminator_state_dict, convert_generator_state_dict,
                                          detect_layout, import_checkpoint, import_discriminator, load_state_dict,
                                          strip_module_prefix)
from exprengine.models.weights import load_weights, save_weights, weights_sha256

from helpers import perturbed_generator
from public_layouts import (OriginalDiscriminator, OriginalGenerator, ReplicateDiscriminator,
                            ReplicateGenerator, randomise)

PUBLIC = {"ganimation-original": (OriginalGenerator, 1), "ganimation-replicate": (ReplicateGenerator, 2)}


def inputs(batch: int = 3, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uniform in [-1, 1], AUs uniform in [0, 0.4] (intensity / 5)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 128, 128, generator=g) * 2 - 1, torch.rand(batch, 17, generator=g) * 0.4


def max_abs_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(scope="module")
def public_generator(tmp_path_factory):
    """layout -> (randomised reference model, its state dict, path of the plain torch.save)."""
    cache: dict[str, tuple] = {}

    def get(layout: str):
        if layout not in cache:
            cls, seed = PUBLIC[layout]
            torch.manual_seed(seed)
            ref = randomise(cls(), seed=seed)
            sd = ref.state_dict()
            path = tmp_path_factory.mktemp(layout) / "plain.pth"
            torch.save(sd, path)
            cache[layout] = ref, sd, path
        return cache[layout]

    return get


# --- public generator layouts ------------------------------------------------------------------
def test_recreations_use_the_public_key_names(public_generator):
    original = set(public_generator("ganimation-original")[1])
    assert {"main.0.weight", "main.1.weight", "main.1.bias", "main.9.main.0.weight", "main.14.main.4.bias",
            "main.15.weight", "main.19.weight", "img_reg.0.weight", "attetion_reg.0.weight"} <= original
    assert not {"main.0.bias", "main.9.main.0.bias", "main.15.bias"} & original          # bias-free convs
    replicate = set(public_generator("ganimation-replicate")[1])
    assert {"model.0.weight", "model.0.bias", "model.9.conv_block.0.bias", "model.14.conv_block.3.weight",
            "model.18.bias", "color_top.0.weight", "au_top.0.weight"} <= replicate
    assert not {"model.1.weight", "model.9.conv_block.1.weight"} & replicate               # non-affine IN


@pytest.mark.parametrize("layout", list(PUBLIC))
def test_public_layout_gives_identical_outputs(public_generator, layout):
    ref, sd, path = public_generator(layout)
    assert detect_layout(sd) == layout
    ours = import_checkpoint(path, "ganimation")
    assert not ours.training
    image, aus = inputs(batch=3)
    with torch.no_grad():
        expected = ref(image, aus)
        ours.stem.factorised = False                  # the plain conv of the tiled input
        plain = ours(image, aus)
        ours.stem.factorised = True                   # what we ship: same maths, other order
        fast = ours(image, aus)
    for got, want in zip(plain, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    print(f"\n{layout}: max abs diff {max_abs_diff(plain, expected):.1e} (plain stem), "
          f"{max_abs_diff(fast, expected):.1e} (factorised stem)")
    assert max_abs_diff(fast, expected) < 1e-4


def _stale_running_stats(sd: dict) -> dict:
    """What PyTorch <= 0.4 saved for every InstanceNorm: running stats beside the affine."""
    out = dict(sd)
    for key, value in sd.items():
        if key.endswith(".weight") and value.ndim == 1:
            base = key[: -len("weight")]
            out[base + "running_mean"] = torch.randn_like(value)
            out[base + "running_var"] = torch.rand_like(value) + 0.5
            out[base + "num_batches_tracked"] = torch.tensor(7)
    return out


def _replicate_running_stats(sd: dict) -> dict:
    """Non-affine InstanceNorm with track_running_stats: buffers but no parameters."""
    out = dict(sd)
    for i in (1, 4, 7, 16, 19):
        out[f"model.{i}.running_mean"] = torch.zeros(64)
        out[f"model.{i}.running_var"] = torch.ones(64)
    return out


VARIANTS = {
    "module_prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "stale_running_stats": _stale_running_stats,
    "prefix_and_stats": lambda sd: {f"module.{k}": v for k, v in _stale_running_stats(sd).items()},
    "under_state_dict": lambda sd: {"state_dict": sd},
    "under_model": lambda sd: {"model": sd},
    "under_net_gen": lambda sd: {"net_gen": sd},
    "under_G": lambda sd: {"G": sd, "D": {"x": torch.zeros(1)}},
    "training_state": lambda sd: {"epoch": 30, "state_dict": sd, "optimizer": {"lr": 1e-4}},
}


@pytest.mark.parametrize("layout", list(PUBLIC))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkpoint_variants_load_the_same_weights(public_generator, tmp_path, layout, variant):
    _, sd, plain = public_generator(layout)
    path = tmp_path / "variant.pth"
    torch.save(VARIANTS[variant](sd), path)
    assert weights_sha256(import_checkpoint(path)) == weights_sha256(import_checkpoint(plain))


def test_old_serialisation_and_replicate_running_stats(public_generator, tmp_path):
    _, sd, plain = public_generator("ganimation-original")
    legacy = tmp_path / "net_epoch_30_id_G.pth"                       # pre-1.6 (non-zip) format
    torch.save(_stale_running_stats(sd), legacy, _use_new_zipfile_serialization=False)
    assert weights_sha256(import_checkpoint(legacy)) == weights_sha256(import_checkpoint(plain))
    _, sd, plain = public_generator("ganimation-replicate")
    stats = tmp_path / "30_net_gen.pth"
    torch.save(_replicate_running_stats(sd), stats)
    assert weights_sha256(import_checkpoint(stats)) == weights_sha256(import_checkpoint(plain))


@pytest.mark.parametrize("layout", list(PUBLIC))
def test_conversion_is_complete_and_fills_the_identity(public_generator, layout):
    sd = _stale_running_stats(public_generator(layout)[1])
    converted = convert_generator_state_dict({f"module.{k}": v for k, v in sd.items()}, layout)
    assert set(converted) == set(build_generator(generator_config("ganimation")).state_dict())
    if layout == "ganimation-original":
        filled = [converted[k] for k in ("stem.conv.bias", "blocks.3.conv2.bias", "up1.conv.bias")]
        assert all(t.shape == (n,) and not t.any() for t, n in zip(filled, (64, 256, 128)))
        assert torch.equal(converted["blocks.2.norm1.weight"], sd["main.11.main.1.weight"])
    else:
        assert torch.equal(converted["up2.norm.weight"], torch.ones(64))
        assert torch.equal(converted["blocks.5.norm2.bias"], torch.zeros(256))
        assert torch.equal(converted["blocks.0.conv1.bias"], sd["model.9.conv_block.0.bias"])
    assert torch.equal(converted["attention_head.weight"],
                       sd["attetion_reg.0.weight" if layout == "ganimation-original" else "au_top.0.weight"])


def test_detect_layout():
    assert strip_module_prefix({"module.a.b": 1, "c": 2}) == {"a.b": 1, "c": 2}
    assert detect_layout({"module.img_reg.0.weight": torch.zeros(1)}) == "ganimation-original"
    assert detect_layout({"au_top.0.weight": torch.zeros(1)}) == "ganimation-replicate"
    assert detect_layout(create_generator("convnext2").state_dict()) == "exprengine"
    with pytest.raises(UserError, match="unexpected keys .*foo.weight"):
        detect_layout({"foo.weight": torch.zeros(1), "bar.bias": torch.zeros(1)})
    with pytest.raises(UserError, match="discriminator"):
        detect_layout(OriginalDiscriminator().state_dict())
    with pytest.raises(UserError, match="fit no layer.*main.30.weight"):
        convert_generator_state_dict({"main.0.weight": torch.zeros(64, 20, 7, 7), "main.30.weight": torch.zeros(1)},
                                     "ganimation-original")
    with pytest.raises(UserError, match="unknown checkpoint layout"):
        convert_generator_state_dict({}, "stargan")


# --- discriminators ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls, prefix", [(OriginalDiscriminator, "module."), (ReplicateDiscriminator, "")])
def test_discriminator_layouts(tmp_path, cls, prefix):
    torch.manual_seed(3)
    ref = randomise(cls(), seed=3)
    path = tmp_path / "net_D.pth"
    torch.save({prefix + k: v for k, v in ref.state_dict().items()}, path)
    ours = import_discriminator(path)
    assert not ours.training
    image = inputs(batch=3)[0]
    with torch.no_grad():
        expected, got = ref(image), ours(image)
    for g, e in zip(got, expected):                    # realness map, AU regression
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)
    print(f"\n{cls.__name__}: max abs diff {max_abs_diff(got, expected):.1e}")
    assert set(convert_discriminator_state_dict(ours.state_dict())) == set(ours.state_dict())
    with pytest.raises(UserError, match="unrecognised discriminator"):
        convert_discriminator_state_dict({"foo.weight": torch.zeros(1)})


# --- our safetensors format --------------------------------------------------------------------
@pytest.mark.parametrize("name", list_generators())
def test_safetensors_round_trip(tmp_path, name):
    g = perturbed_generator(name)
    path = tmp_path / f"{name}.safetensors"
    save_weights(g, path, extra={"source": "test", "epoch": 30})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]          # no temporary file left
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "exprengine-weights" and meta["format_version"] == "1"
    assert json.loads(meta["config"]) == g.config.to_dict()
    assert meta["weights_sha256"] == weights_sha256(g)
    assert json.loads(meta["source"]) == "test" and json.loads(meta["epoch"]) == 30
    loaded = load_weights(path)
    assert not loaded.training and loaded.config == g.config
    assert weights_sha256(loaded) == weights_sha256(g)
    image, aus = inputs(batch=1)
    with torch.no_grad():
        for a, b in zip(g(image, aus), loaded(image, aus)):
            assert torch.equal(a, b)
    assert weights_sha256(import_checkpoint(path, name)) == weights_sha256(g)
    other = "convnext6" if name != "convnext6" else "ganimation"
    with pytest.raises(UserError, match=f"holds a {name} generator"):
        import_checkpoint(path, other)


def test_weights_sha256_is_deterministic_and_sensitive():
    a, b = create_generator("convnext2", seed=0), create_generator("convnext2", seed=0)
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        b.color_head.weight[0, 0, 0, 0] += 1e-7
    assert weights_sha256(a) != weights_sha256(b)
    assert weights_sha256(create_generator("convnext2", seed=1)) != weights_sha256(a)


def test_our_keys_in_a_torch_file_and_safetensors_under_another_name(tmp_path):
    g = perturbed_generator("convnext2")
    torch.save({"state_dict": g.state_dict()}, tmp_path / "ours.pth")
    assert weights_sha256(import_checkpoint(tmp_path / "ours.pth", "convnext2")) == weights_sha256(g)
    save_weights(g, tmp_path / "w.safetensors")
    os.replace(tmp_path / "w.safetensors", tmp_path / "w.pth")           # told apart by content
    assert weights_sha256(import_checkpoint(tmp_path / "w.pth", "convnext2")) == weights_sha256(g)


def _data_start(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_damaged_safetensors_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(perturbed_generator("convnext2"), path)
    good = path.read_bytes()
    start = _data_start(path)
    for offset in (start, (start + len(good)) // 2, len(good) - 1):        # inside the tensor data
        data = bytearray(good)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(UserError, match="corrupted"):
            load_weights(path)
    data = bytearray(good)
    data[start // 2] ^= 0xFF                                              # inside the JSON header
    for damaged in (bytes(data), good[:5000], good[: len(good) - 10], b"", b"not safetensors at all"):
        path.write_bytes(damaged)
        with pytest.raises(UserError):
            load_weights(path)


def test_safetensors_metadata_is_checked(tmp_path):
    g = create_generator("convnext2")
    tensors = {k: v.contiguous() for k, v in g.state_dict().items()}
    good = {"format": "exprengine-weights", "format_version": "1",
            "config": json.dumps(g.config.to_dict()), "weights_sha256": weights_sha256(g)}
    cases = {
        "no exprengine metadata": {},
        "format version": {**good, "format_version": "2"},
        "weights_sha256": {k: v for k, v in good.items() if k != "weights_sha256"},
        "invalid model config": {**good, "config": "{not json"},
        "model config": {**good, "config": json.dumps({"name": "x"})},
        "residual block": {**good, "config": json.dumps({**g.config.to_dict(), "block": "vit"})},
    }
    for message, metadata in cases.items():
        save_file(tensors, str(tmp_path / "w.safetensors"), metadata=metadata)
        with pytest.raises(UserError, match=message):
            load_weights(tmp_path / "w.safetensors")
    other = create_generator("convnext4")                                 # weights of another config
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "w.safetensors"),
              metadata={**good, "weights_sha256": weights_sha256(other)})
    with pytest.raises(UserError, match="does not fit model convnext2: .*shape mismatches"):
        load_weights(tmp_path / "w.safetensors")
    for bad in (tmp_path / "missing.safetensors", tmp_path):
        with pytest.raises(UserError, match="does not exist|directory"):
            load_weights(bad)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_weights(create_generator("convnext2", seed=0), path)
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(weights.os, "replace", fail)
    with pytest.raises(UserError, match="disk full"):  # files.write_bytes: one sentence
        save_weights(create_generator("convnext2", seed=1), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    with pytest.raises(ValueError, match="config"):
        save_weights(create_generator("convnext2"), path, extra={"config": "mine"})
    with pytest.raises(UserError, match="cannot write"):
        save_weights(create_generator("convnext2"), tmp_path / "no" / "such" / "dir" / "w.safetensors")


# --- bad PyTorch files -------------------------------------------------------------------------
def _leave_a_mark(path: str) -> None:
    Path(path).write_text("unpickling ran code")


class Payload:
    """Unpickling this would run `_leave_a_mark` if pickles were trusted."""

    def __init__(self, mark: Path):
        self.mark = str(mark)

    def __reduce__(self):
        return (_leave_a_mark, (self.mark,))


class PlainObject:
    def __init__(self):
        self.weight = torch.zeros(3)


def test_arbitrary_pickles_are_refused_not_run(tmp_path):
    mark = tmp_path / "mark"
    cases = {"payload": {"state_dict": Payload(mark)}, "object": PlainObject(),
             "nested": {"main.0.weight": torch.zeros(1), "x": Payload(mark)}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        with pytest.raises(UserError, match="refusing to unpickle"):
            import_checkpoint(tmp_path / f"{name}.pth")
        with pytest.raises(UserError, match="refusing to unpickle"):
            import_discriminator(tmp_path / f"{name}.pth")
    assert not mark.exists()


def test_bad_checkpoints(public_generator, tmp_path):
    _, sd, good = public_generator("ganimation-original")
    data = good.read_bytes()
    files = {"truncated.pth": data[:2000], "truncated_tail.pth": data[:-100], "empty.pth": b"",
             "text.pth": b"hello world\n", "random.pt": bytes(range(256)) * 8}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match="not a readable|refusing to unpickle"):
            import_checkpoint(tmp_path / name)
    with pytest.raises(UserError, match="does not exist"):
        import_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(UserError, match="directory"):
        import_checkpoint(tmp_path)
    with pytest.raises(UserError, match="unknown model"):
        import_checkpoint(good, "stylegan")
    with pytest.raises(UserError, match="fits `model_name` ganimation, not convnext6"):
        import_checkpoint(good, "convnext6")

    def save(name: str, obj) -> Path:
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    wrong = dict(sd, **{"main.0.weight": sd["main.0.weight"][:, :10]})
    with pytest.raises(UserError, match=r"does not fit model ganimation: 1 shape mismatches \(stem.conv.weight"):
        import_checkpoint(save("shape.pth", wrong))
    partial = {k: v for k, v in sd.items() if not k.startswith("main.9.")}
    with pytest.raises(UserError, match=r"does not fit model ganimation: missing 8 keys \(blocks.0.conv1"):
        import_checkpoint(save("partial.pth", partial))
    with pytest.raises(UserError, match="unrecognised generator checkpoint layout"):
        import_checkpoint(save("other.pth", {"foo.weight": torch.zeros(3)}))
    with pytest.raises(UserError, match="discriminator checkpoint"):
        import_checkpoint(save("d.pth", OriginalDiscriminator().state_dict()))
    for name, obj in {"list.pth": [torch.zeros(1)], "empty_dict.pth": {}, "epoch.pth": {"epoch": 3}}.items():
        with pytest.raises(UserError, match="not a state dict of tensors"):
            load_state_dict(save(name, obj))
    with pytest.raises(UserError, match="does not fit model Discriminator"):
        import_discriminator(save("d_shape.pth", {"conv1.weight": torch.zeros(1, 2048, 3, 3)}))


# --- torch.compile'd models -----------------------------------------------------------------------
@pytest.mark.parametrize("layout", list(PUBLIC) + ["exprengine"])
@pytest.mark.parametrize("wrap", ["compile", "compile_of_dataparallel", "dataparallel_of_compile"])
def test_checkpoint_of_a_compiled_model_imports_like_the_plain_one(public_generator, tmp_path, layout, wrap):
    """torch.compile(model).state_dict() prefixes every key with `_orig_mod.`; with DataParallel
    around or inside it the keys read `module._orig_mod.` / `_orig_mod.module.`."""
    if layout == "exprengine":
        ref = perturbed_generator("ganimation")
        plain = tmp_path / "plain.pth"
        torch.save(ref.state_dict(), plain)
    else:
        ref, _, plain = public_generator(layout)
    if wrap == "compile":
        model = torch.compile(ref)
    elif wrap == "compile_of_dataparallel":
        model = torch.compile(nn.DataParallel(ref))
    else:
        model = nn.DataParallel(torch.compile(ref))
    sd = model.state_dict()                                 # compiling is lazy: no compiler runs here
    prefix = {"compile": "_orig_mod.", "compile_of_dataparallel": "_orig_mod.module.",
              "dataparallel_of_compile": "module._orig_mod."}[wrap]
    assert all(k.startswith(prefix) for k in sd)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "compiled.pth")
    compiled, plain_model = import_checkpoint(tmp_path / "compiled.pth"), import_checkpoint(plain)
    assert weights_sha256(compiled) == weights_sha256(plain_model)
    x, aus = inputs(batch=2)
    with torch.no_grad():
        assert max_abs_diff(compiled(x, aus), plain_model(x, aus)) == 0


def test_wrapper_prefixes_are_stripped_in_any_nesting():
    assert strip_module_prefix({"_orig_mod.module.a": 1, "module._orig_mod.b": 2, "_orig_mod.c": 3, "d": 4}) == \
        {"a": 1, "b": 2, "c": 3, "d": 4}
    assert detect_layout({"_orig_mod.img_reg.0.weight": torch.zeros(1)}) == "ganimation-original"
