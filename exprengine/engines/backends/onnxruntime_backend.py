"""`onnxruntime`: the ONNX graph (blend included) run by ONNX Runtime.

CPU everywhere; the CUDA execution provider is used when onnxruntime-gpu provides it and
the engine is loaded with device "cuda" or "auto". Builds the rig too (its graph's third
input, `landmarks`; GridSample), on the CPU in FP32. Builds LATS age engines too: two ONNX
graphs (`encoder.onnx`, `decoder.onnx`, `export.onnx_graph.export_lats_onnx`) and the class
styles, FP32, on the CPU or through the CUDA provider like the others (`OnnxRuntimeLATS`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exprengine.engines.backends.base import (CLASS_STYLES, LATS_METADATA_KEYS, Backend, LATSRunner, compare_metadata,
                                              lats_expected_metadata, metadata_keys, write_class_styles)
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError

MODEL = "model.onnx"
LATS_MODELS = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
ONNX_METADATA_KEYS = ("exprengine.model", "exprengine.weights_sha256", "exprengine.config",
                      "exprengine.image_size", "exprengine.outputs", "exprengine.precision",
                      "exprengine.au_order")


def onnx_metadata(data: bytes, label: str) -> dict[str, str]:
    """The `metadata_props` of an ONNX model given as bytes; EngineError if it is not ONNX."""
    import onnx
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise EngineError(f"engine artifact {label} is not a readable ONNX model ({type(e).__name__})") from None
    return {p.key: p.value for p in model.metadata_props}


def check_onnx_metadata(manifest: Manifest, directory: Path, name: str, data: bytes) -> None:
    """Refuse an ONNX artifact whose metadata (written by `export_onnx`) contradicts the manifest."""
    compare_metadata(manifest, directory, name, onnx_metadata(data, str(Path(directory) / name)),
                     metadata_keys(manifest, ONNX_METADATA_KEYS))


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime `session` of the blended graph (the rig's too): the portable path, on the
    CPU or through onnxruntime's CUDA provider (never the CUDA pipeline)."""
    name = "onnxruntime"
    description = "ONNX Runtime (CPU; CUDA provider when installed)"
    builds_rig = True
    artifacts = {"onnx-model": MODEL}
    builds_lats = True
    lats_devices = ("cpu",)
    lats_artifacts = {"encoder-onnx": LATS_MODELS["encoder"], "decoder-onnx": LATS_MODELS["decoder"],
                      "class-styles": CLASS_STYLES}

    def __init__(self, session):
        self.session = session
        self.providers = session.get_providers()
        self.inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        import onnx
        import onnxruntime
        return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.export.onnx_graph import export_onnx
        export_onnx(generator, directory / MODEL, outputs="blended", max_batch=manifest.max_batch)
        return [MODEL]

    @classmethod
    def check_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        check_onnx_metadata(manifest, directory, name, data)

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "OnnxRuntimeBackend":
        name, data = cls.artifact(directory, manifest, "onnx-model")
        cls.check_metadata(manifest, directory, "onnx-model", name, data)
        backend = cls(session_of(data, device, directory / name))
        if backend.inputs != list(manifest.inputs):
            raise EngineError(f"engine artifact {directory / name} takes {', '.join(backend.inputs)}, but its "
                              f"manifest says {', '.join(manifest.inputs)}; refusing the engine")
        return backend

    # --- LATS ---------------------------------------------------------------------------------
    @classmethod
    def build_lats(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.export.onnx_graph import export_lats_onnx
        for graph, file in LATS_MODELS.items():
            export_lats_onnx(generator, directory / file, graph, max_batch=manifest.max_batch)
        return [*LATS_MODELS.values(), write_class_styles(generator, directory)]

    @classmethod
    def check_lats_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        graph = role.split("-")[0]
        compare_metadata(manifest, directory, name, onnx_metadata(data, str(Path(directory) / name)),
                         LATS_METADATA_KEYS, lats_expected_metadata(manifest, graph))

    @classmethod
    def load_lats(cls, directory: Path, manifest: Manifest, device: str) -> "OnnxRuntimeLATS":
        sessions = {}
        for graph in LATS_MODELS:
            role = f"{graph}-onnx"
            name, data = cls.artifact(directory, manifest, role)
            cls.check_lats_metadata(manifest, directory, role, name, data)
            session = session_of(data, device, directory / name)
            inputs = [i.name for i in session.get_inputs()]
            if inputs != manifest.graphs[graph]["inputs"]:
                raise EngineError(f"engine artifact {directory / name} takes {', '.join(inputs)}, but its "
                                  f"manifest says {', '.join(manifest.graphs[graph]['inputs'])}; refusing the engine")
            sessions[graph] = session
        return OnnxRuntimeLATS(sessions["encoder"], sessions["decoder"], cls.lats_class_styles(directory, manifest))

    def _run_network(self, image: np.ndarray, aus: np.ndarray, landmarks: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """One session call (`Backend.run_network`'s shapes; landmarks feed the rig's third input)."""
        feed = {"image": image, "aus": aus}
        if landmarks is not None:
            feed["landmarks"] = landmarks
        output, attention = self.session.run(None, feed)
        return output, attention


class OnnxRuntimeLATS(LATSRunner):
    """A LATS engine in ONNX Runtime: the `encoder` and `decoder` sessions (the decoder's features
    are repeated for a traversal: the graph's two inputs share one batch axis) and the class styles."""

    def __init__(self, encoder, decoder, class_styles: np.ndarray):
        super().__init__(class_styles)
        self.encoder, self.decoder = encoder, decoder
        self.providers = decoder.get_providers()

    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        """One encoder session call (`LATSRunner.run_encoder`)."""
        return self.encoder.run(None, {"image": image})[0]

    def _run_decoder(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """One decoder session call (`LATSRunner._run_decoder`)."""
        return self.decoder.run(None, {"features": features, "style": style})[0]


def session_of(data: bytes, device: str, label: Path):
    """An ONNX Runtime session of the verified ONNX bytes `data` on `device` ("cpu", "cuda" or
    "auto": the CUDA provider when installed), fully optimised, without a spinning thread pool;
    EngineError when "cuda" is asked for without the CUDA provider or onnxruntime cannot load it."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        raise EngineError("device cuda asked for, but this onnxruntime has no CUDA provider "
                          "(install onnxruntime-gpu)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # no spinning pool: between calls it would take the cores from the faces pipeline's own
    # stages (MediaPipe, paste), 6.0 -> 14.8 frames/s on a 640x480 clip with both fixes in
    # bench/results/rig-video-cpu.md
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(data, options, providers=providers)     # the verified bytes
    except Exception as e:  # onnxruntime raises its own exception types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EngineError(f"onnxruntime cannot load {label}: {first}") from None
    return session
