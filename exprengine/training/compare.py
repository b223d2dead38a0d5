"""The thesis's comparison, reproduced on synthetic faces: every generator family trained
under the same budget, then evaluated the same way (`exprengine compare`).

For each model: `exprengine train` on the synthetic world (same seed, data, steps, batch,
size; rendered on the fly, or a set pre-rendered by `exprengine synth` so that a GPU is
not kept waiting by the renderer) into OUT/<model>/, then `exprengine eval`'s synthetic evaluation (held-out identities,
PSNR, SSIM, AU error by the independent estimator, preservation, and with the FID
Inception weights, FID between the edits and their ground truth). The table goes to
OUT/comparison.md and .json, an example sheet per model to OUT/<model>/eval.png. Runs that
already reached the budget are not trained again (a stopped comparison resumes).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

from exprengine.errors import UserError, plural
from exprengine.training.trainer import CHECKPOINT, GENERATOR, Trainer, TrainConfig

THESIS_MODELS = ("ganimation", "convnext2", "convnext4", "convnext6", "convnext2-ln")
EVAL_IDENTITIES = (900, 1000)      # held out of every training set the comparison accepts


def compare(out: str | Path, base: TrainConfig, models: str | Sequence[str] = THESIS_MODELS, eval_n: int = 200,
            device: str = "cpu", progress: bool = True, inception_path: str | None = None) -> dict:
    """Train each of `models` with `base` (its `model` replaced) into `out/<model>/`, evaluate it
    (see the module) and write `out/comparison.json` and `.md`; returns the results
    ({"config", "eval_n", "device", "models": {name: report}}; `markdown` makes the table).

    `models`: registry generator names, or one text of them separated by commas. `device`:
    "cpu", "cuda" or "auto" (`resolve_device`). `inception_path`: the FID Inception-v3 weights
    (adds FID). UserError for an unknown or empty model list, `out` being a file, a data set
    that does not hold the evaluation's identities out, or unreadable Inception weights.
    """
    from exprengine.data.datasets import training_data
    from exprengine.engine import Engine
    from exprengine.engines.backends import resolve_device
    from exprengine.evaluation.synthetic_eval import evaluate_synthetic
    from exprengine.files import atomic_output
    from exprengine.media import write_image
    from exprengine.models import list_generators
    from exprengine.models.weights import load_weights
    names = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    models = [m for m in names if m]
    unknown = [m for m in models if m not in list_generators()]
    if unknown or not models:
        given = f"{plural(len(unknown), 'unknown model')}: {', '.join(unknown)}" if unknown else "no model given"
        raise UserError(f"{given}; choose from {', '.join(list_generators())}")
    device = resolve_device(device)
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"`out` {out} is a file; give a directory for the comparison")
    out = Path(out)
    inception = None
    if inception_path is not None:              # load (and check) the weights before hours of training
        from exprengine.evaluation.inception import load_fid_inception
        inception = load_fid_inception(inception_path)
    _check_held_out(base)
    out.mkdir(parents=True, exist_ok=True)
    results = {"config": base.to_dict(), "eval_n": eval_n, "device": device, "models": {}}
    done = _finished(out / "comparison.json", results, inception is not None)
    for model in models:
        if model in done:                       # trained and evaluated by an earlier, stopped run of this command
            results["models"][model] = done[model]
            continue
        config = dataclasses.replace(base, model=model)
        size = config.generator_config().image_size
        data = training_data(config.data if config.data != "synthetic" else f"synthetic:{config.seed}", size)
        run = out / model
        start = time.time()
        if (run / CHECKPOINT).is_file():
            trainer = Trainer.resume(run, data, device, config.steps)
        else:
            trainer = Trainer(config, data, run, device)
        trainer.train(progress=progress)
        train_seconds = time.time() - start
        engine = Engine.from_generator(load_weights(run / GENERATOR), max_batch=64)
        engine.policy = dataclasses.replace(engine.policy, max_intensity=5.0)
        report, sheet = evaluate_synthetic(engine, eval_n, config.seed, EVAL_IDENTITIES, sheet_rows=6,
                                           inception=inception)
        write_image(run / "eval.png", sheet)
        report.update(train_seconds=round(train_seconds), steps=trainer.step,
                      parameters=sum(p.numel() for p in trainer.generator.parameters()))
        results["models"][model] = report
        with atomic_output(out / "comparison.json") as tmp:
            Path(tmp).write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    with atomic_output(out / "comparison.md") as tmp:
        Path(tmp).write_text(table)
    return results


def _check_held_out(config: TrainConfig) -> None:
    """The evaluation edits identities EVAL_IDENTITIES of world `config.seed`: a synthetic set
    trained on must come from that world and hold those identities out."""
    if config.data.startswith("synthetic"):
        try:
            parts = [int(p) for p in config.data.split(":")[1:]]
        except ValueError:
            return                              # training_data() says what the spec should be
        if parts and (parts[0] != config.seed or (len(parts) > 1 and parts[1] != EVAL_IDENTITIES[1])):
            raise UserError(f"`data` {config.data}: the comparison evaluates identities {EVAL_IDENTITIES[0]}-"
                            f"{EVAL_IDENTITIES[1] - 1} of world {config.seed}; use `data` synthetic or the same `seed`")
        return
    info = Path(config.data) / "synth.json"
    if not info.is_file():
        raise UserError(f"`data` {config.data}: the comparison evaluates on the synthetic world, so it trains on a set "
                        "from `exprengine synth` (no synth.json there)")
    stats = json.loads(info.read_text())
    if stats.get("seed") != config.seed or stats.get("test_identities", [0])[0] > EVAL_IDENTITIES[0] \
            or stats.get("identities", 0) < EVAL_IDENTITIES[1]:
        raise UserError(f"`data` {config.data}: rendered with seed {stats.get('seed')} and identities "
                        f"{stats.get('identities')}; the comparison needs `seed` {config.seed} and the evaluation's "
                        f"identities {EVAL_IDENTITIES[0]}-{EVAL_IDENTITIES[1] - 1} held out "
                        f"(`exprengine synth --seed {config.seed} --identities {EVAL_IDENTITIES[1]}`)")


def _finished(path: Path, results: dict, with_fid: bool) -> dict:
    """Models an earlier run of the same comparison (same config, evaluation and device)
    already trained to the budget and evaluated: their measured results, training time
    included, are kept rather than re-timed."""
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if any(earlier.get(k) != results[k] for k in ("config", "eval_n", "device")):
        return {}
    steps = results["config"]["steps"]
    return {name: r for name, r in earlier.get("models", {}).items()
            if r.get("steps") == steps and ("fid" in r) == with_fid}


def markdown(results: dict) -> str:
    """`compare`'s results as Markdown (comparison.md): a line saying the data, size, objective,
    steps, batch, seed and learning rate; one table row per model (parameters in millions,
    PSNR dB, SSIM, AU error in intensity units, on target %, preserved PSNR dB, background
    change in uint8 levels, FID when every model has one, training seconds); the no-edit baseline and the AU
    estimator's own error; and a note when FID is left out. KeyError for results that lack a field."""
    c = results["config"]
    size = c.get("image_size") or 128
    objective = c.get("objective", "gan")
    unit = "critic steps" if objective == "gan" else "generator steps"
    fid = all("fid" in r for r in results["models"].values()) and bool(results["models"])
    data = c.get("data", "synthetic")
    source = "rendered on the fly" if data.startswith("synthetic") else f"pre-rendered set {Path(data).name}"
    lines = [f"Synthetic faces ({source}), {size}x{size}, {objective} objective, {c['steps']} {unit} of batch {c['batch']} per model "
             f"(seed {c['seed']}, lr {c['lr']}), evaluated on {results['eval_n']} edits of held-out identities "
             f"({results['device']}).", "",
             "| model | parameters | PSNR | SSIM | AU error | on target | preserved PSNR | background change | "
             + ("FID vs truth | " if fid else "") + "train s |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if fid else "")]
    for name, r in results["models"].items():
        lines.append(f"| {name} | {r['parameters'] / 1e6:.2f} M | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['au_mae']:.3f} | "
                     f"{100 * r['on_target']:.0f} % | {r['preserved_psnr']:.2f} | {r['background_change']:.2f} | "
                     + (f"{r['fid']:.2f} | " if fid else "") + f"{r['train_seconds']} |")
    any_r = next(iter(results["models"].values()), None)
    if any_r:
        b = any_r["no_edit"]
        lines += ["", f"No edit (the input itself): PSNR {b['psnr']:.2f}, SSIM {b['ssim']:.4f}, AU error "
                      f"{b['au_mae']:.3f}" + (f", FID {b['fid']:.2f}" if fid else "") + "; the AU estimator's own error on the ground truth: "
                      f"{any_r['au_mae_ground_truth']:.3f}."]
    if not fid:
        lines += ["", "FID is left out: it needs the FID Inception-v3 weights (`--inception PATH`), which cannot "
                      "be downloaded here."]
    return "\n".join(lines) + "\n"
