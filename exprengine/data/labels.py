"""AU labels from the tools and layouts real data comes with (SPEC section 4).

- OpenFace CSV output, all three kinds: FaceLandmarkImg (`-aus`, one `<image stem>.csv` per
  image, one row per face, columns `face, confidence`, no success flag), FeatureExtraction on a
  video (one row per frame: `frame, face_id, timestamp, confidence, success`) and
  FeatureExtraction on a folder of images (`-fdir imgs` writes ONE `imgs.csv`, one row per
  image: OpenFace sorts the folder's file names and numbers the images it reads `frame`
  1, 2, ... in that order; `timestamp` is 0 for image folders, seconds for videos).
  The 17 `AUxx_r` intensity columns are picked by header name (OpenFace 2.0 pads its headers
  with a space, 2.2 does not), never by position; `AUxx_c` and non-AU columns are ignored.
- A fitted face becomes a label only if OpenFace trusted the fit: rows with `success` 0 are
  dropped, and so are rows whose `confidence` is below OPENFACE_MIN_CONFIDENCE, which is
  OpenFace's own success rule (needed for FaceLandmarkImg output, which has no success flag).
  Both counts are kept on the table (`failed`, `low_confidence`) so callers can report them.
- The GANimation layout: `aus_openface.pkl`, a dict of id -> 17 intensities, written by
  Python 2 (pickle protocol 2; its byte strings, including NumPy's array data, are read as
  latin-1, as NumPy's own loader does). It is a pickle, so it is read with an unpickler that
  can build only dicts, lists, tuples, strings, numbers and NumPy arrays; anything else (a
  class, a function, `os.system`) is refused before it is constructed.

Every bad input is one `UserError` sentence: missing columns (named), NaN or infinite
values (row named), vectors of the wrong length, ids without labels, undecodable text, CSV
fields over the csv module's size limit, numbers too large for a float.
"""
from __future__ import annotations

import _compat_pickle
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exprengine.aus import AU_NAMES, AU_SCALE, NUM_AUS
from exprengine.errors import UserError
from exprengine.textfiles import read_csv, read_text

OPENFACE_COLUMNS = tuple(f"{name}_r" for name in AU_NAMES)
# OpenFace 2.x marks a landmark fit successful when the validator's certainty, written as the
# CSV's `confidence`, exceeds `validation_boundary` = 0.725 (FaceModelParameters::init in
# lib/local/LandmarkDetector/src/LandmarkDetectorParameters.cpp, used by CLNF::DetectLandmarks:
# `detection_success = detection_certainty > params.validation_boundary`). The CSV rounds the
# confidence to 2 (video) or 3 (image) decimals, so a row is kept when confidence >= 0.725.
OPENFACE_MIN_CONFIDENCE = 0.725


@dataclass
class OpenFaceTable:
    """One OpenFace CSV, read (`read_openface_csv`): the kept rows' AU intensities (float32 [rows,17],
    AU_NAMES order, clipped to 0..5) and per row its non-AU columns as text; `kind` is
    "FeatureExtraction" (the header has `frame`) or "FaceLandmarkImg"; `failed` and
    `low_confidence` count the rows dropped for `success` 0 and for confidence below
    OPENFACE_MIN_CONFIDENCE, and `dropped` lists each (non-AU columns, reason); `header` is the
    file's stripped header.
    """

    aus: np.ndarray                 # float32 [rows, 17], OpenFace intensities 0..5
    meta: list[dict[str, str]]      # per row: the non-AU columns (frame, face, confidence, success, ...)
    kind: str                       # "FeatureExtraction" (has frame) or "FaceLandmarkImg"
    failed: int = 0                 # rows dropped because OpenFace marked them success 0
    low_confidence: int = 0         # rows dropped because confidence < OPENFACE_MIN_CONFIDENCE
    header: list[str] = field(default_factory=list)
    dropped: list[tuple[dict[str, str], str]] = field(default_factory=list)   # (non-AU columns, "failed" | "low_confidence")


def _number(text: str, what: str) -> float:
    """float(text) for a CSV cell; a UserError naming `what` if it is not a finite number."""
    try:
        x = float(text)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{what} is not a number ({str(text)[:40]!r})") from None
    if not np.isfinite(x):
        raise UserError(f"{what} is NaN, infinite or too large ({str(text)[:40]!r})")
    return x


def _read_openface(p: Path) -> OpenFaceTable:
    rows = read_csv(p, "OpenFace file")
    if not rows:
        raise UserError(f"OpenFace file {p} is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in OPENFACE_COLUMNS if c not in header]
    if missing:
        raise UserError(f"OpenFace file {p} lacks the AU intensity columns {', '.join(missing)} "
                        "(run OpenFace with -aus)")
    columns = [header.index(c) for c in OPENFACE_COLUMNS]
    other = [i for i, h in enumerate(header) if not (h.startswith("AU") and (h.endswith("_r") or h.endswith("_c")))]
    aus, meta, dropped = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UserError(f"OpenFace file {p} line {line} has {len(row)} fields, the header has {len(header)}")
        info = {header[i]: row[i].strip() for i in other}
        if "success" in info and _number(info["success"], f"OpenFace file {p} line {line}: success") == 0:
            dropped.append((info, "failed"))
            continue
        if info.get("confidence", "") != "" and \
                _number(info["confidence"], f"OpenFace file {p} line {line}: confidence") < OPENFACE_MIN_CONFIDENCE:
            dropped.append((info, "low_confidence"))
            continue
        try:
            values = [float(row[i]) for i in columns]
        except ValueError:
            raise UserError(f"OpenFace file {p} line {line} has a non-numeric AU intensity") from None
        if not np.isfinite(values).all():
            raise UserError(f"OpenFace file {p} line {line} has NaN or infinite AU intensities")
        aus.append(values)
        meta.append(info)
    kind = "FeatureExtraction" if "frame" in header else "FaceLandmarkImg"
    table = np.clip(np.array(aus, np.float32).reshape(-1, NUM_AUS), 0, AU_SCALE)
    failed = sum(reason == "failed" for _, reason in dropped)
    return OpenFaceTable(table, meta, kind, failed, len(dropped) - failed, header, dropped)


def read_openface_csv(path: str | os.PathLike) -> OpenFaceTable:
    """Read an OpenFace CSV (any of the three kinds above). Rows OpenFace marks as failed
    (`success` 0) or fitted with confidence below OPENFACE_MIN_CONFIDENCE are dropped and
    counted; a file with no row left is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"OpenFace file {p} does not exist")
    table = _read_openface(p)
    if not len(table.aus):
        raise UserError(f"OpenFace file {p} has no successfully tracked faces ({table.failed} rows marked "
                        f"failed, {table.low_confidence} with confidence below {OPENFACE_MIN_CONFIDENCE})")
    return table


def _frame_number(info: dict[str, str], where: str) -> int:
    frame = _number(info.get("frame", ""), f"{where}: frame")
    if frame != int(frame) or frame < 1:
        raise UserError(f"{where}: frame {info['frame']!r} is not a frame number (OpenFace counts from 1)")
    return int(frame)


@dataclass
class ImageLabels:
    """AU labels for images, from OpenFace output, with what was dropped and why."""

    labels: dict[str, np.ndarray]   # image stem -> float32 [17] intensities 0..5
    layout: str                     # "FaceLandmarkImg per-image CSVs" or "FeatureExtraction -fdir CSV <name>"
    dropped: dict[str, str] = field(default_factory=dict)   # image stem -> "failed" | "low_confidence"
    note: str = ""                  # a sentence when rows could not be matched to images (else "")

    @property
    def failed(self) -> int:
        """Images whose rows OpenFace all marked success 0."""
        return sum(r == "failed" for r in self.dropped.values())

    @property
    def low_confidence(self) -> int:
        """Images whose faces were all fitted with confidence below OPENFACE_MIN_CONFIDENCE."""
        return sum(r == "low_confidence" for r in self.dropped.values())


def _csv_has_frame_column(p: Path) -> bool:
    try:
        with open(p, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline(1 << 20)
    except OSError:
        return False
    return "frame" in [h.strip() for h in first.split(",")]


def _details_input(csv_path: Path) -> Path | None:
    """The input folder OpenFace recorded in `<name>_of_details.txt` beside its CSV, if any."""
    details = csv_path.with_name(f"{csv_path.stem}_of_details.txt")
    try:
        lines = details.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for key in ("Input full path:", "Input:"):
        for line in lines:
            if line.startswith(key) and line[len(key):].strip():
                return Path(line[len(key):].strip())
    return None


def read_image_labels(source: str | os.PathLike, image_folders: dict[Path, list[str]]) -> ImageLabels:
    """AU labels for images from OpenFace output `source`, in either layout:

    - a folder of FaceLandmarkImg CSVs, `<image stem>.csv` each (an image with several faces
      takes the most confident one that passes OPENFACE_MIN_CONFIDENCE);
    - one FeatureExtraction `-fdir FOLDER` CSV (the file, or a folder holding it): row `frame`
      n (1-based) is the n-th image of FOLDER in sorted file-name order, as OpenFace read it.
      `image_folders` maps each candidate FOLDER to its image file names; the CSV's folder is
      the one OpenFace recorded in `<name>_of_details.txt`, else the one the CSV is named
      after (OpenFace names it after the folder), else the one with as many images as frames.
      When the frames cannot be matched (no such folder, or a different image count), no
      labels are returned and `note` says why.

    Raises UserError for a missing source or a malformed CSV."""
    src = Path(source)
    stems = {Path(name).stem for names in image_folders.values() for name in names}
    if src.is_file():
        sequence = src
    elif src.is_dir():
        csvs = sorted(p for p in src.glob("*.csv") if p.is_file())
        if not csvs:
            raise UserError(f"{src} holds no OpenFace CSV files")
        sequence = csvs[0] if len(csvs) == 1 and csvs[0].stem not in stems and _csv_has_frame_column(csvs[0]) \
            else None
    else:
        raise UserError(f"OpenFace output {src} does not exist")
    if sequence is None:
        return _per_image_labels(src, csvs, stems)
    return _sequence_labels(sequence, image_folders)


def _per_image_labels(src: Path, csvs: list[Path], stems: set[str]) -> ImageLabels:
    out = ImageLabels({}, "FaceLandmarkImg per-image CSVs")
    for path in csvs:
        table = _read_openface(path)
        if not len(table.aus):                              # no face OpenFace trusted: not a label
            if table.dropped:
                out.dropped[path.stem] = "low_confidence" if table.low_confidence else "failed"
            continue
        confidence = [float(m["confidence"]) if m.get("confidence") else 1.0 for m in table.meta]
        out.labels[path.stem] = table.aus[int(np.argmax(confidence))]
    if stems and not set(out.labels) & stems and out.labels:
        example = sorted(out.labels)[0]
        out.note = (f"none of the {len(csvs)} OpenFace CSVs in {src} is named after an image (e.g. {example}.csv; "
                    f"expected <image stem>.csv such as {sorted(stems)[0]}.csv)")
    return out


def _sequence_labels(p: Path, image_folders: dict[Path, list[str]]) -> ImageLabels:
    table = _read_openface(p)
    out = ImageLabels({}, f"FeatureExtraction -fdir CSV {p.name}")
    if table.kind != "FeatureExtraction":
        raise UserError(f"{p} is FaceLandmarkImg output for one image (no frame column); pass the folder of "
                        "per-image CSVs, or FeatureExtraction -fdir output")
    frames = _frame_count(p)
    recorded = _details_input(p)
    folder = None
    if recorded is not None:
        folder = next((f for f in image_folders if _same_folder(f, recorded)), None)
        if folder is None:
            out.note = (f"{p.name} was made from {recorded} ({p.stem}_of_details.txt), which is not "
                        f"{' or '.join(str(f) for f in image_folders)}; run FeatureExtraction -fdir on the crops")
            return out
    folder = folder or next((f for f in image_folders if f.name == p.stem), None) \
        or next((f for f, names in image_folders.items() if len(names) == frames), None)
    if folder is None:
        counts = ", ".join(f"{f} holds {len(n)}" for f, n in image_folders.items())
        out.note = (f"{p.name} has {frames} frames and no folder matches it ({counts} images); "
                    "OpenFace numbers the images of -fdir FOLDER in sorted order, so run it on the crops folder")
        return out
    names = sorted(image_folders[folder])                  # as OpenFace sorts the folder (byte order)
    if len(names) != frames:
        out.note = (f"{p.name} has {frames} frames but {folder} now holds {len(names)} images, so its rows "
                    f"(numbered in sorted file-name order) cannot be matched; rerun FeatureExtraction -fdir {folder}")
        return out
    best: dict[int, float] = {}
    for aus, info in zip(table.aus, table.meta):
        frame = _frame_number(info, f"OpenFace file {p}")
        confidence = float(info["confidence"]) if info.get("confidence") else 1.0
        if confidence > best.get(frame, -1.0):             # several faces (FaceLandmarkVidMulti): most confident
            best[frame] = confidence
            out.labels[Path(names[frame - 1]).stem] = aus
    for info, reason in table.dropped:
        frame = _frame_number(info, f"OpenFace file {p}")
        stem = Path(names[frame - 1]).stem
        if frame not in best and out.dropped.get(stem) != "low_confidence":
            out.dropped[stem] = reason                      # a frame with no trusted face: not a label
    return out


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() if b.is_absolute() else a.resolve().parts[-len(b.parts):] == b.parts
    except (OSError, ValueError):
        return False


def _frame_count(p: Path) -> int:
    """The highest `frame` in a FeatureExtraction CSV, counting failed rows (OpenFace writes one
    row per frame it read, tracked or not)."""
    rows = read_csv(p, "OpenFace file")
    header = [h.strip() for h in rows[0]]
    column = header.index("frame")
    last = 0
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > column and row[column].strip():
            last = max(last, _frame_number({"frame": row[column].strip()}, f"OpenFace file {p} line {line}"))
    return last


def image_labels_from_openface(csv_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """FaceLandmarkImg output for a folder of images (`<image stem>.csv` each) -> {stem: AUs}.

    An image with several faces takes the most confident one; faces below
    OPENFACE_MIN_CONFIDENCE and failed rows are not labels."""
    d = Path(csv_dir)
    if not d.is_dir():
        raise UserError(f"{d} is not a directory of OpenFace CSV files")
    csvs = sorted(p for p in d.glob("*.csv") if p.is_file())
    if not csvs:
        raise UserError(f"{d} holds no OpenFace CSV files")
    return _per_image_labels(d, csvs, set()).labels


# --- GANimation's aus_openface.pkl -----------------------------------------------------------------
_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "float"), ("builtins", "int"),
    ("builtins", "str"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),                        # how protocol 2 stores the bytes of an array
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _Refused(pickle.UnpicklingError):
    """A global outside _ALLOWED: the pickle would build or run something that is not data."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Python 2 names (__builtin__.list, ...) as Python 3 reads them; no Python 3 pickle uses these
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name} is not plain data")


def read_ganimation_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """GANimation's `aus_openface.pkl`: {id: 17 OpenFace intensities} -> {str id: float32 [17]}
    clipped to 0..5, read without running code. Python 3 pickles and Python 2 ones (protocol 2,
    whose str payloads, NumPy array data included, are decoded as latin-1 like `np.load` does)
    both load; a pickle referring to anything but plain data is refused. Raises UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"AU label file {p} does not exist")
    try:
        with open(p, "rb") as f:
            data = _DataOnlyUnpickler(f, encoding="latin1").load()
    except _Refused as e:
        raise UserError(f"{p} is not a plain dict of AU vectors; refusing it ({e})") from None
    except RecursionError:
        raise UserError(f"{p} is not a readable AU label pickle (nested too deeply)") from None
    except MemoryError:
        raise UserError(f"{p} is not a readable AU label pickle (it asks for more memory than there is)") from None
    except Exception as e:      # a damaged pickle raises almost anything (EOFError, KeyError, struct.error, ...)
        raise UserError(f"{p} is not a readable AU label pickle ({type(e).__name__})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{p} must hold a non-empty dict of id -> 17 AU intensities, not {type(data).__name__}")
    labels = {}
    for key, value in data.items():
        name = _label_id(key, p)
        try:
            v = np.asarray(value, dtype=np.float64).reshape(-1) if not isinstance(value, (dict, str, bytes)) else None
        except (TypeError, ValueError, OverflowError, RecursionError):
            v = None
        if v is None or v.shape != (NUM_AUS,):
            raise UserError(f"{p}: the labels of {name!r} are not a vector of {NUM_AUS} intensities")
        if not np.isfinite(v).all():
            raise UserError(f"{p}: the labels of {name!r} contain NaN or infinite values")
        labels[name] = np.clip(v, 0, AU_SCALE).astype(np.float32)
    return labels


def _label_id(key: object, p: Path) -> str:
    """A pickle's dict key as an image id (str; Python 2 byte strings decoded as latin-1)."""
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise UserError(f"{p}: an id is a {type(key).__name__}, not a name or number")
    if isinstance(key, int) and key.bit_length() > 200:
        raise UserError(f"{p}: an id is a number of more than 60 digits")
    return str(key)


def read_id_list(path: str | os.PathLike) -> list[str]:
    """A GANimation id list (`train_ids.csv`): one id per line, file suffixes dropped.
    Raises UserError if the file is missing or not UTF-8 text."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"id list {p} does not exist")
    text = read_text(p, "id list")
    ids = []
    for line in text.splitlines():
        token = line.split(",")[0].strip()
        if token:
            ids.append(Path(token).stem if Path(token).suffix.lower() in (".jpg", ".jpeg", ".png") else token)
    return ids
