"""A procedural face world with exact ground truth: `render(identity, aus)` for any AU vector.

    ids = sample_identities(seed=0, count=8)                  # deterministic by seed
    faces = render(ids, aus)                                  # uint8 [8,128,128,3], aus [8,17] or [17]

Every image is drawn from signed distance fields in *face space* (u right, v down; the
face is about 2 units wide, centred at the origin), anti-aliased by pixel coverage, then
placed in the 128x128 frame by the identity's pose (small rotation, shift and scale).
An identity fixes everything that is not expression: face shape, skin tone, hair colour
and style, eye colour and spacing, brows, nose, mouth size, background and lighting.
The 17 AUs (0..5, OpenFace scale; k = intensity / 5) move only their own region:

    AU01 inner brow up         AU02 outer brow up        AU04 brows down + together, furrows
    AU05 upper lid up          AU07 lids tighten         AU45 blink (lids close)
    AU06 cheeks up, lower lid up, crow's feet            AU09 nose wrinkles, nostrils up
    AU10 upper lip up          AU12 lip corners up, out  AU14 dimples, corners in
    AU15 lip corners down      AU17 chin boss up, lower lip up
    AU20 mouth wider           AU23 lips thinner         AU25 lips part
    AU26 jaw drop (mouth opens, chin and jaw outline down)

`AU_REGIONS` names each AU's region in face space; tests check that an AU's pixel changes
fall inside it. The renderer is vectorised over the batch (NumPy); `exprengine synth`
writes a data set, `SyntheticFaces` serves one to training.

Age: `render(identities, aus, age=...)` draws the same faces at 0..70 years (head proportions,
features, lines and folds, sag, greying and thinning hair; the curves and their sources are in
`exprengine.data.aging`). Without an age, a face is drawn as it always was, which is the face at
25 years. Each identity has a `base_age` in one of the six LATS age classes; the age world's data
sets and class folders are in `exprengine.data.age_faces`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from exprengine.ages import AGE_CLASSES, MAX_AGE
from exprengine.aus import AU_INDEX, AU_SCALE, NUM_AUS
from exprengine.data.aging import (ADULT_STRAIN, INFANT_SCALE, NEUTRAL, STRAIN_CENTRE_V, WIDTH_STRAIN, age_params,
                                   ages_array)

SIZE = 128

#: Each AU's region in face space: (u_min, u_max, v_min, v_max), symmetric AUs use |u|.
AU_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "AU01": (0.0, 0.95, -0.95, -0.25), "AU02": (0.0, 0.95, -0.95, -0.25), "AU04": (0.0, 0.95, -0.95, -0.2),
    "AU05": (0.1, 0.8, -0.5, 0.0), "AU07": (0.1, 0.8, -0.5, 0.0), "AU45": (0.1, 0.8, -0.5, 0.0),
    "AU06": (0.1, 1.0, -0.5, 0.5), "AU09": (0.0, 0.35, -0.35, 0.5),
    "AU10": (0.0, 0.7, 0.25, 0.9), "AU12": (0.0, 0.7, 0.25, 0.9), "AU14": (0.0, 0.75, 0.25, 0.9),
    "AU15": (0.0, 0.7, 0.25, 0.9), "AU20": (0.0, 0.75, 0.25, 0.9), "AU23": (0.0, 0.7, 0.25, 0.9),
    "AU25": (0.0, 0.7, 0.25, 0.9), "AU17": (0.0, 0.7, 0.35, 1.3), "AU26": (0.0, 1.15, 0.25, 1.6),
}
REGION_NAMES = {"brows": ("AU01", "AU02", "AU04"), "eyes": ("AU05", "AU07", "AU45"), "cheeks": ("AU06",),
                "nose": ("AU09",), "lips": ("AU10", "AU12", "AU14", "AU15", "AU20", "AU23", "AU25"),
                "chin": ("AU17",), "jaw": ("AU26",)}

SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 135], [198, 134, 96],
                       [160, 102, 70], [115, 72, 48], [86, 54, 38]], np.float32) / 255
HAIR_COLOURS = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 45], [170, 130, 80], [215, 190, 140],
                         [150, 60, 30], [140, 140, 140], [235, 235, 230]], np.float32) / 255
IRIS_COLOURS = np.array([[60, 40, 25], [95, 65, 35], [70, 110, 150], [80, 120, 80], [110, 110, 120]],
                        np.float32) / 255


@dataclass(frozen=True)
class Identity:
    """Everything about a face that is not its expression (all floats, face-space units)."""

    face_width: float       # half-width of the face ellipse
    face_height: float      # half-height
    jaw: float              # 0 round .. 1 square lower face
    skin_r: float
    skin_g: float
    skin_b: float
    hair_r: float
    hair_g: float
    hair_b: float
    hairline: float         # v of the hairline
    hair_volume: float      # how far the hair extends beside the face
    iris_r: float
    iris_g: float
    iris_b: float
    eye_spacing: float      # |u| of the eye centres
    eye_size: float         # half-width of an eye
    brow_thickness: float
    nose_length: float
    mouth_width: float      # half-width of the mouth
    lip_thickness: float
    bg_r: float
    bg_g: float
    bg_b: float
    bg_gradient: float
    light_u: float          # light direction (shading across the face)
    light_v: float
    rotation: float         # radians
    shift_x: float          # pixels
    shift_y: float
    scale: float            # pixels per face unit
    base_age: float         # years: the age the age world draws this face at (`render` draws REFERENCE_AGE)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Identity":
        """One identity drawn from `rng`: a skin tone, hair and iris colour from the module's palettes
        (each jittered), and every shape, lighting and pose field uniform in a fixed range.
        """
        skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, 3)
        hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15, 3)
        iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.85, 1.15, 3)
        bg = rng.uniform(0.1, 0.95, 3)
        return cls(
            face_width=rng.uniform(0.88, 1.05), face_height=rng.uniform(1.22, 1.38), jaw=rng.uniform(0, 1),
            skin_r=skin[0], skin_g=skin[1], skin_b=skin[2], hair_r=hair[0], hair_g=hair[1], hair_b=hair[2],
            hairline=rng.uniform(-0.95, -0.72), hair_volume=rng.uniform(0.05, 0.3),
            iris_r=iris[0], iris_g=iris[1], iris_b=iris[2],
            eye_spacing=rng.uniform(0.36, 0.44), eye_size=rng.uniform(0.16, 0.21),
            brow_thickness=rng.uniform(0.035, 0.06), nose_length=rng.uniform(0.32, 0.42),
            mouth_width=rng.uniform(0.24, 0.32), lip_thickness=rng.uniform(0.045, 0.075),
            bg_r=bg[0], bg_g=bg[1], bg_b=bg[2], bg_gradient=rng.uniform(-0.25, 0.25),
            light_u=rng.uniform(-0.35, 0.35), light_v=rng.uniform(-0.3, 0.1),
            rotation=rng.uniform(-0.07, 0.07), shift_x=rng.uniform(-3, 3), shift_y=rng.uniform(-3, 3),
            scale=rng.uniform(36, 42), base_age=_base_age(rng))


def _base_age(rng: np.random.Generator) -> float:
    """An identity's base age in years: one of the six LATS age classes (equally likely), then
    uniform within its years (lo <= age < hi + 1, at most MAX_AGE). Drawn after every other field,
    so adding it changed none of them."""
    lo, hi = AGE_CLASSES[int(rng.integers(len(AGE_CLASSES)))]
    return float(rng.uniform(lo, min(hi + 1, MAX_AGE)))


def sample_identities(seed: int, count: int, start: int = 0) -> list[Identity]:
    """Identities `start .. start+count-1` of the world `seed`: each depends only on (seed, index)."""
    return [Identity.sample(np.random.default_rng([seed, i])) for i in range(start, start + count)]


def _params(identities: list[Identity]) -> dict[str, np.ndarray]:
    """Stack identity fields into [N,1,1] float32 arrays (broadcast over the image)."""
    return {f.name: np.array([getattr(i, f.name) for i in identities], np.float32)[:, None, None]
            for f in fields(Identity)}


# --- signed distances (face units; negative inside) and coverage -------------------------------
def _ellipse(u, v, cu, cv, a, b):
    return (np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2) - 1.0) * np.minimum(a, b)


def _segment(u, v, u0, v0, u1, v1, radius):
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9), 0, 1)
    return np.sqrt((u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2) - radius


def _coverage(d, px):
    """Anti-aliased coverage of a shape with signed distance d; px = one pixel in face units."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _paint(img, colour, alpha):
    """img [N,H,W,3] <- alpha over: img * (1 - a) + colour * a."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * colour
    return img


def _rgb(p, prefix):
    return np.stack([p[f"{prefix}_r"], p[f"{prefix}_g"], p[f"{prefix}_b"]], axis=-1)   # [N,1,1,3]


def _face_coordinates(p):
    """Pixel grid -> face-space (u, v) per identity, by the inverse of its pose."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    x = x[None] + 0.5 - (SIZE / 2 + p["shift_x"])
    y = y[None] + 0.5 - (SIZE / 2 + 2 + p["shift_y"])
    c, s = np.cos(p["rotation"]), np.sin(p["rotation"])
    u = (c * x + s * y) / p["scale"]
    v = (-s * x + c * y) / p["scale"]
    return u, v


def region_masks(identities: list[Identity], au: str) -> np.ndarray:
    """bool [N,128,128]: where `au` may change pixels, in each identity's pose."""
    u, v = _face_coordinates(_params(identities))
    u0, u1, v0, v1 = AU_REGIONS[au]
    return (np.abs(u) >= u0) & (np.abs(u) <= u1) & (v >= v0) & (v <= v1)


# --- age (exprengine.data.aging has the curves and their sources) ---------------------------------
def _grow(u, v, px, g):
    """Face-space coordinates of a face at its age -> the adult face's (the cardioidal strain of
    `exprengine.data.aging`, and the infant's larger head in the frame), and the pixel size there.

    With theta from straight up about (0, STRAIN_CENTRE_V) and 1 - cos(theta) = c, the adult
    radius is the young one's times f = (1 + K c) / (1 + k c), K = ADULT_STRAIN and k the
    strain at this age; the head is drawn `scale` times larger, so the map is R -> R f / scale.
    Written as an increment that is exactly 0 for a grown face (no change, bit for bit)."""
    d = v - STRAIN_CENTRE_V
    c = 1.0 + d / np.maximum(np.sqrt(u * u + d * d), 1e-6)
    young = 1.0 - g["growth"]
    k = ADULT_STRAIN * g["growth"]
    scale = 1.0 + (INFANT_SCALE - 1.0) * young
    f_minus_1 = ADULT_STRAIN * young * c / (1.0 + k * c)
    grow = (f_minus_1 + (1.0 - scale)) / scale          # the map's factor minus 1
    grow_u = (f_minus_1 * WIDTH_STRAIN + (1.0 - scale)) / scale       # less across: a child's cheeks stay full
    return u + u * grow_u, v + d * grow, px * (1.0 + grow)


def _aged(p, g):
    """The identity's fields at its age (`_params`' dict, a new dict): face, features and colours.

    Exactly the same values for a face at REFERENCE_AGE (every factor 1, every offset 0)."""
    q = dict(p)
    young = 1.0 - g["growth"]
    q["face_width"] = p["face_width"] * (1.0 + 0.12 * young)                    # round cheeks, wide cranium
    q["jaw"] = (p["jaw"] + (1.0 - p["jaw"]) * 0.6 * g["sag"]) * (1.0 - 0.8 * young)   # round child, heavy old jaw
    q["eye_size"] = p["eye_size"] * (1.0 + 0.45 * young)                        # eyes near adult size early
    q["eye_spacing"] = p["eye_spacing"] * (1.0 + 0.08 * young)
    q["nose_length"] = p["nose_length"] * (1.0 - 0.45 * young) * (1.0 + 0.12 * g["sag"])
    q["mouth_width"] = p["mouth_width"] * (1.0 - 0.22 * young)
    q["lip_thickness"] = p["lip_thickness"] * (1.0 + 0.1 * g["child"]) * (1.0 - 0.45 * g["sag"])
    q["brow_thickness"] = p["brow_thickness"] * (1.0 - 0.4 * young) * (1.0 - 0.25 * g["thinning"])
    q["hair_volume"] = p["hair_volume"] * (1.0 - 0.9 * g["sparse"]) * (1.0 - 0.5 * g["thinning"])
    q["hairline"] = p["hairline"] - 0.3 * g["thinning"]                        # recedes
    hair = _rgb(p, "hair")
    for name, amount in (("hair", g["greying"]), ("brow", g["brow_greying"])):
        a = amount[..., None]                        # grey hairs: mid grey at first, whiter later
        colour = hair + ((0.5 + 0.4 * a) * np.array([1.0, 1.0, 0.98], np.float32) - hair) * a
        for j, ch in enumerate("rgb"):
            q[f"{name}_{ch}"] = colour[..., j]
    sa, ch = g["skin_age"], g["child"]
    for j, (older, younger) in enumerate(((0.05, 0.03), (0.08, 0.02), (0.12, 0.01))):
        q[f"skin_{'rgb'[j]}"] = p[f"skin_{'rgb'[j]}"] * (1.0 - older * sa) * (1.0 + younger * ch)
    return q


def _paint_age_lines(img, u, v, px, p, g, skin, face):
    """Lines, folds and sag on the skin (painted after the face, before hair and features):
    forehead lines, frown lines, under-eye bags, nasolabial folds, marionette lines, jowls (all
    inside the face's coverage `face`), neck bands. Each at its curve's strength
    (`exprengine.data.aging`); none below 27 years."""
    soft = px * 1.6
    outside = img.copy()                       # what the face's edge and the neck keep
    crease, light = skin * 0.62, skin * 1.08
    for j, v0 in enumerate((-0.66, -0.77, -0.88)):                              # forehead lines
        half = 0.42 - 0.05 * j
        d = np.maximum(np.abs(v - (v0 + 0.07 * u * u)) - 0.006, np.abs(u) - half)
        fade = np.clip(1.0 - (u / half) ** 2, 0, 1) ** 0.5
        _paint(img, crease, _coverage(d, soft) * fade * g["forehead"] * (0.6 - 0.12 * j))
    for side in (-1, 1):
        frown = _segment(u, v, side * 0.045, -0.46, side * 0.055, -0.36, 0.006)  # frown lines
        _paint(img, crease, _coverage(frown, soft) * 0.5 * g["crows_feet"])
        eu = u - side * p["eye_spacing"]                                         # under-eye bags
        w = p["eye_size"]
        bag = _ellipse(eu, v, 0, -0.24 + 0.035, w * 1.02, 0.12)
        below = np.clip((v - (-0.24 + 0.06)) / 0.03, 0, 1)
        _paint(img, skin * 0.8, _coverage(bag, soft) * below * 0.6 * g["eye_bags"])
        _paint(img, skin * 0.55, _coverage(np.abs(bag) - 0.008, soft) * below * g["eye_bags"])
        tip = -0.12 + p["nose_length"]                                           # nasolabial folds
        mw = p["mouth_width"]
        pts = ((0.14, tip - 0.03), (0.22, tip + 0.08), (mw + 0.06, 0.5), (mw + 0.1, 0.7))
        fold = np.minimum.reduce([_segment(u * side, v, *pts[i], *pts[i + 1], 0.008) for i in range(3)])
        _paint(img, light, _coverage(fold - 0.02, soft * 3) * 0.35 * g["nasolabial"])
        _paint(img, crease, _coverage(fold, soft) * g["nasolabial"])
        mv = 0.58 + g["mouth_v"]                                                 # marionette lines
        marionette = _segment(u * side, v, mw + 0.01, mv + 0.03, mw + 0.05, mv + 0.3, 0.007)
        _paint(img, crease, _coverage(marionette, soft) * 0.7 * g["sag"])
        jowl = _ellipse(u * side, v, mw + 0.2, mv + 0.36, 0.16, 0.2)             # jowls: a shadowed fold
        fold_line = np.maximum(np.abs(jowl) - 0.007, mw + 0.12 - u * side)
        _paint(img, skin * 0.8, _coverage(jowl, soft * 4) * (u * side > mw + 0.12) * 0.45 * g["sag"])
        _paint(img, crease, _coverage(fold_line, soft) * (v < mv + 0.36) * 0.6 * g["sag"])
        neck = _segment(u * side, v, 0.17, p["face_height"] + 0.05, 0.2, 1.9, 0.008)
        _paint(outside, crease, _coverage(neck, soft) * 0.5 * g["sag"])          # neck bands
    img *= face[..., None]                     # the marks stay on the face, the bands on the neck
    img += outside * (1.0 - face[..., None])


# --- the renderer ---------------------------------------------------------------------------------
def render(identities: Identity | list[Identity], aus: np.ndarray,
           age: float | Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Render faces: identities (one or N) with AU intensities [17] or [N,17] (0..5) -> uint8 [N,128,128,3].

    `age`: years (0..70), one for all faces or one per face; one identity with N ages draws that
    face at each age. None draws the faces as they have always been drawn, which is each face at
    REFERENCE_AGE (25): `render(ids, aus, age=25)` is bit-identical to `render(ids, aus)`. How
    the face changes with age (proportions by cardioidal strain, features, lines and folds, sag,
    greying and thinning hair) and the sources: `exprengine.data.aging`. UserError for an age
    outside 0..70 or an age list of another length than the faces.
    """
    ids = [identities] if isinstance(identities, Identity) else list(identities)
    if age is not None and np.ndim(age) == 1 and len(ids) == 1:
        ids = ids * len(age)                          # one face at several ages
    aus = np.asarray(aus, np.float32)
    if aus.ndim == 1:
        aus = np.broadcast_to(aus, (len(ids), NUM_AUS))
    if len(ids) == 1 and aus.shape[0] > 1:
        ids = ids * aus.shape[0]
    assert aus.shape == (len(ids), NUM_AUS), f"aus must be [{NUM_AUS}] or [{len(ids)},{NUM_AUS}], got {aus.shape}"
    p = _params(ids)
    k = {name: np.clip(aus[:, i], 0, AU_SCALE)[:, None, None] / AU_SCALE for name, i in AU_INDEX.items()}
    u, v = _face_coordinates(p)
    au_ = np.abs(u)
    px = 1.0 / p["scale"]
    n = len(ids)

    # background with a vertical gradient
    img = np.broadcast_to(_rgb(p, "bg"), (n, SIZE, SIZE, 3)) * (1 + p["bg_gradient"][..., None] * v[..., None] / 2)
    img = np.ascontiguousarray(img, np.float32)
    g = NEUTRAL                                       # Python 1.0 / 0.0: exact no-ops on float32
    if age is not None:                               # the face at its age; the background stays
        g = age_params(ages_array(age, n))
        u, v, px = _grow(u, v, px, g)
        au_ = np.abs(u)
        p = _aged(p, g)
    skin, hair = _rgb(p, "skin"), _rgb(p, "hair")
    brow_hair = hair if age is None else _rgb(p, "brow")

    # hair behind the head, neck, then the face (the jaw drops with AU26)
    _paint(img, hair, _coverage(_ellipse(u, v, 0, -0.25, p["face_width"] + p["hair_volume"], 1.25), px))
    if age is not None:                               # the scalp shows through sparse or thinning hair
        scalp = _coverage(_ellipse(u, v, 0, -0.25, p["face_width"] + 0.02, 1.22), px)
        _paint(img, skin * 0.96, scalp * (1 - g["hair_density"]))
    _paint(img, skin * 0.82, _coverage(np.maximum(au_ - 0.45 * g["neck"], -(v - 0.6)), px) * (v < 1.9 * g["neck_end"]))
    jaw_drop = 0.14 * k["AU26"] + g["chin_sag"]
    lower_b = p["face_height"] + jaw_drop
    b = np.where(v > 0, lower_b, p["face_height"])
    face_d = _ellipse(u, v, 0, 0, p["face_width"], b)
    square = np.maximum(au_ - p["face_width"] * (0.92 + 0.06 * p["jaw"]), v - lower_b * (0.85 + 0.1 * p["jaw"]))
    face_d = np.where(v > 0.3, np.maximum(face_d, square * (0.3 + 0.7 * p["jaw"])), face_d)
    face = _coverage(face_d, px)
    shade = 1.0 + 0.22 * (p["light_u"] * u + p["light_v"] * v)
    shade = shade - 0.18 * np.clip(face_d + 0.25, 0, 0.25) / 0.25          # darker towards the outline
    _paint(img, skin * shade[..., None], face)
    if age is not None:
        _paint_age_lines(img, u, v, px, p, g, skin, face)
    # hair on top of the forehead
    fringe = np.maximum(v - p["hairline"] - (0.08 + g["temples"]) * np.cos(3 * u),
                        _ellipse(u, v, 0, -0.2, p["face_width"] + 0.12, 1.3))
    _paint(img, hair, _coverage(fringe, px) * g["hair_density"])

    # cheeks (AU06 raises and brightens them)
    cheek_v = 0.18 - 0.14 * k["AU06"]
    for side in (-1, 1):
        blush = _coverage(_ellipse(u, v, side * 0.55, cheek_v, 0.2, 0.13), px * 6)
        _paint(img, skin * np.array([1.08, 0.86, 0.84], np.float32), blush * (0.25 + g["blush"] + 0.45 * k["AU06"]))

    # eyes: almond between two lid curves; AU05 / AU07 / AU06 / AU45 move the lids
    upper = (0.075 + 0.075 * k["AU05"] - 0.045 * k["AU07"]) * (1 - 0.97 * k["AU45"]) * g["lid_open"]
    lower = (0.06 - 0.03 * k["AU07"] - 0.035 * k["AU06"]) * (1 - 0.97 * k["AU45"]) * g["lid_open"]
    ev = -0.24
    for side in (-1, 1):
        eu = u - side * p["eye_spacing"]
        w = p["eye_size"]
        t = np.clip(1 - (eu / w) ** 2, 0, 1)
        lid_top, lid_bottom = ev - upper * t - 0.005, ev + lower * t + 0.005
        eye_d = np.maximum(np.maximum(lid_top - v, v - lid_bottom), np.abs(eu) - w)
        eye = _coverage(eye_d, px)
        _paint(img, np.array([0.93, 0.93, 0.9], np.float32), eye)
        iris = _coverage(_ellipse(eu, v, 0, ev, 0.075 * g["iris"], 0.075 * g["iris"]), px) * eye
        _paint(img, _rgb(p, "iris"), iris)
        _paint(img, np.zeros(3, np.float32), _coverage(_ellipse(eu, v, 0, ev, 0.032 * g["iris"], 0.032 * g["iris"]), px) * eye)
        lash = _coverage(np.maximum(np.abs(v - lid_top) - 0.012, np.abs(eu) - w), px)
        _paint(img, hair * 0.4, lash * 0.9)
        # crow's feet (AU06)
        for dv in (-0.04, 0.0, 0.04):
            line = _segment(eu * side, v, w + 0.04, ev + dv, w + 0.13, ev + 1.8 * dv - 0.01, 0.008)
            _paint(img, skin * 0.6, _coverage(line, px) * np.maximum(k["AU06"] * 0.8, 0.6 * g["crows_feet"]))
        # brows: inner end (AU01 up, AU04 down and in), outer end (AU02 up)
        inner_u = 0.12 + 0.06 * (1 - k["AU04"])
        inner_v = -0.5 - 0.2 * k["AU01"] + 0.1 * k["AU04"] + g["brow_drop"]
        outer_v = -0.48 - 0.2 * k["AU02"] + 0.03 * k["AU04"] + g["brow_drop"]
        mid_v = (inner_v + outer_v) / 2 - 0.05
        bu = u * side
        brow = np.minimum(_segment(bu, v, inner_u, inner_v, 0.4, mid_v, p["brow_thickness"]),
                          _segment(bu, v, 0.4, mid_v, 0.66, outer_v, p["brow_thickness"] * 0.8))
        _paint(img, brow_hair * 0.8, _coverage(brow, px) * g["brow_alpha"])
    # furrows between the brows (AU04)
    for side in (-1, 1):
        furrow = _segment(u, v, side * 0.05, -0.48, side * 0.06, -0.34, 0.01)
        _paint(img, skin * 0.55, _coverage(furrow, px) * k["AU04"])

    # nose: bridge shading, nostrils (AU09 lifts them), wrinkles (AU09)
    tip = -0.12 + p["nose_length"]
    bridge = _segment(u, v, 0.06, -0.15, 0.08, tip - 0.04, 0.012)
    _paint(img, skin * 0.78, _coverage(bridge, px) * 0.7 * g["bridge"])
    nostril_v = tip - 0.045 * k["AU09"]
    for side in (-1, 1):
        nostril = _ellipse(u, v, side * 0.075 * g["nostril"], nostril_v, 0.045 * g["nostril"], 0.022 * g["nostril"])
        _paint(img, skin * 0.45, _coverage(nostril, px))
    for i, dv in enumerate((-0.1, -0.05, 0.0)):
        wrinkle = _segment(u, v, -0.09 + 0.01 * i, dv, 0.09 - 0.01 * i, dv - 0.01, 0.009)
        _paint(img, skin * 0.6, _coverage(wrinkle, px) * k["AU09"])

    # mouth: corners (AU12 up/out, AU15 down, AU20 wider, AU14 in), lips (AU23 thinner,
    # AU10 upper up, AU17 lower up), opening (AU25, AU26)
    mv = 0.55 + 0.05 * k["AU26"] + g["mouth_v"]
    mw = p["mouth_width"] * (1 + 0.3 * k["AU20"] + 0.18 * k["AU12"] - 0.08 * k["AU14"])
    corner = -0.13 * k["AU12"] + 0.12 * k["AU15"] + 0.02 * k["AU20"] + g["corner_down"]
    x = np.clip(u / mw, -1, 1)
    t = 1 - x ** 2                                      # 1 at the middle, 0 at the corners
    centre = mv + corner * x ** 2
    gap = (0.07 * k["AU25"] + 0.22 * k["AU26"]) * t
    thick = p["lip_thickness"] * (1 - 0.65 * k["AU23"])
    up_open = centre - gap * 0.35 - 0.03 * k["AU10"] * t
    lo_open = centre + gap * 0.65 - 0.04 * k["AU17"] * t
    upper_lip = up_open - thick * (0.4 + 0.6 * t) - 0.05 * k["AU10"] * t
    lower_lip = lo_open + thick * 1.2 * (0.4 + 0.6 * t)
    inside = np.abs(u) - mw
    lips = _coverage(np.maximum(np.maximum(upper_lip - v, v - lower_lip), inside), px)
    lip_colour = skin * (np.array([0.85, 0.55, 0.55], np.float32) + g["lip_tint"])
    _paint(img, lip_colour, lips)
    mouth = _coverage(np.maximum(np.maximum(up_open - v, v - lo_open), inside + 0.01), px)
    _paint(img, np.array([0.25, 0.05, 0.06], np.float32), mouth)
    teeth = _coverage(np.maximum(np.maximum(up_open - v, v - (up_open + 0.05)), inside + 0.04), px) * mouth
    _paint(img, np.array([0.95, 0.93, 0.88], np.float32), teeth)
    seam = _coverage(np.maximum(np.abs(v - centre) - 0.006, inside), px) * (1 - mouth)
    _paint(img, lip_colour * 0.55, seam)
    # dimples (AU14)
    for side in (-1, 1):
        dimple = _ellipse(u, v, side * (mw + 0.07), mv + corner - 0.01, 0.022, 0.035)
        _paint(img, skin * 0.6, _coverage(dimple, px * 2) * k["AU14"])
    # chin boss (AU17 raises it), jaw outline shadow moves with AU26 via the face shape
    chin_v = lower_b * 0.82 - 0.1 * k["AU17"]
    chin = _coverage(_ellipse(u, v, 0, chin_v, 0.2, 0.09), px * 4)
    _paint(img, skin * np.clip(shade, 0.8, 1.3)[..., None] * 1.12, chin * (0.15 + 0.5 * k["AU17"]))

    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


# --- expressions to render, data sets -------------------------------------------------------------
def sample_aus(rng: np.random.Generator, count: int) -> np.ndarray:
    """AU vectors [count,17] as a face data set has them: mostly a few AUs at low to moderate
    intensity, often a preset expression, never both AUs of a conflicting pair."""
    from exprengine.aus import CONFLICTS, PRESETS
    presets = [p for p in PRESETS.values() if p.aus]
    out = np.zeros((count, NUM_AUS), np.float32)
    for row in out:
        if rng.random() < 0.35:
            preset = presets[rng.integers(len(presets))]
            for name in preset.aus:
                row[AU_INDEX[name]] = rng.uniform(0.5, 3.0)
        active = rng.random(NUM_AUS) < 0.15
        row[active] = np.maximum(row[active], rng.uniform(0.2, 2.5, int(active.sum())))
        for c in CONFLICTS:
            i, j = AU_INDEX[c.a], AU_INDEX[c.b]
            if row[i] > 0 and row[j] > 0:
                row[i if rng.random() < 0.5 else j] = 0.0
    return out


class SyntheticFaces:
    """A map-style data set over the synthetic world (a torch Dataset by duck typing).

    Sample i shows identity `identities[0] + i % count` with AUs drawn from (seed, i): both
    depend only on (seed, i), so any sample can be re-rendered, and rendered again with other
    AUs (`render_target`) for a ground-truth edit. Train and test use disjoint identity
    ranges (held-out identities).

        ds = SyntheticFaces(10000, seed=0, identities=(0, 900))
        image, aus, identity = ds[5]          # float32 [3,S,S] in [-1,1], [17] (0..5), int
    """

    def __init__(self, length: int, seed: int = 0, identities: tuple[int, int] = (0, 1000), size: int = SIZE):
        assert length >= 1 and identities[1] > identities[0], (length, identities)
        self.length, self.seed, self.identities, self.size = length, seed, identities, size

    def __len__(self) -> int:
        return self.length

    def identity_index(self, i: int) -> int:
        """The identity index of sample `i`: `identities[0] + i % (identities[1] - identities[0])`."""
        first, stop = self.identities
        return first + i % (stop - first)

    def identity(self, i: int) -> Identity:
        """Sample `i`'s Identity, drawn from (seed, identity_index(i))."""
        return Identity.sample(np.random.default_rng([self.seed, self.identity_index(i)]))

    def aus(self, i: int) -> np.ndarray:
        """Sample `i`'s AU intensities, float32 [17] on the OpenFace 0..5 scale, drawn from (seed, i) by
        `sample_aus`.
        """
        return sample_aus(np.random.default_rng([self.seed, 1_000_003, i]), 1)[0]

    def render_target(self, i: int, aus: np.ndarray) -> np.ndarray:
        """Sample i's face with other AUs: uint8 [S,S,3]."""
        return resize_faces(render(self.identity(i), aus), self.size)[0]

    def __getitem__(self, i: int):
        import torch

        from exprengine.pixels import network_tensor
        if not 0 <= i < self.length:
            raise IndexError(i)
        aus = self.aus(i)
        image = resize_faces(render(self.identity(i), aus), self.size)[0]
        x = network_tensor(image[None])[0]
        return x, torch.from_numpy(aus), self.identity_index(i)


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N,128,128,3] -> [N,size,size,3] by area averaging (size must divide 128)."""
    if size == SIZE:
        return faces
    assert SIZE % size == 0, f"size must divide {SIZE}, got {size}"
    f = SIZE // size
    n = faces.shape[0]
    return np.rint(faces.reshape(n, size, f, size, f, 3).mean(axis=(2, 4))).astype(np.uint8)


def backgrounds(identities: list[Identity]) -> np.ndarray:
    """uint8 [N,128,128,3]: each identity's background alone (its colour and vertical gradient),
    exactly as `render` paints it before the head, at every age and expression."""
    p = _params(identities)
    _, v = _face_coordinates(p)
    img = np.broadcast_to(_rgb(p, "bg"), (len(identities), SIZE, SIZE, 3)) * (1 + p["bg_gradient"][..., None] * v[..., None] / 2)
    return np.clip(np.rint(np.ascontiguousarray(img, np.float32) * 255), 0, 255).astype(np.uint8)


def background_masks(identities: list[Identity]) -> np.ndarray:
    """bool [N,128,128]: pixels outside the head (hair and face, the jaw fully dropped), in each pose.

    No AU changes these pixels; an edit that does is changing the background."""
    p = _params(identities)
    u, v = _face_coordinates(p)
    head = _ellipse(u, v, 0, -0.25, p["face_width"] + p["hair_volume"] + 0.08, 1.33) < 0
    face = _ellipse(u, v, 0, 0, p["face_width"] + 0.08, p["face_height"] + 0.25) < 0
    return ~(head | face)
