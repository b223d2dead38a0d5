"""Age data: the synthetic world with ground truth for aging, and folders of faces sorted by age class.

`SyntheticAgeFaces` serves pairs with exact truth: a face at its identity's base age, and the same
face (same identity, same expression) at a target class's age, rendered by
`render(identity, aus, age)`.

The folder layout is the one the LATS reference (royorel/Lifespan_Age_Transformation_Synthesis,
its README's "Training/Testing on New Datasets" and data/multiclass_unaligned_dataset.py) trains
and tests on, and FFHQ-Aging's prepared data sets use:

    ROOT/train0-2/<name>.png            images of the class 0-2 years (.png, .jpg or .jpeg)
    ROOT/train0-2/parsings/<name>.png   its face parsing: a label per pixel (19 DeepLab classes,
                                        0 background, 1 skin, ..., 13 hair, 14 hat, 15 earring,
                                        16 necklace, 17 neck, 18 cloth)
    ROOT/train3-6/ ... ROOT/train50-69/, and test0-2/ ... test50-69/ alike

The reference lists only images that have a parsing, and paints the pixels labelled background,
hat, earring, necklace or cloth (0, 14, 15, 16, 18) grey (128) before training. Folders of other
classes (FFHQ-Aging also has 10-14, 20-29, 40-49, 70-120) are ignored, as the reference's class
order (0-2, 3-6, 7-9, 15-19, 30-39, 50-69) ignores them. `write_age_folders` writes the synthetic
world in this layout (with ground truth beside it, `ages.csv`); `AgeFolder` reads it, or a real
data set, as images with their classes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from exprengine.ages import CLASS_CENTRES, NUM_AGE_CLASSES, class_label, class_of_age
from exprengine.aus import NUM_AUS
from exprengine.errors import UserError

#: The reference's image suffixes (data/dataset_utils.py), compared without case here.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Parsing labels the reference paints grey before training: background, hat, earring,
#: necklace, cloth (DeepLab's 19 face-parsing classes).
MASKED_LABELS = (0, 14, 15, 16, 18)
#: Labels our synthetic parsings use: background and skin (the synthetic faces have no hats,
#: jewellery or clothes; hair, eyes and mouth are not separated: they are not masked either).
BACKGROUND, SKIN = 0, 1
MASK_GREY = 128
AGE_TABLE = "ages.csv"
AGE_INFO = "ages.json"


def class_folder(phase: str, index: int) -> str:
    """The reference's folder name of a class: class_folder("train", 0) == "train0-2"."""
    return f"{phase}{class_label(index)}"


class SyntheticAgeFaces:
    """Pairs with ground truth for aging, a map-style data set (a torch Dataset by duck typing).

    Sample i shows identity `identities[0] + i % count` at its base age (`Identity.base_age`,
    inside one of the six classes) with AUs drawn from (seed, i) (`expressions=False`: a neutral
    face), and the same face at a target class drawn from (seed, i) among the other five classes,
    at that class's centre age (`CLASS_CENTRES`: one age per class, so the target is a function
    of the class a model is given). Everything depends only on (seed, i).

        ds = SyntheticAgeFaces(10000, seed=0, identities=(0, 900))
        item = ds[5]    # dict: source, target float32 [3,S,S] in [-1,1]; source_class,
                        # target_class int (0..5); source_age, target_age float (years); identity int
    """

    def __init__(self, length: int, seed: int = 0, identities: tuple[int, int] = (0, 1000), size: int = 128,
                 expressions: bool = True):
        from exprengine.data.synthetic import SIZE, SyntheticFaces
        if length < 1 or identities[1] <= identities[0]:
            raise UserError(f"`length` must be at least 1 and `identities` a non-empty range, got {length}, {identities}")
        if size > SIZE or SIZE % size:
            raise UserError(f"synthetic faces are rendered at {SIZE}x{SIZE}: `size` must divide {SIZE}, not {size}")
        self.faces = SyntheticFaces(length, seed, identities, size)
        self.length, self.seed, self.identities, self.size, self.expressions = length, seed, identities, size, expressions

    def __len__(self) -> int:
        return self.length

    def identity_index(self, i: int) -> int:
        """The identity index of sample `i` (as `SyntheticFaces.identity_index`)."""
        return self.faces.identity_index(i)

    def identity(self, i: int):
        """Sample `i`'s Identity."""
        return self.faces.identity(i)

    def aus(self, i: int) -> np.ndarray:
        """Sample `i`'s AU intensities, float32 [17] (0..5): `SyntheticFaces.aus`, or zeros without expressions."""
        return self.faces.aus(i) if self.expressions else np.zeros(NUM_AUS, np.float32)

    def source_age(self, i: int) -> float:
        """Sample `i`'s source age in years: its identity's base age."""
        return float(self.identity(i).base_age)

    def source_class(self, i: int) -> int:
        """The class (0..5) of the source age."""
        return int(class_of_age(self.source_age(i)))

    def target_class(self, i: int) -> int:
        """Sample `i`'s target class, drawn from (seed, i) among the five classes that are not its source's."""
        others = [c for c in range(NUM_AGE_CLASSES) if c != self.source_class(i)]
        return others[int(np.random.default_rng([self.seed, 2_000_003, i]).integers(len(others)))]

    def target_age(self, i: int) -> float:
        """The target class's centre age in years."""
        return CLASS_CENTRES[self.target_class(i)]

    def render_at(self, i: int, age: float) -> np.ndarray:
        """Sample `i`'s face (its identity and AUs) at `age` years: uint8 [S,S,3]."""
        from exprengine.data.synthetic import render, resize_faces
        return resize_faces(render(self.identity(i), self.aus(i), age=age), self.size)[0]

    def render_samples(self, idx, truth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint8 [n,S,S,3] faces of samples `idx` at their source ages, uint8 [n,S,S,3] the same
        faces at their target ages or None without `truth`), rendered in one `render` call."""
        from exprengine.data.synthetic import render, resize_faces
        idx = [int(i) for i in idx]
        if not idx:
            empty = np.zeros((0, self.size, self.size, 3), np.uint8)
            return empty, (empty.copy() if truth else None)
        ids = [self.identity(i) for i in idx] * (2 if truth else 1)
        aus = np.stack([self.aus(i) for i in idx] * (2 if truth else 1))
        ages = [self.source_age(i) for i in idx] + ([self.target_age(i) for i in idx] if truth else [])
        faces = resize_faces(render(ids, aus, age=ages), self.size)
        return (faces[:len(idx)], faces[len(idx):]) if truth else (faces, None)

    def __getitem__(self, i: int) -> dict:
        from exprengine.data.synthetic import render, resize_faces
        from exprengine.pixels import network_tensor
        if not 0 <= i < self.length:
            raise IndexError(i)
        ages = [self.source_age(i), self.target_age(i)]
        faces = resize_faces(render(self.identity(i), self.aus(i), age=ages), self.size)
        x = network_tensor(faces)
        return {"source": x[0], "target": x[1], "source_class": self.source_class(i),
                "target_class": self.target_class(i), "source_age": ages[0], "target_age": ages[1],
                "identity": self.identity_index(i)}


class PooledAgeFaces(SyntheticAgeFaces):
    """`SyntheticAgeFaces` of `length` samples rendered once (`fill`) and then served from
    memory: the same faces (the renderer is deterministic), without the renderer's cost at every
    draw (about 17 ms a face at 128x128 on one core; a training step of batch B renders 2B).
    Training on a pool repeats its samples; `length` sets how often. Holds 2 * length * S * S * 3
    bytes (about 0.5 GB for 20,000 samples at 64x64).

        pool = PooledAgeFaces(20_000, seed=0, identities=(0, 900), size=64)   # cheap: nothing rendered yet
        pool.fill()                                                            # renders, with progress
        images, truth = pool.render_samples([3, 7], truth=True)               # from memory

    Construction renders nothing, so that whoever builds a run can check everything else first
    (`LATSTrainer.train` fills its data's pool as it starts); `render_samples` fills the pool
    first if no one has. `workers`: processes rendering the pool (default: up to 2, the CPUs
    there are); `progress`: a progress bar on stderr. UserError as SyntheticAgeFaces."""

    CHUNK = 64          # samples a worker renders at a time

    def __init__(self, length: int, seed: int = 0, identities: tuple[int, int] = (0, 1000), size: int = 128,
                 expressions: bool = True, workers: int | None = None, progress: bool = True):
        super().__init__(length, seed, identities, size, expressions)
        self.workers = min(2, os.cpu_count() or 1) if workers is None else workers
        self.progress = progress
        self.images: np.ndarray | None = None     # uint8 [length,S,S,3] once filled: the sources
        self.truths: np.ndarray | None = None     # uint8 [length,S,S,3] once filled: the target-age truths

    def chunks(self, rank: int = 0, ranks: int = 1) -> list[range]:
        """The sample ranges process `rank` of `ranks` renders: every `ranks`-th chunk of CHUNK
        samples, starting at its own (all of them alone; disjoint, and together every sample)."""
        return [range(a, min(a + self.CHUNK, self.length)) for a in range(rank * self.CHUNK, self.length,
                                                                          ranks * self.CHUNK)]

    def fill(self, world=None) -> None:
        """Render the pool (once: later calls return at once), or read it from the cache.

        Alone, in `workers` processes. With `world` (a `training.distributed.World` of several
        processes training one run), each process renders its own `chunks(rank, size)` and the
        processes exchange them (`world.assemble`), so that every process holds the whole pool
        having rendered 1/size of it; every process of the world must call `fill` then. The
        progress bar is rank 0's. A rendered pool is kept in the cache (`cache_path`; rank 0
        writes it) and a later fill of the same pool maps it from there instead of rendering,
        after re-rendering SPOT_CHECKS of its samples and finding them identical: a run resumed,
        or a second run on the same pool, starts at once."""
        if self.images is not None:
            return
        rank, ranks = (world.rank, world.size) if world is not None else (0, 1)
        both = self._cached()
        if ranks > 1:                   # every process renders, or none: they must agree
            both = both if world.mean_values({"cached": float(both is not None)})["cached"] == 1.0 else None
        if both is None:
            both = self._render(rank, ranks)
            if ranks > 1:
                both = world.assemble(both)
            if rank == 0:
                import io

                from exprengine.files import store_in_cache
                buffer = io.BytesIO()
                np.save(buffer, both, allow_pickle=False)
                store_in_cache(self.cache_path(), buffer.getvalue())
        self.images, self.truths = both[0], both[1]

    #: Samples re-rendered to check a cached pool (spread over it).
    SPOT_CHECKS = 8

    def cache_path(self) -> Path:
        """The pool's cache file (`files.cache_dir("age-pools")`): .npy, uint8 [2,length,S,S,3]
        (the sources, then their truths), named by the sha256 of the pool's arguments, NumPy's
        version and the source of the renderer's modules (data/synthetic.py, data/aging.py, this
        module, ages.py, aus.py), so that a changed renderer never reads an old pool."""
        import hashlib

        import exprengine
        from exprengine.files import cache_dir
        root = Path(exprengine.__file__).parent
        h = hashlib.sha256(json.dumps([self.length, self.seed, list(self.identities), self.size, self.expressions,
                                       np.__version__]).encode())
        for name in ("data/synthetic.py", "data/aging.py", "data/age_faces.py", "ages.py", "aus.py"):
            h.update((root / name).read_bytes())
        return cache_dir("age-pools") / f"pool-{self.length}-{self.size}px-{h.hexdigest()[:20]}.npy"

    def _cached(self) -> np.ndarray | None:
        """The cached pool (read-only, memory-mapped) when its file is whole and its spot checks
        render identically; else None (missing, damaged or stale: rendered again)."""
        try:
            both = np.load(self.cache_path(), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        if both.dtype != np.uint8 or both.shape != (2, self.length, self.size, self.size, 3):
            return None
        spots = np.unique(np.linspace(0, self.length - 1, self.SPOT_CHECKS).round().astype(np.int64))
        images, truths = SyntheticAgeFaces.render_samples(self, spots, truth=True)
        if not (np.array_equal(both[0, spots], images) and np.array_equal(both[1, spots], truths)):
            return None
        return both

    def _render(self, rank: int, ranks: int) -> np.ndarray:
        """uint8 [2,length,S,S,3]: process `rank`'s chunks rendered (sources, truths), zeros elsewhere."""
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        from exprengine.data.loading import as_is, one_thread
        plain = SyntheticAgeFaces(self.length, self.seed, self.identities, self.size, self.expressions)
        chunks = self.chunks(rank, ranks)
        both = np.zeros((2, self.length, self.size, self.size, 3), np.uint8)
        loader = DataLoader(_PoolChunks(plain, chunks), batch_size=None,
                            num_workers=self.workers if len(chunks) > 1 else 0,
                            collate_fn=as_is, worker_init_fn=one_thread)
        with tqdm(total=sum(map(len, chunks)), desc="rendering the age pool", unit="face", dynamic_ncols=True,
                  disable=None if self.progress and rank == 0 else True) as bar:
            for chunk, (rendered, rendered_truths) in zip(chunks, loader):
                both[0, chunk.start:chunk.stop] = rendered
                both[1, chunk.start:chunk.stop] = rendered_truths
                bar.update(len(rendered))
        return both

    def render_samples(self, idx, truth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """As `SyntheticAgeFaces.render_samples`, from the pool (filled first if it is not;
        IndexError outside 0..length-1). The arrays are copies, writable."""
        idx = np.asarray([int(i) for i in idx], np.int64)
        if idx.size and not (0 <= idx.min() and idx.max() < self.length):
            raise IndexError(f"sample index outside the pool of {self.length}")
        self.fill()
        return np.array(self.images[idx]), (np.array(self.truths[idx]) if truth else None)


class _PoolChunks:
    """Chunks of samples as a map-style data set: item k is `render_samples(chunks[k], truth=True)`."""

    def __init__(self, data: SyntheticAgeFaces, chunks: list[range]):
        self.data, self.chunks = data, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        return self.data.render_samples(self.chunks[k], truth=True)


def synthetic_parsings(faces: np.ndarray, identities) -> np.ndarray:
    """uint8 [N,H,W] parsings of rendered faces: BACKGROUND where a pixel is exactly its
    identity's background (`synthetic.backgrounds`), SKIN elsewhere (head, hair, neck)."""
    from exprengine.data.synthetic import backgrounds
    return np.where((faces == backgrounds(list(identities))).all(-1), BACKGROUND, SKIN).astype(np.uint8)


def write_age_folders(out: str | os.PathLike, identities: int, seed: int = 0, test_fraction: float = 0.1,
                      expressions: bool = True, progress: bool = False) -> dict:
    """Write `identities` synthetic faces in the reference's class-folder layout at `out`.

    One image per identity, as FFHQ-Aging has one photo per person: identity j (0..identities-1
    of the world `seed`) at its base age, with the AUs of `SyntheticAgeFaces` sample j, in
    `train<class>/` (or `test<class>/` for the last `test_fraction` of the identities: held out),
    as `<j:06d>.png` (128x128 RGB) with its parsing in `parsings/<j:06d>.png` (grey-level
    labels: 0 background, 1 the rest). Every one of the twelve folders exists, even if empty.
    `ages.csv` (name, identity, age, class, phase) is the ground truth: the image is
    `render(identity j of seed, aus, age)`. `ages.json`: seed, counts, classes. The directory
    appears complete or not at all.

    Returns the `ages.json` contents. UserError for `identities` < 2, `test_fraction` outside
    (0, 1), or `out` an existing directory that is not such a folder.
    """
    from PIL import Image
    from tqdm import tqdm

    from exprengine.data.synthetic import render
    from exprengine.files import atomic_directory
    if identities < 2:
        raise UserError(f"`identities` must be at least 2 (one to hold out), got {identities}")
    if not 0 < test_fraction < 1:
        raise UserError(f"`test_fraction` must be between 0 and 1, got {test_fraction}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / AGE_INFO).is_file())):
        raise UserError(f"{out} exists and is not an age-class folder; choose another `out`")
    ds = SyntheticAgeFaces(identities, seed, (0, identities), expressions=expressions)
    first_test = identities - max(1, int(round(identities * test_fraction)))
    rows, counts = [], {}
    with atomic_directory(out) as tmp:
        tmp = Path(tmp)
        for phase in ("train", "test"):
            for c in range(NUM_AGE_CLASSES):
                (tmp / class_folder(phase, c) / "parsings").mkdir(parents=True)
        for start in tqdm(range(0, identities, 64), desc="rendering", unit="batch", disable=not progress):
            js = range(start, min(start + 64, identities))
            ids = [ds.identity(j) for j in js]
            ages = [ds.source_age(j) for j in js]
            faces = render(ids, np.stack([ds.aus(j) for j in js]), age=ages)
            parsings = synthetic_parsings(faces, ids)
            for j, face, parsing, age in zip(js, faces, parsings, ages):
                phase = "train" if j < first_test else "test"
                c = int(class_of_age(age))
                folder = tmp / class_folder(phase, c)
                name = f"{j:06d}.png"
                Image.fromarray(face).save(folder / name, compress_level=3)
                Image.fromarray(parsing).save(folder / "parsings" / name)
                rows.append(f"{name},{j},{age:.6f},{class_label(c)},{phase}\n")
                counts[class_folder(phase, c)] = counts.get(class_folder(phase, c), 0) + 1
        (tmp / AGE_TABLE).write_text("name,identity,age,class,phase\n" + "".join(rows))
        info = {"format": "exprengine-age-classes", "seed": seed, "identities": identities,
                "test_identities": [first_test, identities], "expressions": expressions,
                "classes": [class_label(c) for c in range(NUM_AGE_CLASSES)],
                "counts": {class_folder(phase, c): counts.get(class_folder(phase, c), 0)
                           for phase in ("train", "test") for c in range(NUM_AGE_CLASSES)}}
        (tmp / AGE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


class AgeFolder:
    """Faces sorted by age class in the reference's layout (module docstring), real or synthetic,
    as a map-style data set: image and class.

    `phase` "train" or "test" picks the `<phase><class>` folders; all six classes must be there
    with at least one image each. With `parsings` (the reference's rule) an image counts only if
    `parsings/<stem>.png` exists, and its pixels labelled MASKED_LABELS are painted grey (128)
    before resizing; without, every image counts, unmasked. Images are resized to `size`
    (`preprocess.resize_face`: area-averaging down, Lanczos up).

        ds = AgeFolder("datasets/males", "train", size=256)
        image, age_class = ds[0]      # float32 [3,S,S] in [-1,1], int 0..5
        ds.paths[0], ds.classes[0]    # its file, its class

    UserError if `root` is not a directory, `phase` is neither, a class folder is missing or
    holds no usable image.
    """

    def __init__(self, root: str | os.PathLike, phase: str = "train", size: int = 256, parsings: bool = True):
        if phase not in ("train", "test"):
            raise UserError(f"`phase` must be 'train' or 'test', got {phase!r}")
        if not isinstance(size, int) or size < 1:
            raise UserError(f"`size` must be a positive number of pixels, got {size!r}")
        self.root, self.phase, self.size, self.parsings = Path(root), phase, size, parsings
        if not self.root.is_dir():
            raise UserError(f"age data set {self.root} does not exist or is not a directory")
        self.paths: list[Path] = []
        self.classes: list[int] = []
        for c in range(NUM_AGE_CLASSES):
            folder = self.root / class_folder(phase, c)
            if not folder.is_dir():
                raise UserError(f"age data set {self.root} has no {folder.name} folder (it needs "
                                f"{', '.join(class_folder(phase, k) for k in range(NUM_AGE_CLASSES))})")
            found = sorted(p for p in folder.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                           and (not parsings or self._parsing_path(p).is_file()))
            if not found:
                what = "image with a parsing (parsings/<name>.png)" if parsings else "image"
                raise UserError(f"{folder} holds no {what}")
            self.paths += found
            self.classes += [c] * len(found)

    @staticmethod
    def _parsing_path(image: Path) -> Path:
        return image.parent / "parsings" / (image.stem + ".png")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def class_counts(self) -> list[int]:
        """How many images each class (0..5) has."""
        return [self.classes.count(c) for c in range(NUM_AGE_CLASSES)]

    def image(self, i: int) -> np.ndarray:
        """Image `i` as uint8 [S,S,3]: read, masked by its parsing (with `parsings`), resized.

        UserError for an unreadable image or parsing, or a parsing of another size."""
        from exprengine.media import read_image
        from exprengine.preprocess import resize_face
        path = self.paths[i]
        face = read_image(path)
        if self.parsings:
            parsing = read_image(self._parsing_path(path))[..., 0]
            if parsing.shape != face.shape[:2]:
                raise UserError(f"parsing {self._parsing_path(path)} is {parsing.shape[1]}x{parsing.shape[0]}, "
                                f"its image {face.shape[1]}x{face.shape[0]}")
            face = face.copy()
            face[np.isin(parsing, MASKED_LABELS)] = MASK_GREY
        return resize_face(face, self.size)

    def __getitem__(self, i: int):
        from exprengine.pixels import network_tensor
        if not 0 <= i < len(self.paths):
            raise IndexError(i)
        return network_tensor(self.image(i)[None])[0], self.classes[i]


#: The contact sheet of docs/images/synthetic_ages.png: four identities of world 0, these ages.
SHEET_IDENTITIES = (0, 7, 10, 13)
SHEET_AGES = (1.0, 5.0, 8.0, 17.0, 35.0, 60.0)


def age_sheet(seed: int = 0, identities: tuple[int, ...] = SHEET_IDENTITIES,
              ages: tuple[float, ...] = SHEET_AGES, scale: int = 2) -> np.ndarray:
    """A contact sheet of synthetic faces across ages: one row per identity (indices of the world
    `seed`), one column per age (years), neutral expression, each face enlarged `scale` times
    (Lanczos) and labelled "age N". uint8 [H,W,3].

    docs/images/synthetic_ages.png is `age_sheet()`, saved with a 256-colour palette (median cut, no
    dithering) to keep the file small."""
    from PIL import Image

    from exprengine.data.synthetic import render, sample_identities
    from exprengine.media import contact_sheet
    tiles, labels = [], []
    for index in identities:
        identity = sample_identities(seed, 1, start=index)[0]
        for face, age in zip(render(identity, np.zeros(NUM_AUS, np.float32), age=list(ages)), ages):
            h, w = face.shape[:2]
            tiles.append(np.asarray(Image.fromarray(face).resize((w * scale, h * scale), Image.Resampling.LANCZOS)))
            labels.append(f"age {age:g}")
    return contact_sheet(np.stack(tiles), columns=len(ages), labels=labels)
