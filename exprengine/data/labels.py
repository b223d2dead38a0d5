"""AU labels from the tools and layouts real data comes with (SPEC section 4).

- OpenFace CSV output, both kinds: FaceLandmarkImg (`-aus`, one row per face of an image)
  and FeatureExtraction (one row per frame, with `frame`, `timestamp`, `confidence`,
  `success`). The 17 `AUxx_r` intensity columns are picked by header name (OpenFace pads
  its headers with spaces), never by position.
- The GANimation layout: `aus_openface.pkl`, a dict of id -> 17 intensities. It is a
  pickle, so it is read with an unpickler that can build only dicts, lists, tuples, strings,
  numbers and NumPy arrays; anything else (a class, a function, `os.system`) is refused
  before it is constructed.

Every bad input is one `UserError` sentence: missing columns (named), NaN or infinite
values (row named), vectors of the wrong length, ids without labels.
"""
from __future__ import annotations

import csv
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exprengine.aus import AU_NAMES, AU_SCALE, NUM_AUS
from exprengine.errors import UserError

OPENFACE_COLUMNS = tuple(f"{name}_r" for name in AU_NAMES)


@dataclass
class OpenFaceTable:
    aus: np.ndarray                 # float32 [rows, 17], OpenFace intensities 0..5
    meta: list[dict[str, str]]      # per row: the non-AU columns (frame, face, confidence, success, ...)
    kind: str                       # "FeatureExtraction" (has frame) or "FaceLandmarkImg"


def read_openface_csv(path: str | os.PathLike) -> OpenFaceTable:
    """Read an OpenFace CSV; rows OpenFace marks as failed (`success` 0) are dropped."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"OpenFace file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read OpenFace file {p} ({type(e).__name__})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"OpenFace file {p} is empty") from None
    missing = [c for c in OPENFACE_COLUMNS if c not in header]
    if missing:
        raise UserError(f"OpenFace file {p} lacks the AU intensity columns {', '.join(missing)} "
                        "(run OpenFace with -aus)")
    columns = [header.index(c) for c in OPENFACE_COLUMNS]
    other = [i for i, h in enumerate(header) if not (h.startswith("AU") and (h.endswith("_r") or h.endswith("_c")))]
    aus, meta = [], []
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UserError(f"OpenFace file {p} line {line} has {len(row)} fields, the header has {len(header)}")
        info = {header[i]: row[i].strip() for i in other}
        if info.get("success", "1") in ("0", "0.0"):
            continue
        try:
            values = [float(row[i]) for i in columns]
        except ValueError:
            raise UserError(f"OpenFace file {p} line {line} has a non-numeric AU intensity") from None
        if not np.isfinite(values).all():
            raise UserError(f"OpenFace file {p} line {line} has NaN or infinite AU intensities")
        aus.append(values)
        meta.append(info)
    if not aus:
        raise UserError(f"OpenFace file {p} has no successfully tracked faces")
    kind = "FeatureExtraction" if "frame" in header else "FaceLandmarkImg"
    return OpenFaceTable(np.clip(np.array(aus, np.float32), 0, AU_SCALE), meta, kind)


def image_labels_from_openface(csv_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """FaceLandmarkImg output for a folder of images (`<image stem>.csv` each) -> {stem: AUs}.

    An image with several faces takes the most confident one."""
    d = Path(csv_dir)
    if not d.is_dir():
        raise UserError(f"{d} is not a directory of OpenFace CSV files")
    labels = {}
    for path in sorted(d.glob("*.csv")):
        table = read_openface_csv(path)
        best = int(np.argmax([float(m.get("confidence", 1) or 1) for m in table.meta]))
        labels[path.stem] = table.aus[best]
    if not labels:
        raise UserError(f"{d} holds no OpenFace CSV files")
    return labels


# --- GANimation's aus_openface.pkl -----------------------------------------------------------------
_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "float"), ("builtins", "int"),
    ("builtins", "str"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),                        # how protocol 2 stores the bytes of an array
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def read_ganimation_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """GANimation's `aus_openface.pkl`: {id: 17 OpenFace intensities}, read without running code."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"AU label file {p} does not exist")
    try:
        with open(p, "rb") as f:
            data = _DataOnlyUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{p} is not a plain dict of AU vectors; refusing it ({e})") from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, OSError) as e:
        raise UserError(f"{p} is not a readable AU label pickle ({type(e).__name__})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{p} must hold a non-empty dict of id -> 17 AU intensities, not {type(data).__name__}")
    labels = {}
    for key, value in data.items():
        v = np.asarray(value, dtype=np.float64).reshape(-1) if not isinstance(value, (dict, str)) else None
        if v is None or v.shape != (NUM_AUS,):
            raise UserError(f"{p}: the labels of {key!r} are not a vector of {NUM_AUS} intensities")
        if not np.isfinite(v).all():
            raise UserError(f"{p}: the labels of {key!r} contain NaN or infinite values")
        labels[str(key)] = np.clip(v, 0, AU_SCALE).astype(np.float32)
    return labels


def read_id_list(path: str | os.PathLike) -> list[str]:
    """A GANimation id list (`train_ids.csv`): one id per line, file suffixes dropped."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"id list {p} does not exist")
    ids = []
    for line in p.read_text().splitlines():
        token = line.split(",")[0].strip()
        if token:
            ids.append(Path(token).stem if Path(token).suffix.lower() in (".jpg", ".jpeg", ".png") else token)
    return ids
