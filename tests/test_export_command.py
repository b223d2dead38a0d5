"""export/export_model.py, the command-line exporter, run as a user runs it: a separate process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from exprengine.models.weights import save_weights, weights_sha256
from exprengine.export.onnx_graph import read_metadata

from helpers import perturbed_generator

SCRIPT = Path(__file__).resolve().parents[1] / "export" / "export_model.py"


def export_model(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    g = perturbed_generator("convnext2")
    path = tmp_path_factory.mktemp("ckpt") / "cx2.safetensors"
    save_weights(g, path)
    return g, path


def test_checkpoint_to_onnx_runs_like_eager(checkpoint, tmp_path, rng):
    g, path = checkpoint
    out = tmp_path / "cx2.onnx"
    r = export_model("--model", "convnext2", "--checkpoint", str(path), "--max-batch", "8", "--out", str(out),
                     cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {out}: ONNX of convnext2 (cx2.safetensors), blended outputs, batch 1..8"
    meta = read_metadata(out)
    assert meta["exprengine.model"] == "convnext2" and meta["exprengine.outputs"] == "blended"
    assert meta["exprengine.weights_sha256"] == weights_sha256(g)
    image = rng.uniform(-1, 1, (3, 3, 128, 128)).astype(np.float32)
    aus = rng.uniform(0, 0.4, (3, 17)).astype(np.float32)
    output, attention = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"image": image, "aus": aus})
    with torch.no_grad():
        ref = g.edit(torch.from_numpy(image), torch.from_numpy(aus)).numpy()
    assert output.shape == (3, 3, 128, 128) and attention.shape == (3, 1, 128, 128)
    assert np.abs(output - ref).max() / np.abs(ref).max() < 1e-4


def test_checkpoint_to_torch_export_program_of_the_heads(checkpoint, tmp_path, rng):
    g, path = checkpoint
    out = tmp_path / "cx2.pt2"
    r = export_model("--model", "convnext2", "--checkpoint", str(path), "--outputs", "heads", "--out", str(out),
                     cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "torch.export program of convnext2" in r.stdout
    module = torch.export.load(str(out)).module()
    image = torch.from_numpy(rng.uniform(-1, 1, (5, 3, 128, 128)).astype(np.float32))
    aus = torch.from_numpy(rng.uniform(0, 0.4, (5, 17)).astype(np.float32))
    with torch.no_grad():
        color, attention = module(image, aus)
        ref_color, ref_attention = g(image, aus)
    assert (color - ref_color).abs().max() < 1e-4 and (attention - ref_attention).abs().max() < 1e-4


@pytest.mark.parametrize("args, message", [
    (["--out", "x.txt"], "error: --out must end in .onnx or .pt2"),
    (["--model", "rig", "--checkpoint", "cx2.safetensors", "--out", "rig.onnx"], "error: the rig has no learned weights"),
    (["--model", "rig", "--precision", "fp16", "--out", "rig.onnx"], "error: the rig is exported in fp32 only"),
    (["--model", "convnext2", "--checkpoint", "missing.safetensors", "--out", "x.onnx"], "error: "),
    (["--model", "convnext2", "--precision", "fp16", "--out", "x.pt2"], "error: --precision fp16 is for ONNX"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    r = export_model(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr
    assert list(tmp_path.iterdir()) == []
