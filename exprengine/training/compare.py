"""The thesis's comparison, reproduced on synthetic faces: every generator family trained
under the same budget, then evaluated the same way (`exprengine compare`).

For each model: `exprengine train` on the synthetic world (same seed, data, steps, batch,
size) into OUT/<model>/, then `exprengine eval`'s synthetic evaluation (held-out identities,
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

from exprengine.training.trainer import CHECKPOINT, GENERATOR, Trainer, TrainConfig

THESIS_MODELS = ("ganimation", "convnext2", "convnext4", "convnext6", "convnext2-ln")
COLUMNS = ("psnr", "ssim", "au_mae", "on_target", "preserved_psnr", "background_change")


def compare(out: str | Path, base: TrainConfig, models=THESIS_MODELS, eval_n: int = 200, device: str = "cpu",
            progress: bool = True, inception_path: str | None = None) -> dict:
    from exprengine.checkpoints import load_weights
    from exprengine.data.synthetic import SyntheticFaces
    from exprengine.engine import Engine
    from exprengine.evaluation.synthetic_eval import evaluate_synthetic
    from exprengine.media import atomic_output, write_image
    out = Path(out)
    inception = None
    if inception_path is not None:              # load (and check) the weights before hours of training
        from exprengine.evaluation.inception import load_fid_inception
        inception = load_fid_inception(inception_path)
    out.mkdir(parents=True, exist_ok=True)
    results = {"config": base.to_dict(), "eval_n": eval_n, "device": device, "models": {}}
    for model in models:
        config = dataclasses.replace(base, model=model)
        size = config.generator_config().image_size
        data = SyntheticFaces(1_000_000, config.seed, (0, 900), size=size)
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
        report, sheet = evaluate_synthetic(engine, eval_n, config.seed, sheet_rows=6, inception=inception)
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


def markdown(results: dict) -> str:
    c = results["config"]
    size = c.get("image_size") or 128
    objective = c.get("objective", "gan")
    unit = "critic steps" if objective == "gan" else "generator steps"
    fid = all("fid" in r for r in results["models"].values()) and bool(results["models"])
    lines = [f"Synthetic faces, {size}x{size}, {objective} objective, {c['steps']} {unit} of batch {c['batch']} per model "
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
