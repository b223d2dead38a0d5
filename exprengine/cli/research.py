"""`exprengine train`, `eval`, `compare`, `synth`, `prepare`, `train-au-estimator`,
`train-age-estimator`, `demo`: training, evaluation, data sets and the demo."""
from __future__ import annotations

from pathlib import Path

import click

from exprengine.aus import AUPolicy
from exprengine.cli.options import BATCH, IMAGE_SIZE, LEARNING_RATE, LOSS_WEIGHT, SEED, STEPS, cli, engine_or_default
from exprengine.console import RegistryChoice
from exprengine.errors import UserError


@cli.command(inputs=("data", "init"), outputs=("out",))
@click.option("--model", default="convnext6", show_default=True, metavar="NAME",
              help="Generator architecture: an expression generator, or an age model (lats, lats-small).")
@click.option("--data", default=None, metavar="SPEC",
              help="synthetic[:SEED[:IDENTITIES]] (expressions) or synthetic-age[:SEED[:IDENTITIES]] (ages), "
                   "rendered on the fly, or a data set directory (age models: train0-2/ ... train50-69/). "
                   "[default: synthetic; synthetic-age]")
@click.option("--out", required=True, metavar="DIR", help="Run directory (checkpoints, samples, curves).")
@click.option("--objective", type=RegistryChoice("exprengine.training.trainer:OBJECTIVES"), default="gan", show_default=True,
              help="gan: the model's GAN losses (any data); paired: L1 to the renderer's true edit (synthetic only).")
@click.option("--steps", type=STEPS, default=100_000, show_default=True,
              help="Critic steps (gan) or generator steps (paired); an age model's step updates both.")
@click.option("--batch", type=BATCH, default=None,
              help="Images per step, all processes together. [default: 25; age models 12]")
@click.option("--lr", type=LEARNING_RATE, default=None, help="[default: 1e-4; age models 1e-3]")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Initial weights and every step's draws.")
@click.option("--checkpoint-every", type=STEPS, default=1000, show_default=True)
@click.option("--sample-every", type=STEPS, default=1000, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its checkpoint stopped.")
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto", show_default=True)
@click.option("--image-size", type=IMAGE_SIZE, default=None, help="Override the model's image size.")
@click.option("--dims", default=None, metavar="A,B,C", help="Override the model's widths (small experiments).")
@click.option("--depth", type=click.IntRange(1, 64), default=None, help="Override the number of residual blocks.")
@click.option("--critic-width", type=click.IntRange(1, 1024), default=None, help="[default: 64; expression models]")
@click.option("--init", default=None, metavar="WEIGHTS",
              help="Start the generator from these weights (fine-tune): our .safetensors, a GANimation .pth, "
                   "or the LATS authors' latest_net_g_running.pth.")
@click.option("--code-noise", type=click.FloatRange(0, 10), default=None, metavar="SIGMA",
              help="Age models: the age codes' noise (0: none, the reference's --no_cond_noise). [default: 0.2]")
@click.option("--mapping-lr", type=click.FloatRange(0, 1, min_open=True), default=None, metavar="FACTOR",
              help="Age models: the mapping and modulation layers' learning-rate factor. [default: 0.01]")
@click.option("--pool", type=click.IntRange(1, 1_000_000), default=None, metavar="N",
              help="Age models on synthetic-age: render N samples once and draw every step from them "
                   "(a step then costs no rendering; samples repeat; kept in the cache, so a resumed run "
                   "starts at once). [default: render every draw]")
@click.option("--loss-weight", "loss_weights", type=LOSS_WEIGHT, multiple=True, metavar="NAME=W",
              help="Change a loss's weight (repeatable; age models skip a term weighted 0): expression models gp, au, cycle, "
                   "attention, tv, paired; age models rec, cycle, id, age, r1, paired.")
def train(model, data, out, objective, steps, batch, lr, seed, checkpoint_every, sample_every, resume, device,
          image_size, dims, depth, critic_width, init, code_noise, mapping_lr, pool, loss_weights):
    """Train a generator: expression models with GANimation's losses (WGAN-GP, AU regression,
    cycle, attention), age models with LATS's (multi-class critic, age codes, cycle, reconstruction).

    \b
    Examples:
      exprengine train --model convnext6 --data synthetic --out runs/cx6 --steps 20000
      exprengine train --model ganimation --data data/celeba --out runs/g --device cuda
      exprengine train --objective paired --dims 24,48,96 --batch 8 --out runs/small   # synthetic ground truth
      exprengine train --out runs/cx6 --resume --steps 40000        # continue, with a longer budget
      exprengine train --model ganimation --init 30_net_gen.pth --data data/mine --out runs/finetune
      exprengine build --model convnext6 --checkpoint runs/cx6/generator.safetensors --out engines/cx6
      exprengine train --model lats-small --data synthetic-age --image-size 128 --out runs/age --steps 20000
      exprengine train --model lats --data datasets/males --out runs/males --device cuda
      exprengine train --model lats-small --objective paired --pool 20000 --loss-weight cycle=0 --out runs/a
      torchrun --nproc_per_node=4 -m exprengine.cli train --model lats --data datasets/males --out runs/m4 --batch 24
    """
    from exprengine.training.runs import train_model
    from exprengine.training.trainer import GENERATOR
    trainer = train_model(out, model=model, data=data, objective=objective, steps=steps, batch=batch, lr=lr, seed=seed,
                          checkpoint_every=checkpoint_every, sample_every=sample_every, image_size=image_size, dims=dims,
                          depth=depth, critic_width=critic_width, init=init, device=device, resume=resume,
                          code_noise=code_noise, mapping_lr=mapping_lr, pool=pool,
                          loss_weights=dict(loss_weights))
    if trainer.world.main:                        # under torchrun, one line from rank 0
        click.echo(f"trained {out} to step {trainer.step}: {Path(out) / GENERATOR}")


@cli.command(name="eval", inputs=("engine_dir", "real_dir", "inception", "photos"),
             outputs=("json_out", "sheet", "photo_sheets"), together=True)
@click.argument("engine_dir", metavar="ENGINE")
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto", show_default=True)
@click.option("--n", "count", type=click.IntRange(2, 100_000), default=200, show_default=True,
              help="Edits to evaluate (held-out synthetic identities).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Synthetic world seed (as trained on).")
@click.option("--json", "json_out", default=None, metavar="PATH", help="Write the report as JSON.")
@click.option("--sheet", default=None, metavar="PATH", help="PNG of examples: input | edit | ground truth.")
@click.option("--real", "real_dir", default=None, metavar="DATASET",
              help="Also FID/IS on the test split of a real data set (needs --inception).")
@click.option("--inception", default=None, metavar="PATH",
              help="FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth; not downloadable here).")
@click.option("--photos", default=None, metavar="DIR",
              help="Evaluate on the real face photos in DIR instead of synthetic faces: every AU and preset on "
                   "every face, measured by MediaPipe blendshapes, dlib identity distance and pixels changed "
                   "outside the faces.")
@click.option("--photo-sheets", default=None, metavar="DIR",
              help="With --photos: one labelled contact sheet PNG per face, into DIR (new or empty).")
def evaluate(engine_dir, device, count, seed, json_out, sheet, real_dir, inception, photos, photo_sheets):
    """Evaluate an engine: synthetic faces against exact ground truth (PSNR, SSIM, AU error),
    and optionally FID / Inception Score on real photos.

    AU error is measured by an AU estimator trained separately on the renderer (not the GAN
    critic). FID and IS need the standard FID Inception weights, which cannot be downloaded
    on these machines: give their path.

    \b
    Examples:
      exprengine eval engines/cx6 --n 500 --json eval.json --sheet eval.png
      exprengine eval engines/cx6 --real data/celeba --inception pt_inception-2015-12-05-6726825d.pth
      exprengine eval engines/cx6 --photos ~/.cache/exprengine/photos --photo-sheets sheets/ --json photos.json

    --photos runs only the photo evaluation (the synthetic one is skipped: run eval without
    --photos for it). `python -m exprengine.evaluation.photo_sets DIR` gathers a photo set.
    """
    if photo_sheets and not photos:
        raise UserError("--photo-sheets needs --photos DIR")
    if photos and (real_dir or sheet):
        raise UserError("--real and --sheet belong to the synthetic evaluation, which --photos skips; "
                        "run them without --photos")
    engine = engine_or_default(engine_dir, device, AUPolicy(max_intensity=5.0))
    if photos:
        from exprengine.evaluation.photo_eval import format_report, run_photo_evaluation
        click.echo(format_report(run_photo_evaluation(engine, photos, photo_sheets=photo_sheets, json_path=json_out)))
        return
    from exprengine.evaluation.synthetic_eval import format_synthetic_report, run_synthetic_evaluation
    report = run_synthetic_evaluation(engine, count, seed, real_dir=real_dir, inception=inception, sheet_path=sheet,
                                      json_path=json_out)
    click.echo(format_synthetic_report(report))


def _train_estimator_command(kind: str, trainer: str, examples: int, steps: int, error: str, doc: str):
    """Add the command `exprengine train-KIND-estimator`: `trainer` ("module:function", returning
    (model, report)) trains on --examples renders for --steps, the model is written to --out
    (`evaluation.estimator.save_estimator`) and one line says `error` (a format of the report)."""
    @cli.command(name=f"train-{kind}-estimator", outputs=("out",), together=True, help=doc)
    @click.option("--out", required=True, metavar="PATH", help="Weights file to write (.safetensors).")
    @click.option("--examples", type=click.IntRange(100, 10_000_000), default=examples, show_default=True)
    @click.option("--steps", type=STEPS, default=steps, show_default=True)
    def command(out, examples, steps):
        from importlib import import_module

        from exprengine.evaluation.estimator import save_estimator
        module, function = trainer.split(":")
        model, report = getattr(import_module(module), function)(examples=examples, steps=steps)
        save_estimator(model, out, report)
        click.echo(f"wrote {out}: {error.format(**report)} on held-out identities")
    return command


train_au_estimator_command = _train_estimator_command(
    "au", "exprengine.evaluation.au_estimator:train_au_estimator", 10000, 2000, "mean absolute AU error {mae:.3f}",
    """Train the independent AU estimator that `exprengine eval` measures edits with.

    \b
    Example (the shipped estimator):
      exprengine train-au-estimator --examples 10000 --steps 2000 --out exprengine/assets/au_estimator.safetensors
    """)
train_age_estimator_command = _train_estimator_command(
    "age", "exprengine.evaluation.age_estimator:train_age_estimator", 8000, 3000,
    "mean absolute age error {mae:.2f} years",
    """Train the independent apparent-age estimator that measures age edits of synthetic faces.

    \b
    Example (the shipped estimator):
      exprengine train-age-estimator --examples 8000 --steps 3000 --out exprengine/assets/age_estimator.safetensors
    """)


@cli.command(inputs=("photos", "openface"), outputs=("out",))
@click.argument("photos", metavar="PHOTOS_DIR")
@click.option("--out", required=True, metavar="DATASET", help="Data set directory (created, or resumed).")
@click.option("--detector", type=RegistryChoice("exprengine.faces.landmarks:DETECTORS"), default="hog", show_default=True,
              help="face_recognition's detector model (cnn: more accurate, much slower on a CPU), or MediaPipe's.")
@click.option("--openface", default=None, metavar="CSV_DIR",
              help="OpenFace -aus output for the crops or photos: FaceLandmarkImg's folder of <stem>.csv, "
                   "or FeatureExtraction -fdir's one CSV (row n = n-th image in sorted order).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True)
def prepare(photos, out, detector, openface, test_fraction):
    """Crop the faces of a folder of photos into a training data set (resumable).

    \b
    Examples:
      exprengine prepare celeba/img_align_celeba --out data/celeba
      OpenFace/build/bin/FaceLandmarkImg -fdir data/celeba/imgs -aus -out_dir data/celeba-openface
      exprengine prepare celeba/img_align_celeba --out data/celeba --openface data/celeba-openface
    """
    from exprengine.data.prepare import format_prepare_report, prepare_photos
    click.echo(format_prepare_report(prepare_photos(photos, out, detector, openface, test_fraction), out))


@cli.command(inputs=("data", "inception"), outputs=("out",))
@click.option("--out", required=True, metavar="DIR", help="Directory for the runs and the table.")
@click.option("--models", default="ganimation,convnext2,convnext4,convnext6,convnext2-ln", show_default=True,
              help="Comma-separated registry models.")
@click.option("--objective", type=RegistryChoice("exprengine.training.trainer:OBJECTIVES"), default="gan", show_default=True,
              help="gan: the thesis's GANimation losses; paired: L1 to the renderer's true edit.")
@click.option("--data", default="synthetic", show_default=True, metavar="SPEC",
              help="synthetic[:SEED[:IDENTITIES]] rendered on the fly, or a synthetic set from `exprengine synth` "
                   "(gan objective; faster where rendering would starve a GPU).")
@click.option("--steps", type=STEPS, default=20000, show_default=True,
              help="Critic steps (gan) or generator steps (paired) per model.")
@click.option("--batch", type=BATCH, default=25, show_default=True)
@click.option("--lr", type=LEARNING_RATE, default=1e-4, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--eval-n", type=click.IntRange(2, 100_000), default=200, show_default=True)
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto", show_default=True)
@click.option("--image-size", type=IMAGE_SIZE, default=None, help="Smaller budgets: train at this size.")
@click.option("--dims", default=None, metavar="A,B,C", help="Smaller budgets: override the widths.")
@click.option("--critic-width", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--inception", default=None, metavar="PATH",
              help="FID Inception-v3 weights: adds FID between edits and ground truth (not downloadable here).")
def compare(out, models, objective, data, steps, batch, lr, seed, eval_n, device, image_size, dims, critic_width, inception):
    """Train every generator family under the same budget and tabulate their evaluation.

    \b
    Examples:
      exprengine compare --out runs/compare --steps 20000 --device cuda
      exprengine compare --out runs/compare-cpu --steps 600 --batch 8 --image-size 64 --dims 16,32,64 --critic-width 16
      exprengine compare --out runs/compare-paired --objective paired --steps 600 --batch 8 --lr 3e-4 --image-size 64 --dims 16,32,64
      exprengine synth --n 30000 --out data/synth && exprengine compare --out runs/compare --data data/synth --device cuda
    """
    from exprengine.training.compare import compare as run_compare, markdown
    from exprengine.training.trainer import TrainConfig
    config = TrainConfig(objective=objective, data=data, steps=steps, batch=batch, lr=lr, seed=seed, image_size=image_size, dims=dims,
                         critic_width=critic_width, checkpoint_every=max(1, steps // 10), sample_every=max(1, steps // 4))
    click.echo(markdown(run_compare(out, config, models, eval_n, device, inception_path=inception)))


@cli.command(outputs=("out",), together=True)
@click.option("--n", "count", type=click.IntRange(1, 10_000_000), default=10000, show_default=True,
              help="Number of faces to render.")
@click.option("--out", required=True, metavar="DIR", help="Data set directory to write (atomically).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="World seed: identities and expressions.")
@click.option("--identities", type=click.IntRange(2, 10_000_000), default=1000, show_default=True,
              help="Distinct identities (samples cycle through them).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Fraction of identities held out for testing.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Processes [default: CPU count, max 8].")
def synth(count, out, seed, identities, test_fraction, workers):
    """Render a synthetic face data set with exact AU labels (for training and evaluation).

    \b
    Examples:
      exprengine synth --n 10000 --out data/synth
      exprengine synth --n 200000 --identities 5000 --seed 1 --out data/synth-large
    """
    from exprengine.data.datasets import write_synthetic
    stats = write_synthetic(out, count, seed, identities, test_fraction, workers)
    click.echo(f"wrote {out}: {stats['n']} faces of {identities} identities "
               f"({stats['images_per_second']:.0f} images/s with {stats['workers']} workers)")


@cli.command(outputs=("out",))
@click.option("--out", default="exprengine-demo", show_default=True, metavar="DIR",
              help="Output folder (replaced if it is an earlier demo's).")
@click.option("--model", default="default", show_default=True, metavar="NAME",
              help="'default' (the shipped trained model) or a registry architecture (random weights).")
@click.option("--backend", type=RegistryChoice("exprengine.engines.backends:backend_names", device="cpu", compiled=True), default="onnxruntime",
              show_default=True,
              help="Compiled backend to build and time against eager PyTorch.")
@click.option("--frames", type=click.IntRange(2, 64), default=16, show_default=True, help="Morph length.")
@click.option("--repeats", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Timing repetitions (the median is reported).")
def demo(out, model, backend, frames, repeats):
    """Build an engine from the shipped default model and edit bundled faces with every preset.

    \b
    Writes to DIR: engine/; presets.png and edits/ (a held-out synthetic face, every preset,
    above the renderer's true faces); regions.md (where the edits land, measured); the
    bundled photo's edits (presets_photo.png, edits_photo/); morph.gif and morph_sheet.png;
    timing.md (eager PyTorch vs the engine, measured now); README.txt; demo.json.

    \b
    Examples:
      exprengine demo
      exprengine demo --out /tmp/demo --backend aoti
      exprengine demo --model ganimation        # the architecture with random weights
    """
    from exprengine.demo import run_demo
    run_demo(Path(out), model=model, backend=backend, frames=frames, repeats=repeats, echo=click.echo)
