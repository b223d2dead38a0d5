"""Training: losses maths, a tiny model learns, resume is exact, checkpoints are atomic."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from exprengine.data.synthetic import SyntheticFaces
from exprengine.errors import UserError
from exprengine.training import losses
from exprengine.training.trainer import CHECKPOINT, GENERATOR, Trainer, TrainConfig


def tiny_config(**kw) -> TrainConfig:
    base = dict(model="convnext2", steps=40, batch=4, lr=1e-3, image_size=32, dims=(8, 16, 32), depth=1,
                critic_width=8, checkpoint_every=10, sample_every=1000, log_every=5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def tiny_data() -> SyntheticFaces:
    return SyntheticFaces(64, seed=1, identities=(0, 16), size=32)


def test_total_variation_and_attention_mean_by_hand():
    a = torch.zeros(2, 1, 3, 3)
    a[:, :, 1, 1] = 1.0                        # one bright pixel: 4 neighbours differ by 1
    assert losses.total_variation(a).item() == pytest.approx(4.0)
    assert losses.attention_mean(a).item() == pytest.approx(1 / 9)
    x = torch.rand(3, 17)
    assert losses.au_regression(x, x + 0.5).item() == pytest.approx(17 * 0.25)
    assert losses.cycle(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)).item() == 1.0


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    class Linear(torch.nn.Module):                     # D(x) = w . x with ||w|| = 1: gradient norm 1
        def __init__(self):
            super().__init__()
            w = torch.randn(3 * 8 * 8)
            self.w = w / w.norm()

        def forward(self, x):
            return (x.flatten(1) @ self.w)[:, None, None, None], None
    real, fake = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    assert losses.gradient_penalty(Linear(), real, fake).item() == pytest.approx(0.0, abs=1e-10)

    class Doubled(Linear):
        def forward(self, x):
            return 2 * super().forward(x)[0], None
    assert losses.gradient_penalty(Doubled(), real, fake).item() == pytest.approx(1.0, abs=1e-5)


def test_learning_rate_is_constant_then_decays_linearly_to_zero(tmp_path):
    t = Trainer(tiny_config(steps=30, decay_fraction=1 / 3), tiny_data(), tmp_path)
    assert t.learning_rate(0) == t.learning_rate(19) == 1e-3
    assert t.learning_rate(25) == pytest.approx(0.5e-3) and t.learning_rate(30) == 0.0


def test_a_few_steps_decrease_the_losses(tmp_path):
    t = Trainer(tiny_config(steps=80, decay_fraction=0.0), tiny_data(), tmp_path)
    t.train(progress=False)
    first, last = t.log[0], t.log[-1]
    assert last["d_au"] < 0.85 * first["d_au"], (first, last)        # the critic learns the AUs
    assert last["d_gp"] < first["d_gp"], (first, last)               # and becomes 1-Lipschitz
    g = [e for e in t.log if "g_cycle" in e]
    assert g[-1]["g_au"] < g[0]["g_au"], (g[0], g[-1])                # the generator learns to hit them
    assert all(np.isfinite(v) for e in t.log for v in e.values())
    assert (tmp_path / "losses.png").is_file() and (tmp_path / "samples").is_dir()


def test_paired_loss_weights_the_changed_pixels():
    source = torch.zeros(1, 3, 4, 4)
    truth = source.clone()
    truth[:, :, 0, 0] = 1.0                                      # the edit changes one pixel of 16
    assert losses.paired(source, truth, source).item() == pytest.approx(1 / 16 + 1.0)   # copying misses it
    assert losses.paired(truth, truth, source).item() == 0.0
    assert losses.paired(source + 0.5, source, source).item() == pytest.approx(0.5)    # no change: plain L1


def test_paired_objective_learns_the_true_edit_and_resumes_exactly(tmp_path):
    config = tiny_config(objective="paired", steps=60, decay_fraction=0.0, checkpoint_every=30)
    t = Trainer(config, tiny_data(), tmp_path / "a", loader_workers=0)     # steps drawn in this process
    t.train(progress=False)
    assert t.log[-1]["g_paired"] < 0.6 * t.log[0]["g_paired"], (t.log[0], t.log[-1])
    assert {"g_paired", "g_attention", "g_tv"} == set(t.log[-1]) - {"step", "lr"}
    halves = Trainer(config, tiny_data(), tmp_path / "b")                   # by a worker, ahead
    halves.train(until=30, progress=False)
    resumed = Trainer.resume(tmp_path / "b", tiny_data())
    resumed.train(progress=False)
    for k, v in t.state_tensors().items():
        assert torch.equal(v, resumed.state_tensors()[k]), k


def test_paired_objective_needs_ground_truth(tmp_path):
    class Photos:                                                # a data set without a renderer
        size = 32

        def __len__(self):
            return 4
    with pytest.raises(UserError, match="synthetic"):
        Trainer(tiny_config(objective="paired"), Photos(), tmp_path)
    with pytest.raises(UserError, match="unknown objective"):
        Trainer(tiny_config(objective="wgan"), tiny_data(), tmp_path)


def test_init_starts_from_given_weights_and_refuses_another_shape(tmp_path):
    from exprengine.models.weights import load_weights
    first = Trainer(tiny_config(objective="paired", steps=5), tiny_data(), tmp_path / "first")
    first.train(progress=False)
    weights = tmp_path / "first" / GENERATOR
    tuned = Trainer(tiny_config(objective="paired", steps=5, init=str(weights)), tiny_data(), tmp_path / "tuned")
    for k, v in load_weights(weights).state_dict().items():
        assert torch.equal(tuned.generator.state_dict()[k], v), k
    fresh = Trainer(tiny_config(objective="paired", steps=5), tiny_data(), tmp_path / "fresh")
    assert not all(torch.equal(fresh.generator.state_dict()[k], v)
                   for k, v in tuned.generator.state_dict().items())
    tuned.train(until=3, progress=False)
    resumed = Trainer.resume(tmp_path / "tuned", tiny_data())     # the checkpoint, not --init, wins
    assert resumed.config.init == str(weights)
    for k, v in tuned.generator.state_dict().items():
        assert torch.equal(resumed.generator.state_dict()[k], v), k
    with pytest.raises(UserError, match="another shape"):
        Trainer(tiny_config(dims=(8, 16, 24), init=str(weights)), tiny_data(), tmp_path / "other")


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(tiny_config(steps=20), tiny_data(), tmp_path / "a", loader_workers=0)
    straight.train(progress=False)
    halves = Trainer(tiny_config(steps=20), tiny_data(), tmp_path / "b")
    halves.train(until=10, progress=False)
    resumed = Trainer.resume(tmp_path / "b", tiny_data())
    assert resumed.step == 10
    resumed.train(progress=False)
    a, b = straight.state_tensors(), resumed.state_tensors()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [e["step"] for e in straight.log] == [e["step"] for e in resumed.log]


def test_a_killed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    t = Trainer(tiny_config(steps=20), tiny_data(), tmp_path)
    t.train(until=10, progress=False)
    before = (tmp_path / CHECKPOINT).read_bytes()
    t.train_step()
    import os

    def killed(src, dst):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        t.save()
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]        # no temporary left behind
    assert Trainer.resume(tmp_path, tiny_data()).step == 10


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        Trainer.resume(tmp_path, tiny_data())
    (tmp_path / CHECKPOINT).write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(UserError, match="not readable"):
        Trainer.resume(tmp_path, tiny_data())


def test_trained_generator_builds_into_an_engine(tmp_path):
    from exprengine.models.weights import load_weights
    from exprengine.engine import Engine
    from exprengine.engines.build import build_engine
    t = Trainer(tiny_config(steps=5, checkpoint_every=5), tiny_data(), tmp_path / "run")
    t.train(progress=False)
    generator = load_weights(tmp_path / "run" / GENERATOR)
    assert generator.config.image_size == 32
    build_engine(generator, tmp_path / "engine", "onnxruntime", weights_source=GENERATOR, max_batch=4, opt_batch=2)
    out = Engine.load(tmp_path / "engine").edit(np.zeros((32, 32, 3), np.uint8), "happiness")
    assert out.shape == (1, 32, 32, 3)


def test_train_command_and_resume(tmp_path, capsys):
    from exprengine.cli import main
    args = ["train", "--model", "convnext2", "--out", str(tmp_path / "r"), "--steps", "6", "--batch", "2",
            "--image-size", "32", "--dims", "8,16,32", "--depth", "1", "--critic-width", "8",
            "--checkpoint-every", "3", "--sample-every", "3", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(args) == 2                                      # refuses to overwrite a run
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--steps", "9"]) == 0
    assert Trainer.resume(tmp_path / "r", SyntheticFaces(8, size=32)).step == 9


def test_compare_trains_every_model_under_one_budget_and_tabulates(tmp_path):
    from exprengine.training.compare import compare
    config = tiny_config(steps=4, batch=2, checkpoint_every=2, sample_every=4)
    results = compare(tmp_path, config, ("convnext2", "convnext2-ln"), eval_n=4, progress=False)
    assert set(results["models"]) == {"convnext2", "convnext2-ln"}
    for name, r in results["models"].items():
        assert r["steps"] == 4 and np.isfinite(r["ssim"]) and r["parameters"] > 0
        assert (tmp_path / name / "eval.png").is_file()
    table = (tmp_path / "comparison.md").read_text()
    assert "| convnext2-ln |" in table and "No edit" in table
    again = compare(tmp_path, config, ("convnext2",), eval_n=4, progress=False)      # done runs are not retrained
    assert again["models"]["convnext2"] == results["models"]["convnext2"]           # nor re-timed
    (tmp_path / "convnext2" / "eval.png").unlink()
    longer = compare(tmp_path, dataclasses.replace(config, steps=6), ("convnext2",), eval_n=4, progress=False)
    assert longer["models"]["convnext2"]["steps"] == 6                               # a new budget trains on
    assert (tmp_path / "convnext2" / "eval.png").is_file()


def test_compare_adds_fid_against_the_ground_truth_when_given_inception_weights(tmp_path):
    """Random Inception weights stand in for the real ones (not downloadable): the column and its
    plumbing are tested, the FD maths is tested on known answers in test_evaluation.py."""
    from exprengine.evaluation.inception import FIDInception
    from exprengine.training.compare import compare
    torch.manual_seed(0)
    torch.save(FIDInception().state_dict(), tmp_path / "inception.pth")
    config = tiny_config(steps=2, batch=2, checkpoint_every=2, sample_every=2)
    results = compare(tmp_path / "c", config, ("convnext2",), eval_n=4, progress=False,
                      inception_path=str(tmp_path / "inception.pth"))
    r = results["models"]["convnext2"]
    assert np.isfinite(r["fid"]) and r["fid"] >= 0 and np.isfinite(r["no_edit"]["fid"])
    assert "FID vs truth" in (tmp_path / "c" / "comparison.md").read_text()
    with pytest.raises(UserError, match="do not exist"):             # checked before any training
        compare(tmp_path / "d", config, ("convnext2",), inception_path=str(tmp_path / "missing.pth"))
    assert not (tmp_path / "d").exists()


def test_compare_trains_on_a_pre_rendered_set_that_holds_the_evaluation_out(tmp_path):
    from exprengine.data.datasets import write_synthetic
    from exprengine.training.compare import compare
    write_synthetic(tmp_path / "synth", 40, seed=3, identities=1000, workers=1, progress=False)
    config = tiny_config(steps=4, batch=2, checkpoint_every=2, data=str(tmp_path / "synth"))
    results = compare(tmp_path / "c", config, ("convnext2",), eval_n=4, progress=False)
    assert results["models"]["convnext2"]["steps"] == 4
    assert "pre-rendered set synth" in (tmp_path / "c" / "comparison.md").read_text()
    write_synthetic(tmp_path / "other", 8, seed=4, identities=1000, workers=1, progress=False)
    write_synthetic(tmp_path / "leaky", 8, seed=3, identities=2000, workers=1, progress=False)
    for bad, message in ((tmp_path / "other", "seed 4"), (tmp_path / "leaky", "held out"),
                         (tmp_path / "c", "no synth.json")):
        with pytest.raises(UserError, match=message):
            compare(tmp_path / "x", dataclasses.replace(config, data=str(bad)), ("convnext2",), eval_n=4)
    with pytest.raises(UserError, match="same `seed`"):
        compare(tmp_path / "x", dataclasses.replace(config, data="synthetic:5"), ("convnext2",), eval_n=4)
    assert not (tmp_path / "x").exists()


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (none visible)")


@pytest.fixture
def deterministic_cuda():
    """cuDNN picks the fastest, possibly atomics-based, kernels by default: for bit-exact
    resume on CUDA the user asks for deterministic ones, as these tests do."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@cuda_only
@pytest.mark.parametrize("objective", ["gan", "paired"])
def test_cuda_training_in_mixed_precision_learns_and_resumes_exactly(tmp_path, objective, deterministic_cuda):
    config = tiny_config(objective=objective, steps=80, decay_fraction=0.0, checkpoint_every=40)
    t = Trainer(config, tiny_data(), tmp_path / "a", device="cuda")
    assert t.amp and next(t.generator.parameters()).is_cuda
    t.train(progress=False)
    assert all(np.isfinite(v) for e in t.log for v in e.values())
    if objective == "paired":
        assert t.log[-1]["g_paired"] < 0.6 * t.log[0]["g_paired"], (t.log[0], t.log[-1])
    else:
        assert t.log[-1]["d_au"] < 0.85 * t.log[0]["d_au"], (t.log[0], t.log[-1])
    halves = Trainer(config, tiny_data(), tmp_path / "b", device="cuda")
    halves.train(until=40, progress=False)
    resumed = Trainer.resume(tmp_path / "b", tiny_data(), device="cuda")
    resumed.train(progress=False)
    for k, v in t.state_tensors().items():
        assert torch.equal(v, resumed.state_tensors()[k]), k
    cpu = Trainer.resume(tmp_path / "b", tiny_data(), device="cpu")     # a CUDA checkpoint resumes on the CPU
    assert cpu.step == 80 and not next(cpu.generator.parameters()).is_cuda
