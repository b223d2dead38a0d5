"""How the synthetic faces change with age: the curves `render(identity, aus, age)` follows.

Every age effect is a smooth function of the age in years (0..70), the same for every identity
(an identity keeps its face shape, colours, pose and background at every age; only age moves
these). Each curve is a monotone cubic (Fritsch-Carlson, C1: no jumps, no kinks) through the
knots of `AGE_CURVES`, flat before its first knot and after its last.

The reference age. The expression world's faces, drawn before ages existed (`render(identity,
aus)` with no age), are young adults: full hair, no lines, adult proportions. They are the faces
at `REFERENCE_AGE` = 25 years: growth has ended by 20 and no adult-aging curve starts before
27, so at 25 every effect is exactly neutral and `render(identity, aus, age=25)` is
bit-identical to `render(identity, aus)`.

Growth (0..20 years). The proportions of the head follow the *cardioidal strain* model of
craniofacial growth (Pittenger & Shaw 1975, "Aging faces as viscal-elastic events", J. Exp.
Psychol.: Human Perception and Performance 1(4); Todd, Mark, Shaw & Pittenger 1980, "The
perception of human growth", Scientific American 242(2)): in polar coordinates about the
centre of the head, with theta measured from straight up, growth maps the radius
R -> R (1 + k (1 - cos theta)) and keeps theta. The crown hardly moves, the lower face grows
most: an infant has a large cranium over a small face, eyes at or below the head's
mid-height, a small nose and jaw; the face lengthens through adolescence. Here k runs from 0
(birth) to `ADULT_STRAIN` with the growth curve, and the infant's head is drawn `INFANT_SCALE`
times larger in the frame (a face crop aligned on the eyes shows a child's head big). On top of
the strain, features with their own growth: the eyes are near adult size early (so large
for the face), the nose and mouth grow late (small in a child), brows are faint and hair sparse
in infancy, cheeks round and rosy in childhood. The growth curve's shape (fast in infancy,
slower in childhood, a pubertal spurt, complete by about 20) follows the general pattern of
facial growth described in Farkas' anthropometric norms (Farkas 1994, "Anthropometry of the
Head and Face") and Enlow & Hans (1996, "Essentials of Facial Growth"); the knot values are
hand-set, not fitted to those tables: the renderer is a cartoon, and the values were chosen
so that the rendered ages read as ages on a contact sheet (docs/images/synthetic_ages.png).

Adult aging (27..70 years), also hand-set, in the order the literature describes them appear
(skin-aging atlases grade forehead lines, crow's feet and nasolabial folds from the thirties,
under-eye bags and jowls from the late forties and fifties, e.g. Bazin & Doublet 2007, "Skin
Aging Atlas, vol. 1"; greying starts in the mid-thirties on average and most people in their
fifties have some grey, e.g. Panhard, Lozano & Loussouarn 2012, Br. J. Dermatol. 167(4), which
revisits the "50/50/50" rule of thumb): forehead lines, crow's feet, frown lines between the
brows, nasolabial folds, under-eye bags, then sag (jowls, marionette lines, lower brows, hooded
lids, a longer upper lip and nose, thinner and paler lips, mouth corners down), greying then
thinning hair (a receding hairline, scalp showing through) and brows, a sallower and darker
skin tone.

    g = age_params(np.array([1.0, 35.0, 60.0]))     # dict: name -> float32 [3,1,1]
    g["growth"][:, 0, 0]                              # array([0.3, 1., 1.], dtype=float32)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from exprengine.ages import MAX_AGE, check_age
from exprengine.errors import UserError

#: The age (years) of the faces `render` draws when given no age: every curve is neutral there.
REFERENCE_AGE = 25.0
#: The cardioidal strain parameter k of an adult head (0 at birth); hand-set.
ADULT_STRAIN = 0.45
#: How much larger an infant's head is drawn in the frame than an adult's (1 once grown); hand-set.
INFANT_SCALE = 1.18
#: The fraction of the strain applied across the face (the frontal view's widths; 1 = the profile
#: model's isotropic strain): a child's face is narrower than its cranium, but its cheeks are full.
WIDTH_STRAIN = 0.55
#: The centre of the strain in face space (u, v): the middle of the cranium.
STRAIN_CENTRE_V = -0.25

#: name -> knots ((age in years, value), ...), ages increasing. Values 0..1 (a fraction or a
#: strength). Growth runs 0 -> 1 and ends by 20; every adult curve starts at 0 at 27 or later.
AGE_CURVES: dict[str, tuple[tuple[float, float], ...]] = {
    # fraction of craniofacial growth completed (strain, nose, mouth, jaw, eye size relative)
    "growth": ((0, 0.0), (1, 0.2), (2, 0.3), (4, 0.4), (6, 0.48), (9, 0.58), (12, 0.7),
               (14, 0.8), (16, 0.9), (18, 0.97), (20, 1.0)),
    # baby fat and rosy cheeks, softer features: 1 at birth, gone by the late teens
    "child": ((0, 1.0), (3, 0.75), (6, 0.5), (10, 0.25), (14, 0.08), (18, 0.0)),
    # how sparse an infant's hair is (1 - density): a baby's few hairs, full by about 4
    "sparse": ((0, 0.75), (1, 0.45), (2, 0.2), (4, 0.0)),
    # forehead (horizontal) lines
    "forehead": ((27, 0.0), (35, 0.35), (45, 0.65), (60, 0.9), (70, 1.0)),
    # crow's feet at the outer eye corners, frown lines between the brows
    "crows_feet": ((30, 0.0), (40, 0.35), (55, 0.75), (70, 1.0)),
    # nasolabial folds (nose to mouth corners)
    "nasolabial": ((27, 0.0), (35, 0.25), (45, 0.55), (60, 0.85), (70, 1.0)),
    # bags under the eyes
    "eye_bags": ((33, 0.0), (45, 0.35), (60, 0.75), (70, 1.0)),
    # sag: jowls, marionette lines, brows and lids lower, longer upper lip and nose, thinner lips
    "sag": ((38, 0.0), (50, 0.35), (60, 0.7), (70, 1.0)),
    # greying of the scalp hair (fraction of grey), then of the brows, later and less
    "greying": ((30, 0.0), (40, 0.15), (50, 0.45), (60, 0.75), (70, 0.92)),
    "brow_greying": ((40, 0.0), (55, 0.3), (70, 0.65)),
    # thinning hair: a receding hairline, the scalp showing through
    "thinning": ((35, 0.0), (50, 0.25), (60, 0.45), (70, 0.6)),
    # skin tone: sallower (less red and blue) and a little darker
    "skin_age": ((30, 0.0), (50, 0.45), (70, 1.0)),
}


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson (1980) slopes of a monotone piecewise cubic through (x, y), flat at the
    ends: the weighted harmonic mean of the neighbouring secants, 0 where they differ in sign."""
    h = np.diff(x)
    delta = np.diff(y) / h
    m = np.zeros_like(y)
    for i in range(1, len(x) - 1):
        if delta[i - 1] * delta[i] > 0:
            w1, w2 = 2 * h[i] + h[i - 1], h[i] + 2 * h[i - 1]
            m[i] = (w1 + w2) / (w1 / delta[i - 1] + w2 / delta[i])
    return m


def age_curve(name: str, ages: np.ndarray) -> np.ndarray:
    """The curve `name` of `AGE_CURVES` at `ages` (years, any shape): float64, same shape.

    A monotone cubic Hermite interpolant through the knots (C1, no overshoot), exactly the first
    knot's value before it and the last knot's after it.
    """
    knots = np.asarray(AGE_CURVES[name], np.float64)
    x, y = knots[:, 0], knots[:, 1]
    a = np.asarray(ages, np.float64)
    m = _slopes(x, y)
    i = np.clip(np.searchsorted(x, a, side="right") - 1, 0, len(x) - 2)
    h = x[i + 1] - x[i]
    t = np.clip((a - x[i]) / h, 0.0, 1.0)
    t2, t3 = t * t, t * t * t
    value = ((2 * t3 - 3 * t2 + 1) * y[i] + (t3 - 2 * t2 + t) * h * m[i]
             + (-2 * t3 + 3 * t2) * y[i + 1] + (t3 - t2) * h * m[i + 1])
    return np.where(a <= x[0], y[0], np.where(a >= x[-1], y[-1], value))


def ages_array(age: float | Sequence[float] | np.ndarray, count: int) -> np.ndarray:
    """`age` as float64 [count] years: one age for all `count` faces, or one per face.

    UserError for an age outside 0..70 (or not a finite number) or a sequence of another length.
    """
    if np.ndim(age) == 0:
        return np.full(count, check_age(age.item() if isinstance(age, np.ndarray) else age), np.float64)
    if np.ndim(age) != 1 or len(age) != count:
        raise UserError(f"`age` must be one age or one per face ({count}), got shape {np.shape(age)}")
    return np.array([check_age(a) for a in age], np.float64)


#: The age parameters at REFERENCE_AGE as Python numbers: multiplying by 1.0 or adding 0.0 leaves
#: a float32 array bit-identical, so `render` without an age draws exactly what it always drew.
NEUTRAL: dict[str, float] = {
    "growth": 1.0, "child": 0.0, "sparse": 0.0, "forehead": 0.0, "crows_feet": 0.0, "nasolabial": 0.0,
    "eye_bags": 0.0, "sag": 0.0, "greying": 0.0, "brow_greying": 0.0, "thinning": 0.0, "skin_age": 0.0,
    "hair_density": 1.0, "temples": 0.0, "blush": 0.0, "lid_open": 1.0, "iris": 1.0, "brow_drop": 0.0,
    "brow_alpha": 1.0, "bridge": 1.0, "nostril": 1.0, "mouth_v": 0.0, "corner_down": 0.0, "neck": 1.0, "neck_end": 1.0, "chin_sag": 0.0,
    "lip_tint": 0.0,
}


def age_params(ages: np.ndarray) -> dict[str, np.ndarray]:
    """Every age parameter the renderer reads, for faces at `ages` (float [N] years, 0..70):
    name -> float32 [N,1,1] (broadcast over the image). At REFERENCE_AGE each equals NEUTRAL's
    value exactly.

    The curves of AGE_CURVES under their own names, and what the renderer derives from them:
    hair_density (1 - sparse, then less with thinning), temples (hairline recession at the
    temples), blush (rosy cheeks in childhood, fading with age), lid_open (a child's wide-open
    eyes, an old person's hooded lids), iris (a child's irises large for the face), brow_drop,
    brow_alpha (faint infant brows, thinning old ones), bridge (a child's flat nose bridge),
    nostril (size), mouth_v (the upper lip lengthens), corner_down (mouth corners sag), neck
    (width); lip_tint (float32 [N,1,1,3]: redder lips in childhood, paler with age).
    """
    a = np.asarray(ages, np.float64)
    if a.ndim != 1 or not (np.isfinite(a).all() and (a >= 0).all() and (a <= MAX_AGE).all()):
        raise UserError(f"`age` must be between 0 and {MAX_AGE:g} years, got {ages!r}")
    c = {name: age_curve(name, a) for name in AGE_CURVES}
    young = 1.0 - c["growth"]                   # 0 once grown
    d = dict(c)
    d["hair_density"] = (1.0 - c["sparse"]) * (1.0 - 0.55 * c["thinning"])
    d["temples"] = 0.12 * c["thinning"]
    d["blush"] = 0.3 * c["child"] - 0.15 * c["skin_age"]
    d["lid_open"] = (1.0 + 0.25 * young) * (1.0 - 0.35 * c["sag"])
    d["iris"] = 1.0 + 0.3 * young
    d["brow_drop"] = 0.05 * c["sag"]
    d["brow_alpha"] = (1.0 - 0.6 * np.minimum(1.5 * young, 1.0)) * (1.0 - 0.35 * c["thinning"])
    d["bridge"] = 1.0 - 0.8 * young
    d["nostril"] = (1.0 - 0.35 * young) * (1.0 + 0.15 * c["sag"])
    d["mouth_v"] = 0.05 * c["sag"]
    d["corner_down"] = 0.035 * c["sag"]
    d["neck"] = 1.0 + 0.15 * c["child"]
    d["chin_sag"] = 0.06 * c["sag"]
    d["neck_end"] = 1.0 + young
    lip_red = 0.12 * c["child"] - 0.12 * c["sag"]
    out = {k: v.astype(np.float32)[:, None, None] for k, v in d.items()}
    out["lip_tint"] = (lip_red[:, None] * np.array([1.0, -0.5, -0.5])).astype(np.float32)[:, None, None, :]
    return out
