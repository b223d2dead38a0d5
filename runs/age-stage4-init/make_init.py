"""Stage 4's initial generator (`init.safetensors`): stage 3's trained generator (its identity
encoder and decoder, `runs/age-stage3/checkpoint.safetensors`, not the running average) with
stage 1's mapping network (`runs/age-default/generator.safetensors`), whose six class styles are
still apart (mean cosine 0.84) where stages 2 and 3, training the mapping at the full rate, had
collapsed them (0.995-0.998). Run from the repository root:

    python runs/age-stage4-init/make_init.py
"""
import torch

from exprengine.models.lats import import_lats_checkpoint
from exprengine.models.weights import save_weights
from exprengine.training.lats_trainer import LATSTrainer


def class_style_cosine(generator) -> float:
    """Mean cosine similarity of the six class styles, off the diagonal."""
    s = generator.class_styles().detach()
    c = torch.nn.functional.cosine_similarity(s[:, None], s[None], dim=-1)
    return c[~torch.eye(len(s), dtype=torch.bool)].mean().item()


stage3 = LATSTrainer.checkpoint_generator("runs/age-stage3", running=False)
stage1 = import_lats_checkpoint("runs/age-default/generator.safetensors")
mapping = {k: v for k, v in stage1.state_dict().items() if k.startswith("mapping.")}
state = stage3.state_dict()
state.update(mapping)
stage3.load_state_dict(state)
print(f"class styles' mean cosine: stage 3 {class_style_cosine(LATSTrainer.checkpoint_generator('runs/age-stage3', running=False)):.3f}, "
      f"stage 1 {class_style_cosine(stage1):.3f}, init {class_style_cosine(stage3):.3f}")
save_weights(stage3, "runs/age-stage4-init/init.safetensors")
