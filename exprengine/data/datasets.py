"""Data set layouts on disk.

Synthetic (`exprengine synth`), written atomically:

    DIR/imgs/000000.png ...        128x128 RGB faces
    DIR/aus.csv                    id, identity, AU01_r .. AU45_r   (OpenFace names, 0..5)
    DIR/train_ids.csv              ids of the training identities, one per line
    DIR/test_ids.csv               ids of the held-out identities
    DIR/synth.json                 seed, counts, renderer version, measured images per second
"""
from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from exprengine.aus import AU_SCALE
from exprengine.data.labels import OPENFACE_COLUMNS
from exprengine.errors import UserError

RENDERER_VERSION = 1
CHUNK = 128


def _render_chunk(args) -> int:
    from exprengine.data.synthetic import SyntheticFaces, render
    directory, start, stop, seed, identities = args
    ds = SyntheticFaces(stop, seed, identities)
    ids = [ds.identity(i) for i in range(start, stop)]
    aus = np.stack([ds.aus(i) for i in range(start, stop)])
    faces = render(ids, aus)
    for i, face in zip(range(start, stop), faces):
        Image.fromarray(face).save(Path(directory) / "imgs" / f"{i:06d}.png", compress_level=3)
    return stop - start


def write_synthetic(out: str | os.PathLike, n: int, seed: int = 0, identities: int = 1000,
                    test_fraction: float = 0.1, workers: int | None = None, progress: bool = True) -> dict:
    """Render `n` synthetic faces of `identities` identities into a data set directory at `out`.

    Samples cycle through the identities; the last `test_fraction` of the identities are held
    out (test_ids.csv). The directory appears complete or not at all.
    """
    from exprengine.data.synthetic import SyntheticFaces
    from exprengine.files import atomic_directory
    if n < 1:
        raise UserError(f"`n` must be at least 1, got {n}")
    if identities < 2:
        raise UserError(f"need at least 2 identities (one to hold out), got {identities}")
    if not 0 < test_fraction < 1:
        raise UserError(f"`test_fraction` must be between 0 and 1, got {test_fraction}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "synth.json").is_file())):
        raise UserError(f"{out} exists and is not a synthetic data set; choose another `out`")
    workers = workers or min(os.cpu_count() or 1, 8)
    ds = SyntheticFaces(n, seed, (0, identities))
    n_test_ids = max(1, int(round(identities * test_fraction)))
    first_test = identities - n_test_ids
    start_time = time.perf_counter()
    with atomic_directory(out) as tmp:
        tmp = Path(tmp)
        (tmp / "imgs").mkdir()
        tasks = [(str(tmp), s, min(s + CHUNK, n), seed, (0, identities)) for s in range(0, n, CHUNK)]
        with tqdm(total=n, desc="rendering", unit="img", disable=not progress) as bar:
            if workers == 1:
                for t in tasks:
                    bar.update(_render_chunk(t))
            else:
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    for done in pool.map(_render_chunk, tasks):
                        bar.update(done)
        elapsed = time.perf_counter() - start_time
        ids = [f"{i:06d}" for i in range(n)]
        identity_of = [ds.identity_index(i) for i in range(n)]
        with open(tmp / "aus.csv", "w") as f:
            f.write("id,identity," + ",".join(OPENFACE_COLUMNS) + "\n")
            for i in range(n):
                f.write(f"{ids[i]},{identity_of[i]}," + ",".join(f"{x:.4f}" for x in ds.aus(i)) + "\n")
        (tmp / "train_ids.csv").write_text("".join(f"{ids[i]}\n" for i in range(n) if identity_of[i] < first_test))
        (tmp / "test_ids.csv").write_text("".join(f"{ids[i]}\n" for i in range(n) if identity_of[i] >= first_test))
        stats = {"format": "exprengine-synthetic", "renderer_version": RENDERER_VERSION, "seed": seed, "n": n,
                 "identities": identities, "test_identities": [first_test, identities], "workers": workers,
                 "seconds": round(elapsed, 2), "images_per_second": round(n / elapsed, 1)}
        (tmp / "synth.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def training_data(spec: str, size: int):
    """A training set from its spec: `synthetic[:SEED[:IDENTITIES]]` (rendered on the fly, the
    last 10 % of identities held out) or a data set directory (its train split)."""
    from exprengine.data.synthetic import SyntheticFaces
    if spec == "synthetic" or spec.startswith("synthetic:"):
        parts = spec.split(":")[1:]
        try:
            seed = int(parts[0]) if parts else 0
            identities = int(parts[1]) if len(parts) > 1 else 1000
        except ValueError:
            raise UserError(f"`spec` {spec}: expected synthetic[:SEED[:IDENTITIES]]") from None
        if not 0 <= seed < 2**32 or not 2 <= identities <= 10_000_000:
            raise UserError(f"`spec` {spec}: the seed must be in 0..{2**32 - 1} and the identities in 2..10000000")
        if size > 128 or 128 % size:
            raise UserError(f"synthetic faces are rendered at 128x128: the image size must divide 128, not {size}")
        train_ids = identities - max(1, identities // 10)
        return SyntheticFaces(1_000_000, seed, (0, train_ids), size=size)
    return FaceFolder(spec, "train", size)


#: An id names a file in imgs/: a plain file name (no path separators, no '..', not hidden).
_ID = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,199}")
_IDENTITY = re.compile(r"-?\d{1,9}")


def _shown(text: str) -> str:
    """A value from a file, short enough for a one-line message."""
    return text[:40] + "..." if len(text) > 40 else text


def read_aus_table(path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The labels of an `aus.csv` (id, [identity,] AU01_r .. AU45_r; UTF-8, comma-separated):
    (id -> float32 [17] intensities in 0..5, id -> identity for rows that give one).

    Raises UserError for a file that is not UTF-8 CSV text (or has a field over csv's limit),
    lacks or repeats a column, repeats an id, has an id that is not a plain file name, or a
    value that is not a number in 0..5 (NaN, infinite, negative, above 5)."""
    from exprengine.textfiles import read_csv
    header, *rows = read_csv(path, "AU table") or [[]]
    header = [h.strip() for h in header]
    missing = [c for c in ("id", *OPENFACE_COLUMNS) if c not in header]
    if not rows or missing:
        raise UserError(f"{path} has no rows or lacks the columns {', '.join(missing) or '...'}")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise UserError(f"{path} has the column {_shown(repeated[0])} more than once")
    where = {name: header.index(name) for name in ("id", *OPENFACE_COLUMNS)}
    has_identity = "identity" in header
    labels: dict[str, np.ndarray] = {}
    identity: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue                                  # a blank line
        if len(row) != len(header):
            raise UserError(f"{path} line {line} has {len(row)} fields, the header {len(header)}")
        key = row[where["id"]].strip()
        if not _ID.fullmatch(key) or key in ("..", "."):
            raise UserError(f"{path} line {line}: id {_shown(key)} is not a plain file name")
        if key in labels:
            raise UserError(f"{path} line {line}: id {_shown(key)} appears more than once")
        try:
            values = np.array([float(row[where[c]]) for c in OPENFACE_COLUMNS], np.float64)
        except ValueError:
            raise UserError(f"{path} line {line} has a missing or non-numeric AU value") from None
        if not (np.isfinite(values).all() and (values >= 0).all() and (values <= AU_SCALE).all()):
            raise UserError(f"{path} line {line} (id {_shown(key)}) has an AU value outside 0..{AU_SCALE:g} "
                            "(OpenFace intensities; NaN and infinite values are refused too)")
        labels[key] = values.astype(np.float32)
        if has_identity:
            cell = row[header.index("identity")].strip()
            if _IDENTITY.fullmatch(cell):
                identity[key] = int(cell)
            elif cell:
                raise UserError(f"{path} line {line}: identity {_shown(cell)} is not a whole number")
    if not labels:
        raise UserError(f"{path} has no rows")
    return labels, identity


class FaceFolder:
    """A face data set directory as a map-style data set for training. Two layouts:

    - ours (`exprengine synth`): `imgs/<id>.png`, `aus.csv` (id, [identity,] AU01_r .. AU45_r);
    - GANimation's: `imgs/<id>.jpg`, `aus_openface.pkl` (dict id -> 17 intensities, read
      without running code: `exprengine.data.labels`);
    both with `train_ids.csv` and `test_ids.csv`.

        ds = FaceFolder("data/synth", split="train")
        image, aus, identity = ds[0]       # float32 [3,S,S] in [-1,1], [17] (0..5), int (-1 if unknown)
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train", size: int = 128):
        self.directory = Path(directory)
        self.size = size
        if not self.directory.is_dir():
            raise UserError(f"data set {self.directory} does not exist or is not a directory")
        labels, identity = self._read_labels()
        if split == "all":
            ids = list(labels)
        else:
            from exprengine.data.labels import read_id_list
            ids = read_id_list(self.directory / f"{split}_ids.csv")
        unknown = [i for i in ids if i not in labels]
        if unknown:
            raise UserError(f"{len(unknown)} images of the {split} split have no AU labels "
                            f"(first: {_shown(unknown[0])})")
        if not ids:
            raise UserError(f"the {split} split of {self.directory} is empty")
        self.ids = ids
        self.labels = np.stack([labels[i] for i in ids]).astype(np.float32)
        self.identities = [identity.get(i, -1) for i in ids]

    def _read_labels(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        table, pkl = self.directory / "aus.csv", self.directory / "aus_openface.pkl"
        if table.is_file():
            return read_aus_table(table)
        if pkl.is_file():
            from exprengine.data.labels import read_ganimation_pickle
            return read_ganimation_pickle(pkl), {}
        raise UserError(f"{self.directory} is not a data set: it has neither aus.csv nor aus_openface.pkl")

    def __len__(self) -> int:
        return len(self.ids)

    def aus(self, i: int) -> np.ndarray:
        """Row `i`'s AU labels: float32 [17], OpenFace intensities 0..5, AU_NAMES order."""
        return self.labels[i]

    def image_path(self, i: int) -> Path:
        """The image file of row `i`: imgs/<id>.png, .jpg or .jpeg, the first that exists.

        Raises UserError when none is a file.
        """
        for suffix in (".png", ".jpg", ".jpeg"):
            p = self.directory / "imgs" / f"{self.ids[i]}{suffix}"
            if p.is_file():
                return p
        raise UserError(f"image {_shown(self.ids[i])} is missing from {self.directory / 'imgs'} "
                        "(or is not a file)")

    def __getitem__(self, i: int):
        import torch

        from exprengine.media import read_image
        from exprengine.pixels import network_tensor
        from exprengine.preprocess import resize_face
        if not 0 <= i < len(self.ids):
            raise IndexError(i)
        image = resize_face(read_image(self.image_path(i)), self.size)
        x = network_tensor(np.asarray(image)[None])[0]
        return x, torch.from_numpy(self.labels[i]), self.identities[i]
