"""LATS training (issue 16 part 7): the reference's losses, a tiny run learns, resume is exact,
samples and curves are written, the data is checked, and `exprengine train` drives it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exprengine.errors import UserError
from exprengine.models.lats import LATSDiscriminator, LATSGenerator
from exprengine.training.lats_trainer import (CHECKPOINT, GENERATOR, LATSTrainConfig, LATSTrainer, age_training_data,
                                              critic_logits, draw_samples, lats_model_config, load_images,
                                              selective_class_loss, step_arrays)


def tiny_config(**kw) -> LATSTrainConfig:
    base = dict(steps=4, batch=2, image_size=32, checkpoint_every=2, sample_every=1000, log_every=1, seed=5,
                decay_at=())
    base.update(kw)
    return LATSTrainConfig(**base)


def tiny_data():
    return age_training_data("synthetic-age:1:40", 32)


def test_selective_class_loss_reads_each_images_class_logit():
    logits = torch.tensor([[0.0, 2.0, -1.0], [3.0, -4.0, 0.5]])
    classes = torch.tensor([1, 0])
    picked = torch.tensor([2.0, 3.0])
    assert selective_class_loss(logits, classes, real=True).item() == pytest.approx(F.softplus(-picked).mean().item())
    assert selective_class_loss(logits, classes, real=False).item() == pytest.approx(F.softplus(picked).mean().item())
    assert selective_class_loss(logits, classes, real=True).item() == pytest.approx(
        (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-3.0))) / 2)


def test_critic_logits_alone_are_the_critics():
    config = lats_model_config("lats-small", 32)
    torch.manual_seed(0)
    critic = LATSDiscriminator(config)
    x = torch.randn(5, 3, 32, 32)
    assert torch.equal(critic_logits(critic, x), critic(x))


def test_model_config_at_other_sizes_keeps_the_generator_and_shortens_the_critic():
    from exprengine.models.lats import LATSConfig, lats_config
    small = lats_model_config("lats-small", 64)
    assert small.generator_fields() == lats_config("lats-small").generator_fields()
    assert small.discriminator_dims == lats_config("lats-small").discriminator_dims[:5]
    assert LATSConfig.from_dict(small.to_dict()) == small
    assert lats_model_config("lats") is lats_config("lats")
    assert LATSDiscriminator(small)(torch.zeros(2, 3, 64, 64)).shape == (2, 6)
    with pytest.raises(UserError, match="image_size"):
        lats_model_config("lats-small", 48)
    with pytest.raises(UserError, match="unknown LATS model"):
        lats_model_config("lats-huge")


def test_synthetic_batches_are_the_data_sets_faces_and_truth():
    from exprengine.pixels import network_tensor
    data = tiny_data()
    rng = np.random.default_rng(0)
    idx, source, target = draw_samples(data, rng, 6)
    assert (source != target).all() and (source == [data.source_class(int(i)) for i in idx]).all()
    images, truth = load_images(data, idx[:2], 32, truth=True)
    for k, i in enumerate(idx[:2]):
        item = data[int(i)]
        assert torch.equal(network_tensor(images[k:k + 1])[0], item["source"])
        assert torch.equal(network_tensor(truth[k:k + 1])[0], item["target"])
    flipped, flipped_truth = load_images(data, idx[:2], 32, flips=[True, False], truth=True)
    assert np.array_equal(flipped[0], images[0][:, ::-1]) and np.array_equal(flipped[1], images[1])
    assert np.array_equal(flipped_truth[0], truth[0][:, ::-1])
    big, _ = load_images(age_training_data("synthetic-age:1:40", 256), idx[:1], 256)    # enlarged from 128
    assert big.shape == (1, 256, 256, 3)


def test_age_folder_batches_draw_a_class_then_another_target(tmp_path):
    from exprengine.data.age_faces import write_age_folders
    write_age_folders(tmp_path / "ages", identities=40, seed=0)
    data = age_training_data(str(tmp_path / "ages"), 32)
    idx, source, target = draw_samples(data, np.random.default_rng(1), 200)
    assert (source != target).all()
    assert [data.classes[i] for i in idx] == list(source)
    assert set(source) == set(range(6)) and set(target) == set(range(6))
    images, truth = load_images(data, idx[:3], 32)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 and truth is None


def test_a_tiny_run_learns_and_writes_samples_curves_and_the_running_generator(tmp_path):
    from exprengine.media import read_image
    from exprengine.models.lats import import_lats_checkpoint
    from exprengine.models.weights import load_weights
    t = LATSTrainer(tiny_config(steps=12, batch=4, log_every=4, sample_every=12, checkpoint_every=12),
                    tiny_data(), tmp_path)
    t.train(progress=False)
    first, last = t.log[0], t.log[-1]
    assert {"d_real", "d_fake", "d_r1", "g_adversarial", "g_rec", "g_cycle", "g_identity", "g_age",
            "truth_l1"} == set(last) - {"step", "lr"}
    assert all(np.isfinite(v) for e in t.log for v in e.values())
    assert last["g_rec"] < 0.8 * first["g_rec"], (first, last)          # the generator learns to reconstruct
    assert last["g_age"] < first["g_age"], (first, last)                  # the age encoder reads the codes
    assert last["truth_l1"] < first["truth_l1"], (first, last)
    sheet = read_image(tmp_path / "samples" / "step_0000012.png")
    assert sheet.shape[1] > 7 * 32 and sheet.shape[0] > 4 * 32            # 4 rows: input + 6 classes
    assert (tmp_path / "losses.png").is_file()
    running = load_weights(tmp_path / GENERATOR)
    assert isinstance(running, LATSGenerator) and running.config == t.model_config
    for k, v in t.ema.state_dict().items():
        assert torch.equal(running.state_dict()[k], v), k
    assert not all(torch.equal(v, t.generator.state_dict()[k]) for k, v in t.ema.state_dict().items())
    assert import_lats_checkpoint(tmp_path / GENERATOR, "lats-small").config.image_size == 32


def test_running_generator_is_the_moving_average_and_slow_layers_get_a_hundredth(tmp_path):
    t = LATSTrainer(tiny_config(), tiny_data(), tmp_path)
    before = {k: v.clone() for k, v in t.generator.state_dict().items()}
    t.train_step()
    for k, v in t.ema.state_dict().items():
        expected = 0.999 * before[k] + 0.001 * t.generator.state_dict()[k]
        assert torch.allclose(v, expected, atol=1e-6), k
    assert [g["lr"] for g in t.opt_g.param_groups] == [pytest.approx(1e-3), pytest.approx(1e-5)]
    slow = {id(p) for p in t.opt_g.param_groups[1]["params"]}
    names = [n for n, p in t.generator.named_parameters() if id(p) in slow]
    assert names and all(n.startswith("mapping.") or ".affine." in n for n in names)
    assert any(n.startswith("mapping.") for n in names) and any(".affine." in n for n in names)
    schedule = LATSTrainer(tiny_config(steps=80, decay_at=(0.125, 0.25)), tiny_data(), tmp_path / "s")
    assert [schedule.learning_rate(s) for s in (0, 9, 10, 19, 20, 79)] == pytest.approx(
        [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


def test_resume_continues_exactly(tmp_path):
    straight = LATSTrainer(tiny_config(), tiny_data(), tmp_path / "a", loader_workers=0)   # drawn in this process
    straight.train(progress=False)
    halves = LATSTrainer(tiny_config(), tiny_data(), tmp_path / "b")                       # by a worker
    halves.train(until=2, progress=False)
    resumed = LATSTrainer.resume(tmp_path / "b", tiny_data())
    assert resumed.step == 2
    resumed.train(progress=False)
    a, b = straight.state_tensors(), resumed.state_tensors()
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a) and any(k.startswith("opt_d.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.log == resumed.log


def test_a_steps_draw_is_the_same_in_any_process_and_shard():
    config, data = tiny_config(batch=4), tiny_data()
    whole = step_arrays(data, config, slice(0, 4), 3)
    halves = [step_arrays(data, config, part, 3) for part in (slice(0, 2), slice(2, 4))]
    for key in ("images", "truth", "source", "target", "indices"):
        assert np.array_equal(whole[key], np.concatenate([h[key] for h in halves])), key
    assert np.array_equal(whole["noise"], np.concatenate([h["noise"] for h in halves], axis=1))
    assert whole["images"].shape == (4, 32, 32, 3) and whole["noise"].shape == (4, 4, 300)
    assert not np.array_equal(whole["images"], step_arrays(data, config, slice(0, 4), 4)["images"])


def test_paired_objective_trains_against_the_truth_without_the_critic(tmp_path):
    t = LATSTrainer(tiny_config(objective="paired", steps=2), tiny_data(), tmp_path)
    critic = {k: v.clone() for k, v in t.critic.state_dict().items()}
    t.train(progress=False)
    assert {"g_paired", "truth_l1", "g_rec", "g_cycle", "g_identity", "g_age"} == set(t.log[-1]) - {"step", "lr"}
    assert t.log[-1]["g_paired"] == t.log[-1]["truth_l1"]
    for k, v in t.critic.state_dict().items():
        assert torch.equal(critic[k], v), k


def test_bad_configs_and_checkpoints_are_refused(tmp_path):
    from exprengine.data.age_faces import write_age_folders
    write_age_folders(tmp_path / "ages", identities=40, seed=0)
    folder = age_training_data(str(tmp_path / "ages"), 32)
    with pytest.raises(UserError, match="paired objective needs the synthetic"):
        LATSTrainer(tiny_config(objective="paired"), folder, tmp_path / "r")
    with pytest.raises(UserError, match="64x64, the model takes 32x32"):
        LATSTrainer(tiny_config(), age_training_data("synthetic-age", 64), tmp_path / "r")
    with pytest.raises(UserError, match="nothing to resume"):
        LATSTrainer.resume(tmp_path / "none", tiny_data())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CHECKPOINT).write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(UserError, match="not readable"):
        LATSTrainer.resume(tmp_path / "bad", tiny_data())
    with pytest.raises(UserError, match="unknown or missing fields"):
        LATSTrainConfig.from_dict({**tiny_config().to_dict(), "lambda_gp": 1.0})
    with pytest.raises(UserError, match="batch"):
        LATSTrainConfig.from_dict({**tiny_config().to_dict(), "batch": 0})
    assert LATSTrainConfig.from_dict(tiny_config().to_dict()) == tiny_config()


@pytest.mark.parametrize("spec, message", [
    ("synthetic", "expression world"), ("synthetic-age:x", "synthetic-age"), ("synthetic-age:1:1", "identities"),
    ("{missing}", "does not exist"), ("{incomplete}", "holds no image"),
])
def test_bad_age_data_is_one_line_and_writes_nothing(tmp_path, capsys, spec, message):
    from exprengine.cli import main
    (tmp_path / "incomplete" / "train0-2").mkdir(parents=True)
    spec = spec.format(missing=tmp_path / "missing", incomplete=tmp_path / "incomplete")
    out = tmp_path / "run"
    assert main(["train", "--model", "lats-small", "--data", spec, "--out", str(out), "--image-size", "32",
                 "--steps", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_options_of_the_other_family_are_refused(tmp_path, capsys):
    from exprengine.cli import main
    out = tmp_path / "run"
    assert main(["train", "--model", "lats-small", "--dims", "8,16,32", "--out", str(out), "--steps", "1"]) == 2
    assert "--dims" in capsys.readouterr().err
    assert main(["train", "--model", "convnext2", "--data", "synthetic-age", "--out", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "age world" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--model", "convnext2", "--code-noise", "0", "--out", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--code-noise" in err and "age models" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_code_noise_and_mapping_rate_options_reach_the_run(tmp_path, capsys):
    from exprengine.cli import main
    run = tmp_path / "r"
    assert main(["train", "--model", "lats-small", "--data", "synthetic-age:1:40", "--out", str(run), "--steps", "1",
                 "--batch", "2", "--image-size", "32", "--code-noise", "0", "--mapping-lr", "1",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    config = LATSTrainer.checkpoint_config(run)
    assert (config.code_noise, config.mapping_lr) == (0.0, 1.0)
    trainer = LATSTrainer(config, tiny_data(), tmp_path / "unused", loader_workers=0)
    trainer.train_step()
    rate = trainer.learning_rate(0)
    assert [g["lr"] for g in trainer.opt_g.param_groups] == [rate, rate]            # slow layers at the full rate
    b = trainer.batch(0)
    assert torch.equal(b["code_gen"], trainer.generator.age_code(b["target"]))       # noiseless codes
    assert main(["train", "--model", "lats-small", "--mapping-lr", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--mapping-lr" in capsys.readouterr().err and not (tmp_path / "z").exists()


def test_train_command_on_an_age_folder_and_resume(tmp_path, capsys):
    from exprengine.cli import main
    from exprengine.data.age_faces import write_age_folders
    write_age_folders(tmp_path / "ages", identities=40, seed=0)
    run = tmp_path / "r"
    args = ["train", "--model", "lats-small", "--data", str(tmp_path / "ages"), "--out", str(run), "--steps", "2",
            "--batch", "2", "--image-size", "32", "--checkpoint-every", "2", "--sample-every", "2", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"trained {run} to step 2: {run / GENERATOR}"]
    assert main(args) == 2                                            # refuses to overwrite a run
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--steps", "3"]) == 0, capsys.readouterr().err
    resumed = LATSTrainer.resume(run, age_training_data(str(tmp_path / "ages"), 32))
    assert resumed.step == 3 and resumed.config.data == str(tmp_path / "ages") and resumed.config.batch == 2
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000003.png"]


def test_init_starts_both_generators_from_given_weights_and_refuses_another_model(tmp_path):
    from exprengine.models.weights import load_weights
    first = LATSTrainer(tiny_config(steps=1, checkpoint_every=1), tiny_data(), tmp_path / "first")
    first.train(progress=False)
    weights = tmp_path / "first" / GENERATOR
    tuned = LATSTrainer(tiny_config(init=str(weights)), tiny_data(), tmp_path / "tuned")
    for k, v in load_weights(weights).state_dict().items():
        assert torch.equal(tuned.generator.state_dict()[k], v) and torch.equal(tuned.ema.state_dict()[k], v), k
    with pytest.raises(UserError, match="another shape"):
        LATSTrainer(tiny_config(model="lats", init=str(weights)), tiny_data(), tmp_path / "other")


def test_a_pool_serves_the_renderers_faces_from_memory_and_runs_draw_from_it(tmp_path, monkeypatch):
    from exprengine.data.age_faces import PooledAgeFaces, SyntheticAgeFaces
    plain = SyntheticAgeFaces(70, 1, (0, 36), size=32)
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "one"))
    pool = PooledAgeFaces(70, 1, (0, 36), size=32, workers=1, progress=False)     # two chunks, one worker
    alone = PooledAgeFaces(70, 1, (0, 36), size=32, workers=0, progress=False)
    assert alone.images is None                                                    # nothing rendered yet
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "two"))                   # rendered, not read
    alone.fill()
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "one"))
    idx = [0, 63, 64, 69, 5, 5]
    want_images, want_truth = plain.render_samples(idx, truth=True)
    got_images, got_truth = pool.render_samples(idx, truth=True)
    assert np.array_equal(got_images, want_images) and np.array_equal(got_truth, want_truth)
    assert np.array_equal(alone.images, pool.images) and np.array_equal(alone.truths, pool.truths)
    assert pool.render_samples(idx)[1] is None and len(pool) == 70
    with pytest.raises(IndexError):
        pool.render_samples([70])
    # a run's step draws the same faces from a pool as from the renderer, and only pooled samples
    data = age_training_data("synthetic-age:1:40", 32, pool=50, progress=False)
    assert len(data) == 50
    config = tiny_config(batch=16, pool=50)
    arrays = step_arrays(data, config, slice(0, 16), 3)
    assert arrays["indices"].max() < 50
    images, truth = load_images(SyntheticAgeFaces(50, 1, (0, 36), size=32), arrays["indices"], 32, truth=True)
    unflipped, unflipped_truth = load_images(data, arrays["indices"], 32, truth=True)
    assert np.array_equal(unflipped, images) and np.array_equal(unflipped_truth, truth)


def test_pool_and_loss_weights_are_checked_and_old_configs_read_without_a_pool(tmp_path):
    d = tiny_config().to_dict()
    del d["pool"]                                  # a checkpoint written before pools existed
    assert LATSTrainConfig.from_dict(d).pool is None
    assert LATSTrainConfig.from_dict(tiny_config(pool=9).to_dict()).pool == 9
    with pytest.raises(UserError, match="pool"):
        LATSTrainConfig.from_dict({**tiny_config().to_dict(), "pool": 0})
    with pytest.raises(UserError, match="pool"):
        age_training_data("synthetic-age:1:40", 32, pool=-3)
    from exprengine.data.age_faces import write_age_folders
    write_age_folders(tmp_path / "ages", identities=12, seed=0)
    with pytest.raises(UserError, match="pool"):
        age_training_data(str(tmp_path / "ages"), 32, pool=10)


def test_a_loss_weighted_zero_is_neither_computed_nor_reported(tmp_path):
    calls = {"encode": 0, "age_encoder": 0}
    config = tiny_config(objective="paired", lambda_cycle=0.0, lambda_id=0.0, lambda_age=0.0)
    trainer = LATSTrainer(config, tiny_data(), tmp_path / "r", loader_workers=0)
    g = trainer.generator
    encode, age_encoder = g.encode, g.age_encoder.forward

    def counted(name, f):
        def call(*a, **k):
            calls[name] += 1
            return f(*a, **k)
        return call
    g.encode = counted("encode", encode)
    g.age_encoder.forward = counted("age_encoder", age_encoder)
    before = {n: p.detach().clone() for n, p in g.named_parameters() if n.startswith("age_encoder.")}
    out = trainer.train_step()
    assert set(out) == {"g_rec", "g_paired", "truth_l1"}
    assert calls == {"encode": 1, "age_encoder": 0}
    assert all(torch.equal(p, before[n]) for n, p in g.named_parameters() if n in before)
    full = LATSTrainer(tiny_config(objective="paired"), tiny_data(), tmp_path / "f", loader_workers=0)
    assert {"g_cycle", "g_identity", "g_age"} <= set(full.train_step())
    # only the weighted terms make the loss: with rec and paired alone, the gradient is theirs
    only = LATSTrainer(tiny_config(objective="paired", lambda_cycle=0.0, lambda_id=0.0, lambda_age=0.0, lambda_rec=0.0),
                       tiny_data(), tmp_path / "o", loader_workers=0)
    assert set(only.train_step()) == {"g_paired", "truth_l1"}


def test_pool_and_loss_weight_options_reach_the_run_and_bad_ones_are_one_line(tmp_path, capsys):
    from exprengine.cli import main
    run = tmp_path / "r"
    assert main(["train", "--model", "lats-small", "--data", "synthetic-age:1:40", "--out", str(run), "--steps", "1",
                 "--batch", "2", "--image-size", "32", "--objective", "paired", "--pool", "20",
                 "--loss-weight", "cycle=0", "--loss-weight", "age=0.5", "--device", "cpu"]) == 0, capsys.readouterr().err
    config = LATSTrainer.checkpoint_config(run)
    assert (config.pool, config.lambda_cycle, config.lambda_age, config.lambda_id) == (20, 0.0, 0.5, 1.0)
    capsys.readouterr()
    for args, words in ((["--model", "lats-small", "--loss-weight", "bogus=1"], ("'bogus'", "rec, cycle, id")),
                        (["--model", "lats-small", "--loss-weight", "cycle"], ("NAME=W",)),
                        (["--model", "lats-small", "--loss-weight", "cycle=-1"], ("NAME=W",)),
                        (["--model", "convnext2", "--loss-weight", "rec=1"], ("'rec'", "gp, au")),
                        (["--model", "convnext2", "--pool", "5"], ("--pool", "age models")),
                        (["--resume", "--pool", "5"], ("--pool", "new run"))):
        out = tmp_path / "z"
        assert main(["train", *args, "--out", str(run if "--resume" in args else out), "--steps", "2"]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), (args, err)
        assert not out.exists()
    config = LATSTrainer.checkpoint_config(run)
    assert config.steps == 1 and config.pool == 20


def test_a_pool_splits_its_rendering_between_processes_into_disjoint_chunks():
    from exprengine.data.age_faces import PooledAgeFaces
    pool = PooledAgeFaces(300, 1, (0, 36), size=32, progress=False)
    assert [list(c) for c in pool.chunks()] == [list(range(a, min(a + 64, 300))) for a in range(0, 300, 64)]
    for ranks in (1, 2, 3, 7):
        parts = [[i for c in pool.chunks(r, ranks) for i in c] for r in range(ranks)]
        every = sorted(i for part in parts for i in part)
        assert every == list(range(300)), ranks                   # each sample once, by one process


def test_a_run_with_a_pool_checks_everything_before_it_renders(tmp_path, monkeypatch):
    """A bad `init` (or any other check of the run) fails at once, not after minutes of rendering."""
    from exprengine.data.age_faces import PooledAgeFaces
    from exprengine.training.lats_trainer import train_age_run

    def not_yet(self, world=None):
        raise AssertionError("the pool was rendered before the run's checks")
    monkeypatch.setattr(PooledAgeFaces, "fill", not_yet)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        train_age_run(tmp_path / "run", tiny_config(pool=50, init=str(bad)), "cpu", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model,name", [("lats-small", "cycle"), ("convnext2", "tv")])
@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), 2e9, "1", True])
def test_a_loss_weight_outside_its_configs_bounds_is_refused_before_any_work(tmp_path, model, name, weight):
    from exprengine.training.runs import train_model
    with pytest.raises(UserError, match=f"`loss_weights` {name}: .*lambda_{name}"):
        train_model(tmp_path / "r", model=model, data="synthetic-age:1:40" if model.startswith("lats") else None,
                    steps=1, batch=2, image_size=32, device="cpu", progress=False, loss_weights={name: weight})
    assert not (tmp_path / "r").exists()


def test_a_rendered_pool_is_cached_and_a_stale_or_damaged_cache_is_rendered_again(tmp_path, monkeypatch):
    from exprengine.data.age_faces import PooledAgeFaces
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "cache"))
    renders = []
    real_render = PooledAgeFaces._render

    def counted(self, rank, ranks):
        renders.append(self.length)
        return real_render(self, rank, ranks)
    monkeypatch.setattr(PooledAgeFaces, "_render", counted)

    def pool(length=40, seed=1):
        p = PooledAgeFaces(length, seed, (0, 36), size=32, workers=0, progress=False)
        p.fill()
        return p
    first = pool()
    path = first.cache_path()
    assert renders == [40] and path.is_file() and path.parent == tmp_path / "cache" / "age-pools"
    again = pool()                                                  # mapped from the cache, not rendered
    assert renders == [40] and np.array_equal(again.images, first.images) and np.array_equal(again.truths, first.truths)
    images, _ = again.render_samples([3, 3])
    images[0] = 0                                                   # served as copies: the cache is untouched
    assert np.array_equal(again.render_samples([3])[0][0], first.images[3])
    assert pool(41).cache_path() != path and pool(40, seed=2).cache_path() != path and renders == [40, 41, 40]
    stale = np.load(path)                                           # a spot-checked sample differs: rendered again
    stale[1, 39] ^= 1
    np.save(path, stale)
    assert np.array_equal(pool().truths, first.truths) and renders[-1] == 40 and len(renders) == 4
    assert np.array_equal(np.load(path)[1], first.truths)         # and written again
    path.write_bytes(path.read_bytes()[:1000])                      # damaged: rendered again
    assert np.array_equal(pool().images, first.images) and len(renders) == 5
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "file"))  # a cache that cannot be written still works
    (tmp_path / "file").write_text("not a directory")
    assert np.array_equal(pool().images, first.images) and len(renders) == 6
