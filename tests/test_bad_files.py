"""Bad files a user can hand us (weights, run checkpoints, data sets, Inception weights):
each is one line `exprengine: error: ...`, exit status 2, no traceback, nothing written and
the input unchanged; never an internal error, an out-of-memory kill or a crash mid-run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save
from test_cli import assert_one_line_error, run_cli

from exprengine.models.weights import tensors_sha256
from exprengine.errors import UserError

TINY = ["--model", "convnext2", "--image-size", 16, "--dims", "4,8,8", "--batch", 2, "--steps", 1,
        "--critic-width", 4]


def _read(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 1-step run (16x16 convnext2, widths 4,8,8) and a 6-image synthetic data set."""
    from exprengine.cli import main
    root = tmp_path_factory.mktemp("bad_files")
    assert main(["synth", "--n", "6", "--identities", "3", "--workers", "1", "--out", str(root / "ds")]) == 0
    assert main(["train", *map(str, TINY), "--out", str(root / "run")]) == 0
    return root


def _expect_refused(args, capsys, watched: Path, out: Path | None = None):
    before = watched.read_bytes() if watched.is_file() else None
    code, stdout, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    if before is not None:
        assert watched.read_bytes() == before                # the input is unchanged
    if out is not None:
        assert not out.exists()                              # nothing written
    return err


# --- generator weights: build --checkpoint and train --init ----------------------------------------
def _weights(meta: dict, tensors: dict, config=None, fix=None):
    meta = dict(meta)
    if config is not None:
        meta["config"] = config if isinstance(config, str) else json.dumps(config)
    if fix is not None:
        tensors = {k: fix(v) for k, v in tensors.items()}
    meta["weights_sha256"] = tensors_sha256(tensors)       # a consistent file: only its contents are bad
    return save(tensors, metadata=meta)


WEIGHTS = {
    "depth 10^9 (was an out-of-memory kill)": dict(config={"depth": 10**9}),
    "image size 0 (was an internal error)": dict(config={"image_size": 0}),
    "image size 10^9 (was an internal error)": dict(config={"image_size": 10**9}),
    "widths 0,0,0 (was a torch warning)": dict(config={"dims": [0, 0, 0]}),
    "config a list": dict(config="[1]"),
    "config with an unknown field": dict(config={"zzz": 1}),
    "NaN weights (were built)": dict(fix=lambda v: torch.full_like(v, float("nan"))),
    "int8 weights (were built)": dict(fix=lambda v: v.to(torch.int8)),
    "bool weights (were built)": dict(fix=lambda v: v.bool()),
}


@pytest.mark.parametrize("case", list(WEIGHTS), ids=list(WEIGHTS))
@pytest.mark.parametrize("command", ["build", "train --init"])
def test_bad_generator_weights(tiny_run, tmp_path, capsys, case, command):
    meta, tensors = _read(tiny_run / "run" / "generator.safetensors")
    spec = WEIGHTS[case]
    config = spec.get("config")
    if isinstance(config, dict):
        config = {**json.loads(meta["config"]), **config}
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_weights(meta, tensors, config, spec.get("fix")))
    out = tmp_path / "out"
    if command == "build":
        args = ["build", "--model", "convnext2", "--checkpoint", path, "--out", out, "--no-verify"]
    else:
        args = ["train", *TINY, "--init", path, "--data", tiny_run / "ds", "--out", out]
    _expect_refused(args, capsys, path, out)


def test_public_layout_with_a_scalar_conv_weight(tmp_path, capsys):
    """A GANimation file whose conv weight is 0-d was an IndexError."""
    path = tmp_path / "g.pth"
    torch.save({"img_reg.0.weight": torch.zeros(3, 64, 7, 7), "main.0.weight": torch.zeros(())}, path)
    err = _expect_refused(["build", "--model", "ganimation", "--checkpoint", path, "--out", tmp_path / "e"],
                          capsys, path, tmp_path / "e")
    assert "4 dimensions" in err


@pytest.mark.parametrize("make", [lambda v: v.to_sparse(), lambda v: torch.complex(v, v), lambda v: v.to("meta"),
                                  lambda v: v.double() * 1e300],
                         ids=["sparse", "complex", "meta", "float64 beyond float32"])
def test_pth_with_unusable_tensors(tmp_path, make):
    from exprengine.models.ganimation import import_checkpoint
    from exprengine.models import create_generator
    path = tmp_path / "g.pth"
    torch.save({k: make(v) for k, v in create_generator("convnext2").state_dict().items()}, path)
    with pytest.raises(UserError, match="not floating-point|NaN or infinite"):
        import_checkpoint(path, "convnext2")


# --- train --resume with a corrupted run ----------------------------------------------------------
def _config(**changes):
    return lambda meta, tensors: ({**meta, "config": json.dumps({**json.loads(meta["config"]), **changes})},
                                  tensors)


RESUME = {
    "batch 10^12 (was an out-of-memory kill)": _config(batch=10**12),
    "steps as text (ran)": _config(steps="abc"),
    "unknown config field (was an internal error)": _config(zzz=1),
    "depth 10^9": _config(depth=10**9),
    "lr NaN": _config(lr=float("nan")),
    "config not JSON": lambda m, t: ({**m, "config": "{"}, t),
    "config with a 100000-digit number": lambda m, t: ({**m, "config": m["config"][:-1] + ', "seed": ' + "9" * 100000 + "}"}, t),
    "config a list": lambda m, t: ({**m, "config": "[]"}, t),
    "step not a number": lambda m, t: ({**m, "step": "abc"}, t),
    "log not a list": lambda m, t: ({**m, "log": "{}"}, t),
    "no config": lambda m, t: ({k: v for k, v in m.items() if k != "config"}, t),
    "generator tensor of another shape": lambda m, t: (m, {**t, "generator.stem.conv.weight": torch.zeros(1)}),
    "NaN generator weights": lambda m, t: (m, {k: v * float("nan") if k.startswith("generator.") else v
                                              for k, v in t.items()}),
    "optimiser state of another shape (crashed in the next step)":
        lambda m, t: (m, {k: torch.zeros(1) if k == "opt_d.0.exp_avg" else v for k, v in t.items()}),
    "optimiser state for no parameter": lambda m, t: (m, {**t, "opt_g.999.exp_avg": torch.zeros(1)}),
    "tensor named by no part": lambda m, t: (m, {**t, "opt_g": torch.zeros(1)}),
}


@pytest.mark.parametrize("case", list(RESUME), ids=list(RESUME))
def test_resume_from_a_corrupt_checkpoint(tiny_run, tmp_path, capsys, case):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    checkpoint = run / "checkpoint.safetensors"
    meta, tensors = RESUME[case](*_read(checkpoint))
    checkpoint.write_bytes(save(tensors, metadata=meta))
    listing = sorted(p.name for p in run.rglob("*"))
    _expect_refused(["train", "--out", run, "--resume", "--steps", 2], capsys, checkpoint)
    assert sorted(p.name for p in run.rglob("*")) == listing


def test_resume_from_half_a_checkpoint(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    checkpoint = run / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:checkpoint.stat().st_size // 2])
    _expect_refused(["train", "--out", run, "--resume"], capsys, checkpoint)


# --- data sets: train --data DIR -------------------------------------------------------------------
def _edit_row(text: str, column: int, value: str, row: int = 1) -> str:
    lines = text.splitlines()
    cells = lines[row].split(",")
    cells[column] = value
    lines[row] = ",".join(cells)
    return "\n".join(lines) + "\n"


AUS_CSV = {
    "a 200,000-character field (was csv.Error)": lambda t: _edit_row(t, 2, "1" * 200_000).encode(),
    "non-UTF-8 bytes (was UnicodeDecodeError)": lambda t: t.replace("000000,", "00\udcff0,", 1).encode(
        "utf-8", "surrogateescape"),
    "a negative AU (trained)": lambda t: _edit_row(t, 2, "-2").encode(),
    "an AU of 70 (trained)": lambda t: _edit_row(t, 2, "70").encode(),
    "a 400-digit AU": lambda t: _edit_row(t, 2, "9" * 400).encode(),
    "NaN": lambda t: _edit_row(t, 2, "nan").encode(),
    "a 5000-digit identity (was ValueError)": lambda t: _edit_row(t, 1, "9" * 5000).encode(),
    "an id with ../": lambda t: _edit_row(t, 0, "../../elsewhere").encode(),
    "an id twice (trained)": lambda t: (t + t.splitlines()[1] + "\n").encode(),
    "a column twice (trained)": lambda t: "\n".join(line + ("," + line.split(",")[2] if i else ",AU01_r")
                                                   for i, line in enumerate(t.splitlines())).encode() + b"\n",
    "a short row": lambda t: _edit_row(t, 0, "000000", 1).split("\n", 2)[0].encode() + b"\n000000,0,1\n",
    "empty": lambda t: b"",
}


@pytest.mark.parametrize("case", list(AUS_CSV), ids=list(AUS_CSV))
def test_train_on_a_bad_aus_csv(tiny_run, tmp_path, capsys, case):
    data = tmp_path / "ds"
    shutil.copytree(tiny_run / "ds", data)
    table = data / "aus.csv"
    table.write_bytes(AUS_CSV[case](table.read_text()))
    err = _expect_refused(["train", *TINY, "--data", data, "--out", tmp_path / "run"], capsys, table,
                          tmp_path / "run")
    assert len(err) < 400


def test_train_on_an_image_that_is_not_one_leaves_no_run(tiny_run, tmp_path, capsys):
    data = tmp_path / "ds"
    shutil.copytree(tiny_run / "ds", data)
    for name in (data / "train_ids.csv").read_text().split():
        (data / "imgs" / f"{name}.png").write_bytes(b"not an image")
    _expect_refused(["train", *TINY, "--data", data, "--out", tmp_path / "run"], capsys,
                    data / "aus.csv", tmp_path / "run")


def test_train_on_fewer_images_than_the_sample_grid(tiny_run, tmp_path, capsys):
    """One training image: the sample grid's 4 rows were an IndexError after the checkpoint."""
    data = tmp_path / "ds"
    shutil.copytree(tiny_run / "ds", data)
    (data / "train_ids.csv").write_text("000000\n")
    code, _, err = run_cli(["train", *TINY, "--data", data, "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "samples" / "step_0000001.png").is_file()


# --- eval --real: Inception weights and the test split -----------------------------------------------
@pytest.mark.parametrize("obj", [{"a": "b"}, {1: torch.zeros(1)}, [1]], ids=["string value", "int key", "list"])
def test_inception_weights_that_are_not_a_state_dict(tmp_path, obj):
    from exprengine.evaluation.inception import load_fid_inception
    path = tmp_path / "inception.pth"
    torch.save(obj, path)
    with pytest.raises(UserError, match="does not hold a state dict"):
        load_fid_inception(path)


def test_inception_weights_with_nan(tmp_path):
    from exprengine.evaluation.inception import FIDInception, load_fid_inception
    path = tmp_path / "inception.pth"
    torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in FIDInception().state_dict().items()},
               path)
    with pytest.raises(UserError, match="not a finite floating-point tensor"):
        load_fid_inception(path)


def test_real_eval_on_a_one_image_test_split(tiny_run, tmp_path):
    from exprengine.evaluation.real_eval import evaluate_real
    data = tmp_path / "ds"
    shutil.copytree(tiny_run / "ds", data)
    (data / "test_ids.csv").write_text("000000\n")

    class Engine:
        image_size = 128
    with pytest.raises(UserError, match="at least 2 test images"):
        evaluate_real(Engine(), data, str(tmp_path / "unused.pth"))
