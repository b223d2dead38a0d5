"""`exprengine prepare`: a folder of photos -> a face data set, as the thesis prepared CelebA.

For every photo: detect faces (face_recognition's HOG or CNN model), keep photos with exactly
one face, crop it square ("Ver 2.0": the detector's box made square, no stretching, face
over 90 % of the crop), resize to 128x128 and write `imgs/<photo stem>.png`. Photos with no
face, several faces, or that cannot be read are listed in `report.json`.

Resumable: each processed photo is appended to `prepare.jsonl` (fsynced) after its crop is
written atomically; a rerun skips the photos already in the journal. Nothing is ever
written half: crops and the final files appear whole or not at all.

AU labels: run OpenFace on `DATASET/imgs` (or on the photos) and pass its output with
`--openface`; prepare then writes `aus.csv` for the crops it has labels for and reports the
rest. Both of OpenFace's image layouts are read (see exprengine.data.labels.read_image_labels):
FaceLandmarkImg `-fdir` output, one `<stem>.csv` per image, matched by stem; and
FeatureExtraction `-fdir DATASET/imgs` output, one `imgs.csv` whose `frame` n is the n-th
image in sorted name order (checked against the folder's image count; a mismatch is reported,
never guessed). A face OpenFace fitted with confidence below
labels.OPENFACE_MIN_CONFIDENCE (0.725, OpenFace's own success threshold), or marked failed,
is not a label; `report.json` counts those (`openface.dropped_*`) and, when rows could not be
matched to crops, says why (`openface.note`). The split into
`train_ids.csv` / `test_ids.csv` is a hash of each id, so it does not change when photos
are added.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tqdm import tqdm

from exprengine.errors import UserError

JOURNAL = "prepare.jsonl"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def list_photos(photos_dir: Path) -> list[Path]:
    """The photos directly in `photos_dir` (suffixes PHOTO_SUFFIXES, case-insensitive; hidden files
    skipped), sorted by name. Each photo's id is its file stem.

    Raises UserError when `photos_dir` is not a directory, holds no photo, or two photos share a
    stem (e.g. a.jpg and a.png).
    """
    if not photos_dir.is_dir():
        raise UserError(f"{photos_dir} is not a directory of photos")
    photos = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))
    if not photos:
        raise UserError(f"{photos_dir} holds no photos ({', '.join(PHOTO_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for p in photos:
        if p.stem in seen:
            raise UserError(f"two photos would get the same id {p.stem!r}: {seen[p.stem].name} and {p.name}")
        seen[p.stem] = p
    return photos


def read_journal(path: Path) -> dict[str, dict]:
    """Entries of a journal; a last line cut short by an interruption is ignored."""
    entries = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entries[entry["id"]] = entry
    return entries


def _append(journal, entry: dict) -> None:
    journal.write(json.dumps(entry) + "\n")
    journal.flush()
    os.fsync(journal.fileno())


def _labels_note(found, kept: list[str], source) -> str:
    """Why some crops got no label ('' when all did), for report.json and the CLI."""
    from exprengine.data.labels import OPENFACE_MIN_CONFIDENCE
    missing = [i for i in kept if i not in found.labels]
    if not missing:
        return ""
    failed = sum(found.dropped.get(i) == "failed" for i in missing)
    low = sum(found.dropped.get(i) == "low_confidence" for i in missing)
    why = []
    if failed:
        why.append(f"OpenFace marked {failed} failed (success 0)")
    if low:
        why.append(f"{low} were fitted with confidence below {OPENFACE_MIN_CONFIDENCE}, OpenFace's own success threshold")
    if len(missing) - failed - low:
        why.append(f"{len(missing) - failed - low} have no OpenFace result in {source} (none named after the crop, "
                   "or no face found)")
    return "; ".join(why)


def in_test_split(identifier: str, fraction: float) -> bool:
    """Whether `identifier` falls in the test split: the first 32 bits of its sha256, read as a
    fraction of 0xFFFFFFFF, below `fraction`. Stable: it depends on the id alone.
    """
    return int(hashlib.sha256(identifier.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def prepare_photos(photos_dir: str | os.PathLike, out: str | os.PathLike, detector: str = "hog",
                   openface: str | os.PathLike | None = None, test_fraction: float = 0.1, size: int = 128,
                   progress: bool = True) -> dict:
    """Prepare the photos in `photos_dir` into the face data set `out` (the module docstring's
    steps): one square crop of `size` x `size` pixels per one-face photo, written as
    `imgs/<stem>.png`; with `openface` (a CSV or a folder of OpenFace output), `aus.csv` for the
    crops it labels; `train_ids.csv` / `test_ids.csv` (`in_test_split` with `test_fraction`) and
    `report.json`. Resumes from `out/prepare.jsonl`. `detector` is a `make_detector` name
    ("hog", "cnn" or "mediapipe"); `progress` shows a tqdm bar.

    Returns the report (the dict written to report.json): counts `photos`, `kept`, `labelled`
    (None without `openface`), the photo names that had no face, several faces or were
    unreadable, and with `openface` the `unlabelled` ids and an `openface` section.

    Raises UserError for a bad `photos_dir` (see `list_photos`), an `out` that exists and is not a
    data set made by prepare, `test_fraction` outside (0, 1), a missing `openface`, an unknown
    `detector`, or OpenFace output that `read_image_labels` refuses.
    """
    from exprengine.faces.detect import square_box, square_crop
    from exprengine.faces.landmarks import make_detector
    from exprengine.files import atomic_output
    from exprengine.media import read_image, write_image
    photos_dir, out = Path(photos_dir), Path(out)
    photos = list_photos(photos_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / JOURNAL).is_file())):
        raise UserError(f"{out} exists and is not a data set made by `exprengine prepare`; choose another `out`")
    if not 0 < test_fraction < 1:
        raise UserError(f"`test_fraction` must be between 0 and 1, got {test_fraction}")
    if openface is not None and not Path(openface).exists():
        raise UserError(f"OpenFace output {openface} does not exist")
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    done = read_journal(out / JOURNAL)
    todo = [p for p in photos if p.stem not in done]
    finder = make_detector(detector) if todo else None
    with open(out / JOURNAL, "a") as journal:
        for photo in tqdm(todo, desc="preparing", unit="photo", disable=not progress,
                          initial=len(photos) - len(todo), total=len(photos)):
            entry = {"id": photo.stem, "photo": photo.name}
            try:
                image = read_image(photo)
            except UserError as e:
                entry.update(status="unreadable", reason=str(e))
                _append(journal, entry)
                continue
            faces = finder.detect(image)
            if len(faces) != 1:
                entry.update(status="no_face" if not faces else "several_faces", faces=len(faces))
            else:
                top, left, side = square_box(faces[0], image.shape)
                write_image(out / "imgs" / f"{photo.stem}.png", square_crop(image, faces[0], size))
                entry.update(status="ok", crop=[top, left, side], score=round(faces[0].score, 3))
            _append(journal, entry)
    entries = read_journal(out / JOURNAL)
    kept = sorted(i for i, e in entries.items() if e["status"] == "ok")
    report = {"photos": len(photos), "kept": len(kept),
              **{status: sorted(e["photo"] for e in entries.values() if e["status"] == status)
                 for status in ("no_face", "several_faces", "unreadable")}}
    labels = None
    if openface is not None:
        from exprengine.data.labels import OPENFACE_COLUMNS
        from exprengine.data.labels import OPENFACE_MIN_CONFIDENCE, read_image_labels
        crops = sorted(p.name for p in (out / "imgs").iterdir()
                       if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))
        found = read_image_labels(openface, {out / "imgs": crops, photos_dir: [p.name for p in photos]})
        labels = found.labels
        report["openface"] = {"layout": found.layout, "min_confidence": OPENFACE_MIN_CONFIDENCE,
                              "dropped_failed": found.failed, "dropped_low_confidence": found.low_confidence,
                              "note": found.note or _labels_note(found, kept, openface)}
        unlabelled = [i for i in kept if i not in labels]
        kept = [i for i in kept if i in labels]
        report["unlabelled"] = unlabelled
        with atomic_output(out / "aus.csv") as tmp:
            Path(tmp).write_text("id," + ",".join(OPENFACE_COLUMNS) + "\n" + "".join(
                f"{i}," + ",".join(f"{x:.4f}" for x in labels[i]) + "\n" for i in kept))
    report["labelled"] = len(kept) if labels is not None else None
    if labels is not None and report["openface"]["note"]:
        report["openface"]["note"] = f"labelled {len(kept)} of {report['kept']} crops: {report['openface']['note']}"
    for split, test in (("train", False), ("test", True)):
        with atomic_output(out / f"{split}_ids.csv") as tmp:
            Path(tmp).write_text("".join(f"{i}\n" for i in kept if in_test_split(i, test_fraction) == test))
    with atomic_output(out / "report.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_prepare_report(report: dict, out: str | os.PathLike) -> str:
    """`prepare_photos`' report for the data set `out` as text: one line of counts (photos kept,
    without a face, with several, unreadable, without AU labels) naming `out/report.json` for
    the details, and a second line with the OpenFace labels' note when there is one."""
    text = (f"{out}: kept {report['kept']} of {report['photos']} photos; no face {len(report['no_face'])}, "
            f"several faces {len(report['several_faces'])}, unreadable {len(report['unreadable'])}"
            + (f", without AU labels {len(report['unlabelled'])}" if "unlabelled" in report else
               "; no AU labels yet (run OpenFace on the crops, then prepare again with its output)")
            + f" (details: {Path(out) / 'report.json'})")
    note = report.get("openface", {}).get("note")
    return text + (f"\nnote: {note}" if note else "")
