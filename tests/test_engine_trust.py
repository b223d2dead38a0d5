"""Engines cannot be tampered with: only listed, verified artifacts load; artifacts whose own
metadata contradicts the manifest, links leading outside the engine, and manifests that do
not fit the schema are refused, each as one line and exit status 2 (`info` and `edit`)."""
from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
from pathlib import Path

import onnx
import pytest
from PIL import Image

from exprengine.cli import main
from exprengine.engine import Engine, inspect_engine
from exprengine.engines.manifest import MANIFEST_NAME, Manifest
from exprengine.errors import EngineError

from helpers import perturbed_generator


# --- helpers ---------------------------------------------------------------------------------
def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, match=None):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("exprengine: error: ") and "internal error" not in err
    if match:
        assert match in lines[0], lines[0]


def manifest_data(engine: Path) -> dict:
    return json.loads((engine / MANIFEST_NAME).read_text())


def write_manifest(engine: Path, data) -> None:
    (engine / MANIFEST_NAME).write_text(json.dumps(data))


def relist(engine: Path, name: str) -> None:
    """Re-hash artifact `name` into the manifest (what a tamperer who edits engine.json does)."""
    data = manifest_data(engine)
    blob = (engine / name).read_bytes()
    entry = data["artifacts"].setdefault(name, {})
    entry.update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    write_manifest(engine, data)


def set_onnx_metadata(path: Path, **changes) -> None:
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"exprengine.{k}": v for k, v in changes.items()})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    path.write_bytes(model.SerializeToString())


def refused_everywhere(engine: Path, face_png: Path, tmp_path: Path, capsys, match=None) -> None:
    """`info` and `edit --crop --engine` both refuse, one line, exit 2, and write nothing."""
    code, out, err = run_cli(["info", engine], capsys)
    assert_one_line_error(code, err, match)
    assert out == ""
    target = tmp_path / "edited.png"
    code, out, err = run_cli(["edit", face_png, "--crop", "--engine", engine, "--preset", "happiness",
                              "--out", target], capsys)
    assert_one_line_error(code, err, match)
    assert not target.exists()


@pytest.fixture
def onnx_engine(engine_factory, tmp_path):
    dst = tmp_path / "engine"
    shutil.copytree(engine_factory("convnext2", "onnxruntime"), dst)
    return dst


@pytest.fixture
def torch_engine(engine_factory, tmp_path):
    dst = tmp_path / "torch-engine"
    shutil.copytree(engine_factory("convnext2", "torch"), dst)
    return dst


@pytest.fixture
def face_png(tmp_path, face):
    p = tmp_path / "face.png"
    Image.fromarray(face).save(p)
    return p


# --- artifacts by role only --------------------------------------------------------------------
def test_built_manifest_lists_each_artifact_with_its_role(onnx_engine, torch_engine, face_png, tmp_path, capsys):
    assert manifest_data(onnx_engine)["artifacts"]["model.onnx"]["role"] == "onnx-model"
    assert manifest_data(torch_engine)["artifacts"]["weights.safetensors"]["role"] == "weights"
    for engine in (onnx_engine, torch_engine):
        code, out, err = run_cli(["info", engine], capsys)
        assert code == 0, err
        assert "convnext2" in out


@pytest.mark.parametrize("decoy_role", [None, "onnx-model"])
def test_replaced_model_with_only_a_hashed_decoy_listed_is_refused(onnx_engine, engine_factory, face_png, tmp_path,
                                                                   capsys, decoy_role):
    # another (valid) model sits at the conventional file name; the manifest lists only a decoy
    shutil.copyfile(engine_factory("convnext2", "onnxruntime", max_batch=8) / "model.onnx",
                    onnx_engine / "model.onnx")
    (onnx_engine / "decoy.bin").write_bytes(b"nothing to see here")
    data = manifest_data(onnx_engine)
    blob = (onnx_engine / "decoy.bin").read_bytes()
    entry = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    if decoy_role:
        entry["role"] = decoy_role
    data["artifacts"] = {"decoy.bin": entry}
    write_manifest(onnx_engine, data)
    Manifest.read(onnx_engine)                         # the manifest itself is consistent
    match = "lists no onnx-model artifact" if decoy_role is None else "not a readable ONNX model"
    refused_everywhere(onnx_engine, face_png, tmp_path, capsys, match)


def test_legacy_manifest_without_roles_still_loads_only_its_listed_file(onnx_engine, face):
    data = manifest_data(onnx_engine)
    for entry in data["artifacts"].values():
        entry.pop("role")
    write_manifest(onnx_engine, data)
    assert Engine.load(onnx_engine, device="cpu").edit(face, "happiness").shape == (1, 128, 128, 3)


def test_unlisted_weights_of_a_torch_engine_are_never_opened(torch_engine, face_png, tmp_path, capsys):
    data = manifest_data(torch_engine)
    (torch_engine / "other.safetensors").write_bytes((torch_engine / "weights.safetensors").read_bytes())
    data["artifacts"] = {"other.safetensors": data["artifacts"]["weights.safetensors"] | {"role": "notes"}}
    write_manifest(torch_engine, data)
    refused_everywhere(torch_engine, face_png, tmp_path, capsys, "lists no weights artifact")


# --- artifact metadata must agree with the manifest ---------------------------------------------
@pytest.mark.parametrize("field,value,words", [
    ("weights_sha256", "0" * 64, "weights sha256"),
    ("model", "ganimation", "model"),
    ("image_size", "256", "image size"),
    ("outputs", "heads", "graph outputs"),
])
def test_onnx_metadata_contradicting_the_manifest_is_refused(onnx_engine, face_png, tmp_path, capsys, field,
                                                             value, words):
    set_onnx_metadata(onnx_engine / "model.onnx", **{field: value})
    relist(onnx_engine, "model.onnx")                  # the hash matches: only the metadata disagrees
    Manifest.read(onnx_engine)
    refused_everywhere(onnx_engine, face_png, tmp_path, capsys, f"says {words} ")
    with pytest.raises(EngineError, match="refusing the engine"):
        Engine.load(onnx_engine, device="cpu")


def test_other_weights_in_a_torch_engine_are_refused(torch_engine, face_png, tmp_path, capsys):
    from exprengine.models.weights import save_weights
    save_weights(perturbed_generator("convnext2", seed=5), torch_engine / "weights.safetensors")
    relist(torch_engine, "weights.safetensors")
    refused_everywhere(torch_engine, face_png, tmp_path, capsys, "weights sha256")


def test_torch_engine_whose_image_size_disagrees_with_its_weights_is_refused(torch_engine, face_png, tmp_path,
                                                                           capsys):
    data = manifest_data(torch_engine)
    data["image_size"] = data["model_config"]["image_size"] = 256    # consistent manifest, other weights
    write_manifest(torch_engine, data)
    refused_everywhere(torch_engine, face_png, tmp_path, capsys, "model config")


# --- links ------------------------------------------------------------------------------------
def test_symlink_leading_outside_the_engine_is_refused_even_with_a_matching_hash(onnx_engine, face_png, tmp_path,
                                                                               capsys):
    outside = tmp_path / "elsewhere.onnx"
    (onnx_engine / "model.onnx").rename(outside)
    (onnx_engine / "model.onnx").symlink_to(outside)
    refused_everywhere(onnx_engine, face_png, tmp_path, capsys, "outside the engine directory")


def test_symlink_within_the_engine_is_followed(onnx_engine, face):
    (onnx_engine / "store").mkdir()
    (onnx_engine / "model.onnx").rename(onnx_engine / "store" / "model.onnx")
    (onnx_engine / "model.onnx").symlink_to(Path("store") / "model.onnx")
    assert Engine.load(onnx_engine, device="cpu").edit(face, "happiness").shape == (1, 128, 128, 3)


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "sub/model.onnx", ".hidden", "a\nb", ""])
def test_artifact_names_must_be_plain_files_inside(onnx_engine, face_png, tmp_path, capsys, name):
    data = manifest_data(onnx_engine)
    data["artifacts"] = {name: data["artifacts"]["model.onnx"]}
    write_manifest(onnx_engine, data)
    refused_everywhere(onnx_engine, face_png, tmp_path, capsys, "outside itself or not a plain file name")


# --- the manifest's schema --------------------------------------------------------------------
def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return change


DELETE = object()
SCHEMA_CASES = {
    "image_size=64": _set("image_size", 64),
    "image_size=0": _set("image_size", 0),
    "image_size=-5": _set("image_size", -5),
    "image_size='128'": _set("image_size", "128"),
    "image_size=100000": _set("image_size", 100000),
    "image_size=100000 both": lambda d: (_set("image_size", 100000)(d), _set("model_config.image_size", 100000)(d)),
    "image_size=130": lambda d: (_set("image_size", 130)(d), _set("model_config.image_size", 130)(d)),
    "image_size=true": _set("image_size", True),
    "image_size=128.0": _set("image_size", 128.0),
    "image_size=400 digits": _set("image_size", int("9" * 400)),
    "image_size missing": _set("image_size", DELETE),
    "artifacts=[]": _set("artifacts", []),
    "artifacts={}": _set("artifacts", {}),
    "artifact entry=[]": lambda d: d["artifacts"].update({"model.onnx": []}),
    "artifact bytes='1'": lambda d: d["artifacts"]["model.onnx"].update(bytes="1"),
    "artifact sha256=null": lambda d: d["artifacts"]["model.onnx"].update(sha256=None),
    "artifact role=7": lambda d: d["artifacts"]["model.onnx"].update(role=7),
    "max_batch='64'": _set("max_batch", "64"),
    "max_batch=0": _set("max_batch", 0),
    "max_batch=10**9": _set("max_batch", 10 ** 9),
    "min_batch=null": _set("min_batch", None),
    "opt_batch=1.5": _set("opt_batch", 1.5),
    "opt>max": _set("opt_batch", 65),
    "model_config=[]": _set("model_config", []),
    "model_config.dims='64'": _set("model_config.dims", "64"),
    "model_config.depth=-1": _set("model_config.depth", -1),
    "model_config.extra": _set("model_config.extra", 1),
    "versions=[]": _set("versions", []),
    "versions value=5": _set("versions.torch", 5),
    "verification='ok'": _set("verification", "ok"),
    "verification error='tiny'": _set("verification.max_rel_error", "tiny"),
    "verification without batch": _set("verification.batch", DELETE),
    "au_order='AU01'": _set("au_order", "AU01"),
    "au_scale='5'": _set("au_scale", "5"),
    "weights_sha256=5": _set("weights_sha256", 5),
    "weights_source=null": _set("weights_source", None),
    "precision=fp8": _set("precision", "fp8"),
    "device=3": _set("device", 3),
    "graph_outputs=[]": _set("graph_outputs", []),
    "model={}": _set("model", {}),
    "backend=7": _set("backend", 7),
    "backend unknown": _set("backend", "tensorflow"),
    "created=5": _set("created", 5),
    "unknown field": _set("surprise", 1),
    "format_version='1'": _set("format_version", "1"),
    "format_version=true": _set("format_version", True),
    "not an object": lambda d: d.clear() or d.update(format="exprengine-engine", format_version=1, x=[]),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_every_malformed_manifest_field_is_one_line_exit_2(onnx_engine, face_png, tmp_path, capsys, case):
    data = manifest_data(onnx_engine)
    SCHEMA_CASES[case](data)
    write_manifest(onnx_engine, data)
    refused_everywhere(onnx_engine, face_png, tmp_path, capsys)


@pytest.mark.parametrize("content", [
    b"[" * 100_000 + b"]" * 100_000,                                    # nested 100,000 deep
    b'{"format": "exprengine-engine", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"format": "exprengine-engine", "pad": "' + b"x" * (2 << 20) + b'"}',   # over 1 MB
    b'{"format": "exprengine-engine", "format_version": ' + b"9" * 5000 + b"}",   # beyond int parsing
    b"\xff\xfe",
])
def test_hostile_manifest_files_are_one_line_exit_2(onnx_engine, face_png, tmp_path, capsys, content):
    (onnx_engine / MANIFEST_NAME).write_bytes(content)
    refused_everywhere(onnx_engine, face_png, tmp_path, capsys)


def test_huge_image_size_is_refused_before_any_allocation(onnx_engine):
    data = manifest_data(onnx_engine)
    data["image_size"] = data["model_config"]["image_size"] = 100000
    write_manifest(onnx_engine, data)
    tracemalloc.start()
    try:
        with pytest.raises(EngineError, match="image_size"):
            Engine.load(onnx_engine, device="cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_inspect_engine_reports_a_sound_engine(onnx_engine):
    m = inspect_engine(onnx_engine)
    assert m.model == "convnext2" and m.image_size == 128


def test_artifact_swapped_after_the_manifest_was_read_is_not_deserialised(onnx_engine):
    from exprengine.engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    manifest = Manifest.read(onnx_engine)               # verified here ...
    path = onnx_engine / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01                         # ... then changed in place, same size
    path.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="corrupted"):
        OnnxRuntimeBackend.load(onnx_engine, manifest, "cpu")   # the bytes loaded are the bytes hashed


def test_aoti_package_is_loaded_only_when_listed_and_its_compiled_metadata_agrees(engine_factory, tmp_path, face):
    engine = tmp_path / "aoti"
    shutil.copytree(engine_factory("convnext2", "aoti"), engine)
    from exprengine.engines.backends.aoti_backend import package_metadata
    found = package_metadata((engine / "model.pt2").read_bytes(), "model.pt2")
    original = manifest_data(engine)
    assert found["exprengine.weights_sha256"] == original["weights_sha256"]
    assert found["exprengine.model"] == "convnext2" and found["exprengine.image_size"] == "128"

    write_manifest(engine, {**original, "weights_sha256": "f" * 64})          # the manifest claims other weights
    with pytest.raises(EngineError, match="says weights sha256"):
        Engine.load(engine, device="cpu")
    with pytest.raises(EngineError, match="says weights sha256"):
        inspect_engine(engine)

    (engine / "notes.txt").write_text("decoy")                              # native code that is not listed
    blob = (engine / "notes.txt").read_bytes()
    write_manifest(engine, {**original, "artifacts": {"notes.txt": {
        "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(), "role": "readme"}}})
    with pytest.raises(EngineError, match="lists no aoti-package artifact"):
        Engine.load(engine, device="cpu")

    write_manifest(engine, original)
    assert Engine.load(engine, device="cpu").edit(face, "happiness").shape == (1, 128, 128, 3)


def test_aoti_package_without_compiled_metadata_loads_only_from_a_manifest_of_that_time(engine_factory, tmp_path):
    import io
    import zipfile
    from exprengine.engines.backends.aoti_backend import AOTInductorBackend
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:          # what packages built before the metadata held
        z.writestr("model/data/aotinductor/model/x.wrapper_metadata.json", json.dumps({"AOTI_DEVICE_KEY": "cpu"}))
    manifest = Manifest.read(engine_factory("convnext2", "onnxruntime"))
    legacy = Manifest(**{**manifest.__dict__, "backend": "aoti",
                         "artifacts": {"model.pt2": {"bytes": 1, "sha256": "0" * 64}}})
    AOTInductorBackend.check_metadata(legacy, tmp_path, "aoti-package", "model.pt2", buffer.getvalue())
    current = Manifest(**{**legacy.__dict__, "artifacts": {"model.pt2": {"bytes": 1, "sha256": "0" * 64,
                                                                          "role": "aoti-package"}}})
    with pytest.raises(EngineError, match="carries no model"):
        AOTInductorBackend.check_metadata(current, tmp_path, "aoti-package", "model.pt2", buffer.getvalue())
    with pytest.raises(EngineError, match="not a readable AOTInductor package"):
        AOTInductorBackend.check_metadata(current, tmp_path, "aoti-package", "model.pt2", b"not a zip")
