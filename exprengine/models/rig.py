"""The landmark-driven AU rig: edits real faces with no training data.

Where the generators (generator.py) learn what an AU looks like from a face world, the rig
moves the face the way FACS describes each AU's muscle action (Ekman, Friesen & Hager,
*Facial Action Coding System: The Manual*, 2002; the "appearance changes" of each AU) and
paints what a warp cannot show (a closed lid, the inside of an open mouth):

    q      = R^T (p - o) / s                      the 478 mesh points in the face's frame
    d      = sum_k  x_k * F_k(q)                  AU fields, face units per intensity unit
    disp   = s * R d                              back to the crop's coordinates
    v(y)   = sum_i K_i(y) (-disp_i) / (sum_i K_i(y) + c)      backward flow, at the moved
                                                  points y_i = p_i + disp_i (Gaussian RBF of
                                                  width sigma_i = the mesh's local spacing)
    W      = grid_sample(image, grid + v)         the warped face (bilinear)
    C      = W, with the mouth cavity painted inside the parted inner lips
    A      = 1 - clamp(|v| / 0.5 px + cavity)     1 keeps the input pixel
    output = A * image + (1 - A) * C              (the same blend as the generators)

o is the midpoint of the eye centres (mean of each eye's two corners), R turns the image
axes onto the eye line (x: the subject's left, y: down the face), s is the inter-ocular
distance; so every number of the rig is in inter-ocular distances ("IOD", about 63 mm on an
adult) and follows the head's roll and size. Intensities x are on the OpenFace 0..5 scale;
the network-space input is x / 5 like every engine's.

Forward takes landmarks: float32 [N,478,2], the MediaPipe Face Landmarker mesh in the
crop's pixels (x right, y down, pixel i spanning [i, i+1)). The mesh topology (which index
is which point) is MediaPipe's canonical face mesh; the index lists below are facts about
that topology, checked against `mediapipe`'s own connection lists in tests/test_rig.py.

Everything is plain tensor arithmetic (no data-dependent control flow), so the module
exports to ONNX (GridSample) and compiles like the generators.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from exprengine.aus import AU_NAMES, AU_SCALE, NUM_AUS

NUM_POINTS = 478

#: What each AU does on real photos through the rig at intensity 2, as `exprengine presets`
#: says it: "moves" (plainly visible, and MediaPipe's proxy moves >= 0.15 on at least 60 % of
#: the photo set's faces), "seen" (visible on the contact sheets, but the proxy reads it on under
#: half the faces), "slight" (a small move by design), "creases" (the skin's folds painted,
#: which MediaPipe's blendshapes barely read). Measured with `exprengine eval --photos`
#: (bench/results/photo-eval-rig-cpu.md).
ON_PHOTOS = {"AU01": "moves", "AU02": "moves", "AU04": "seen", "AU05": "seen", "AU06": "creases",
             "AU07": "seen", "AU09": "creases", "AU10": "slight", "AU12": "moves", "AU14": "slight",
             "AU15": "seen", "AU17": "slight", "AU20": "moves", "AU23": "slight", "AU25": "slight",
             "AU26": "moves", "AU45": "moves"}

#: What each word of ON_PHOTOS says, for people.
ON_PHOTOS_WORDS = {"moves": "moves plainly", "seen": "moves visibly; MediaPipe reads it on under half the faces",
                   "slight": "moves slightly", "creases": "moves a little, creases painted"}


def describe_aus() -> str:
    """The text of `exprengine presets`: the 17 AUs with what the rig does with each on real
    photos at intensity 2 (ON_PHOTOS, measured in bench/results/photo-eval-rig-cpu.md), the
    presets and the conflicting pairs (`exprengine.aus`, SPEC sections 2-4)."""
    from exprengine.aus import AU_DESCRIPTIONS, AU_NAMES, CONFLICTS, DEFAULT_CAP, PRESETS
    width = max(len(AU_DESCRIPTIONS[n]) for n in AU_NAMES)
    lines = ["Action Units (OpenFace order; intensities 0..5, network input = intensity / 5), and what the rig "
             "(the default for photos and video) does with each on real photos at intensity 2:"]
    lines += [f"  {n}  {AU_DESCRIPTIONS[n]:<{width}}  {ON_PHOTOS_WORDS[ON_PHOTOS[n]]}" for n in AU_NAMES]
    lines += ["", f"Presets (each AU at the preset's intensity, default 1.0; cap {DEFAULT_CAP:g}):"]
    lines += [f"  {p.name:<10} {' + '.join(p.aus) or '(no AUs)'}" + (f"   [{p.note}]" if p.note else "")
              for p in PRESETS.values()]
    lines += ["", "Conflicting pairs (warned about; refused with --strict):"]
    return "\n".join(lines + [f"  {c.a} + {c.b}: {c.why}" for c in CONFLICTS])


#: The crop a rig edits, in IOD (see below) about the eye midpoint: its centre CROP_CENTRE below
#: it, down the face, and its side CROP_SIDE: from above the forehead's top (about -0.9) to below
#: the chin dropped by AU26 at intensity 5 (about 2.0 + 0.65), with room for the flow to fade.
CROP_CENTRE, CROP_SIDE = 0.7, 4.0

# --- MediaPipe canonical face mesh: index lists (subject's right = image left on a frontal face) ---
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (362, 263)
#: eyelid margins, outer corner to inner corner; the lower list pairs point-for-point with the upper
RIGHT_UPPER_LID = (246, 161, 160, 159, 158, 157, 173)
RIGHT_LOWER_LID = (7, 163, 144, 145, 153, 154, 155)
LEFT_UPPER_LID = (466, 388, 387, 386, 385, 384, 398)
LEFT_LOWER_LID = (249, 390, 373, 374, 380, 381, 382)
#: rows of the upper lid's skin above the margin (to the crease, then to the brow), same columns
RIGHT_LID_ROWS = ((247, 30, 29, 27, 28, 56, 190), (113, 225, 224, 223, 222, 221, 189))
LEFT_LID_ROWS = ((467, 260, 259, 257, 258, 286, 414), (342, 445, 444, 443, 442, 441, 413))
RIGHT_BELOW_LID = (110, 24, 23, 22, 26, 112)
LEFT_BELOW_LID = (339, 254, 253, 252, 256, 341)
RIGHT_IRIS, LEFT_IRIS = tuple(range(468, 473)), tuple(range(473, 478))
RIGHT_BROW_INNER, LEFT_BROW_INNER = (107, 66, 55, 65), (336, 296, 285, 295)
RIGHT_BROW_OUTER, LEFT_BROW_OUTER = (70, 63, 46, 53), (300, 293, 276, 283)
RIGHT_BROW, LEFT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107), (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
#: lips: outer and inner contours, without the corners, and the points of each lip's body between them
MOUTH_CORNERS = (61, 291)                      # outer corners (right, left)
INNER_CORNERS = (78, 308)
UPPER_OUTER = (185, 40, 39, 37, 0, 267, 269, 270, 409)
LOWER_OUTER = (146, 91, 181, 84, 17, 314, 405, 321, 375)
UPPER_INNER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
UPPER_BODY = (11, 12, 38, 41, 42, 72, 73, 74, 183, 184, 268, 271, 272, 302, 303, 304, 407, 408)
LOWER_BODY = (15, 16, 62, 76, 77, 85, 86, 89, 90, 96, 179, 180, 292, 306, 307, 315, 316, 319, 320, 325, 403, 404)
#: the inner lip contour as one polygon (right corner, upper lip to the left corner, lower lip back)
INNER_LIP_POLYGON = (78,) + UPPER_INNER + (308,) + LOWER_INNER[::-1]
NOSE_WINGS = ((48, 64, 98, 129), (278, 294, 327, 358))

#: left partners of the right-side points used as anchors
MIRROR = {33: 263, 145: 374, 48: 278, 133: 362}

#: Creases painted by AU06 and AU09 (what their muscles fold, that a warp cannot show): segments
#: in the face's frame, from mesh point `anchor` + start to + end, IOD, given for
#: the subject's right side and mirrored to the left when `mirror`. FACS: AU06 brings crow's
#: feet at the outer eye corners and deepens the furrow below the lower lid; AU09 wrinkles the
#: skin across the root and sides of the nose.
CREASES = {
    "AU06": [(33, (-0.07, -0.04), (-0.24, -0.10), True), (33, (-0.08, 0.01), (-0.26, 0.02), True),
             (33, (-0.07, 0.05), (-0.22, 0.13), True), (145, (-0.18, 0.13), (0.14, 0.15), True)],
    "AU09": [(168, (-0.08, 0.03), (0.08, 0.03), False), (168, (-0.09, 0.11), (0.09, 0.11), False),
             (48, (0.04, -0.22), (0.10, -0.08), True)],
}
CREASE_WIDTH = 0.02           # IOD: the Gaussian half-width of a crease's shadow
#: Where creases can be, in the face's frame (x from, x to, y from, y to; IOD), and the spacing
#: of the grid they are drawn on there (then mapped onto the crop): crow's feet reach about
#: 0.95 IOD out from the eye midpoint, the nose's side folds about 0.55 down.
CREASE_WINDOW, CREASE_STEP = (-1.15, 1.15, -0.35, 0.75), 0.02
CREASE_DEPTH = 0.06           # fraction darker at a crease's centre per intensity unit


@dataclass(frozen=True)
class RigConfig:
    """Everything needed to rebuild a rig (stored in engine manifests like a generator's config)."""

    name: str = "rig"
    family: str = "rig"
    image_size: int = 256           # crop side in pixels
    flow_grid: int = 64             # the flow is interpolated on a grid this size, then upsampled
    num_aus: int = NUM_AUS
    version: int = 1                # bump when the fields below change what an edit looks like

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict (with `family` "rig"), as stored in engine manifests and in
        `rig_sha256`; `from_dict` reads it back.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RigConfig":
        """The config from `to_dict()`'s form, every field checked; UserError otherwise."""
        from exprengine.errors import UserError
        fields = {"name", "family", "image_size", "flow_grid", "num_aus", "version"}
        if not isinstance(d, dict) or set(d) != fields:
            raise UserError(f"a rig config needs exactly the fields {', '.join(sorted(fields))}")
        if d["family"] != "rig" or not isinstance(d["name"], str) or not 1 <= len(d["name"]) <= 64:
            raise UserError("a rig config's family must be 'rig' and its name 1 to 64 characters")
        for key, low, high in (("image_size", 64, 1024), ("flow_grid", 16, 256), ("version", 1, 1)):
            if type(d[key]) is not int or not low <= d[key] <= high:
                raise UserError(f"rig config {key} must be a whole number in {low}..{high}, not {str(d[key])[:40]}")
        if d["num_aus"] != NUM_AUS or d["image_size"] % 4:
            raise UserError(f"rig config needs num_aus {NUM_AUS} and an image_size that is a multiple of 4")
        return cls(**d)


def _mask(*groups: tuple[int, ...], value: float = 1.0) -> torch.Tensor:
    m = torch.zeros(NUM_POINTS)
    for g in groups:
        m[list(g)] = value
    return m


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class FaceRig(nn.Module):
    """AU rig: (image [N,3,S,S] in [-1,1], aus [N,17] = intensity/5, landmarks [N,478,2] crop
    pixels) -> (C [N,3,S,S] in [-1,1], A [N,1,S,S] in [0,1]); `edit` blends A*image + (1-A)*C.

    Constants are in IOD (inter-ocular distances) per intensity unit; see the module
    docstring for the equations and docs/rig.md for each AU's muscle and what it moves.
    """

    # AU45's closure saturates: x / BLINK_FULL of the way (x = 2 closes the eye completely)
    BLINK_FULL = 2.0

    def __init__(self, config: RigConfig | None = None):
        super().__init__()
        self.config = config or RigConfig()
        s, g = self.config.image_size, self.config.flow_grid
        # pixel-centre grids in grid_sample's normalised coordinates (align_corners=False)
        self.register_buffer("grid", self._pixel_grid(s), persistent=False)
        # the mouth's masks and the creases are drawn at half the crop's size, then upsampled
        self.register_buffer("half_grid", self._pixel_grid(s // 2), persistent=False)
        x0, x1, y0, y1 = CREASE_WINDOW
        wx = torch.linspace(x0, x1, int(round((x1 - x0) / CREASE_STEP)) + 1)
        wy = torch.linspace(y0, y1, int(round((y1 - y0) / CREASE_STEP)) + 1)
        yy, xx = torch.meshgrid(wy, wx, indexing="ij")
        self.register_buffer("crease_grid", torch.stack([xx, yy], -1), persistent=False)   # [H,W,2] IOD
        crease = [(AU_NAMES.index(au), (anchor if side > 0 else MIRROR[anchor]), (a[0] * side, a[1]), (b[0] * side, b[1]))
                  for au, segments in CREASES.items() for anchor, a, b, mirror in segments
                  for side in ((1.0, -1.0) if mirror else (1.0,))]
        self.crease_au = [c[0] for c in crease]
        self.crease_anchor = [c[1] for c in crease]
        self.register_buffer("crease_start", torch.tensor([c[2] for c in crease]), persistent=False)
        self.register_buffer("crease_end", torch.tensor([c[3] for c in crease]), persistent=False)
        self.register_buffer("coarse", self._pixel_grid(g).reshape(1, g * g, 2), persistent=False)
        self.register_buffer("upper_lid", _mask(RIGHT_UPPER_LID, LEFT_UPPER_LID), persistent=False)
        self.register_buffer("lower_lid", _mask(RIGHT_LOWER_LID, LEFT_LOWER_LID), persistent=False)
        self.register_buffer("lid_row1", _mask(RIGHT_LID_ROWS[0], LEFT_LID_ROWS[0]), persistent=False)
        self.register_buffer("lid_row2", _mask(RIGHT_LID_ROWS[1], LEFT_LID_ROWS[1]), persistent=False)
        self.register_buffer("below_lid", _mask(RIGHT_BELOW_LID, LEFT_BELOW_LID), persistent=False)
        self.register_buffer("iris", _mask(RIGHT_IRIS, LEFT_IRIS), persistent=False)
        self.register_buffer("eye", _mask(RIGHT_UPPER_LID, LEFT_UPPER_LID, RIGHT_LOWER_LID, LEFT_LOWER_LID,
                                          RIGHT_IRIS, LEFT_IRIS, RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS),
                             persistent=False)
        self.register_buffer("upper_lip", _mask(UPPER_OUTER, UPPER_INNER, UPPER_BODY), persistent=False)
        self.register_buffer("upper_outer", _mask(UPPER_OUTER), persistent=False)
        self.register_buffer("lower_outer", _mask(LOWER_OUTER), persistent=False)
        self.register_buffer("lower_lip", _mask(LOWER_OUTER, LOWER_INNER, LOWER_BODY), persistent=False)
        self.register_buffer("lip", _mask(UPPER_OUTER, UPPER_INNER, UPPER_BODY, LOWER_OUTER, LOWER_INNER,
                                          LOWER_BODY, MOUTH_CORNERS, INNER_CORNERS), persistent=False)
        # blink: each upper-lid column's lower partner; the rows above follow their column
        self.upper_cols = (RIGHT_UPPER_LID + LEFT_UPPER_LID)
        self.lower_cols = (RIGHT_LOWER_LID + LEFT_LOWER_LID)
        self.row1_cols = RIGHT_LID_ROWS[0] + LEFT_LID_ROWS[0]
        self.row2_cols = RIGHT_LID_ROWS[1] + LEFT_LID_ROWS[1]

    @staticmethod
    def _pixel_grid(size: int) -> torch.Tensor:
        """[size,size,2] (x, y) of pixel centres in [-1, 1] (grid_sample, align_corners=False)."""
        c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(c, c, indexing="ij")
        return torch.stack([x, y], dim=-1)

    # --- the face's frame -----------------------------------------------------------------------
    @staticmethod
    def face_frame(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """points [N,478,2] -> origin [N,1,2], x axis [N,1,2], y axis [N,1,2], IOD [N,1,1]."""
        right = points[:, list(RIGHT_EYE_CORNERS)].mean(1, keepdim=True)
        left = points[:, list(LEFT_EYE_CORNERS)].mean(1, keepdim=True)
        origin = (right + left) / 2
        axis = left - right
        iod = axis.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        ex = axis / iod
        ey = torch.stack([-ex[..., 1], ex[..., 0]], dim=-1)
        return origin, ex, ey, iod

    @staticmethod
    def in_frame(points: torch.Tensor, frame: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """points [N,M,2] in crop pixels -> [N,M,2] in the face's frame (IOD), `frame` being
        `face_frame`'s (origin, x axis, y axis, IOD)."""
        origin, ex, ey, iod = frame
        rel = points - origin
        return torch.stack([(rel * ex).sum(-1), (rel * ey).sum(-1)], dim=-1) / iod

    # --- the AU fields: [N,478,2] displacement in IOD for intensity 1 ---------------------------
    @staticmethod
    def _near(q: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
        """[N,478] Gaussian falloff exp(-|q - centre|^2 / 2 r^2) around centre [N,1,2]."""
        return torch.exp(-((q - centre) ** 2).sum(-1) / (2 * radius * radius))

    @staticmethod
    def _centre(q: torch.Tensor, idx: tuple[int, ...]) -> torch.Tensor:
        return q[:, list(idx)].mean(1, keepdim=True)

    @staticmethod
    def _vec(w: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
        """weights [N,478] -> displacement [N,478,2] = w * (dx, dy)."""
        return torch.stack([w * dx, w * dy], dim=-1)

    def fields(self, q: torch.Tensor) -> list[torch.Tensor]:
        """The 17 AU fields (OpenFace order, `AU_NAMES`): each [N,478,2], IOD per intensity unit,
        AU45 per unit of closure (0 open .. 1 shut). x: the subject's left, y: down."""
        qy = q[..., 1]
        c, near, vec = self._centre, self._near, self._vec
        above_eyes = _smoothstep((-0.13 - qy) / 0.08) * (1 - self.eye)         # brows and forehead, lids fixed
        mouth_y = c(q, (13, 14))[..., 1]                                        # [N,1]
        not_lip = 1 - self.lip
        jaw = self.lower_lip + not_lip * _smoothstep((qy - mouth_y + 0.05) / 0.35)   # what the jaw carries
        upper_mouth = self.upper_lip + not_lip * _smoothstep((mouth_y - qy) / 0.15) * _smoothstep((qy - 0.45) / 0.2)
        f = []
        # AU01 inner brow raiser (frontalis, pars medialis): the inner brows rise
        w = sum(near(q, c(q, i), 0.28) for i in (RIGHT_BROW_INNER, LEFT_BROW_INNER)) * above_eyes
        f.append(vec(w, 0.0, -0.065))
        # AU02 outer brow raiser (frontalis, pars lateralis): the outer brows rise
        w = sum(near(q, c(q, i), 0.30) for i in (RIGHT_BROW_OUTER, LEFT_BROW_OUTER)) * above_eyes
        f.append(vec(w, 0.0, -0.065))
        # AU04 brow lowerer (corrugator, depressor supercilii, procerus): brows down and together
        wr = near(q, c(q, RIGHT_BROW_INNER), 0.35) * above_eyes
        wl = near(q, c(q, LEFT_BROW_INNER), 0.35) * above_eyes
        f.append(vec(wr, 0.04, 0.09) + vec(wl, -0.04, 0.09))
        # AU05 upper lid raiser (levator palpebrae superioris): the upper lid margin rises
        w = self.upper_lid + 0.45 * self.lid_row1 + 0.15 * self.lid_row2
        f.append(vec(w, 0.0, -0.055))
        # AU06 cheek raiser (orbicularis oculi, pars orbitalis): cheeks up, lower lids pushed up
        cheeks = sum(near(q, c(q, i) + q.new_tensor([0.0, 0.42]), 0.28)
                     for i in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS)) * (1 - self.upper_lid - self.lid_row1 - self.iris)
        f.append(vec(cheeks * (1 - self.lip) + self.lower_lid + 0.6 * self.below_lid, 0.0, -0.03))
        # AU07 lid tightener (orbicularis oculi, pars palpebralis): lower lid up, upper slightly down
        f.append(vec(self.lower_lid + 0.5 * self.below_lid, 0.0, -0.022) + vec(self.upper_lid, 0.0, 0.008))
        # AU09 nose wrinkler (levator labii superioris alaeque nasi): nose wings and upper lip up,
        # inner brows pulled down
        wings = sum(near(q, c(q, i), 0.18) for i in NOSE_WINGS)
        brows = sum(near(q, c(q, i), 0.2) for i in (RIGHT_BROW_INNER, LEFT_BROW_INNER)) * above_eyes
        f.append(vec(wings * (1 - self.eye), 0.0, -0.035) + vec(upper_mouth * near(q, c(q, (0,)), 0.35), 0.0, -0.015)
                 + vec(brows, 0.0, 0.02))
        # AU10 upper lip raiser (levator labii superioris): the upper lip rises, most beside the philtrum
        w = upper_mouth * (near(q, c(q, (40, 39)), 0.25) + near(q, c(q, (269, 270)), 0.25)).clamp(max=1.0)
        f.append(vec(w, 0.0, -0.04))
        # AU12 lip corner puller (zygomaticus major): corners up and out, obliquely toward the cheekbone
        wr, wl = near(q, c(q, (61,)), 0.3), near(q, c(q, (291,)), 0.3)
        f.append(vec(wr, -0.06, -0.09) + vec(wl, 0.06, -0.09))
        # AU14 dimpler (buccinator): corners tightened inward and slightly up
        wr, wl = near(q, c(q, (61,)), 0.15), near(q, c(q, (291,)), 0.15)
        f.append(vec(wr, 0.02, -0.01) + vec(wl, -0.02, -0.01))
        # AU15 lip corner depressor (depressor anguli oris): corners pulled down
        wr, wl = near(q, c(q, (61,)), 0.28), near(q, c(q, (291,)), 0.28)
        f.append(vec(wr, -0.015, 0.12) + vec(wl, 0.015, 0.12))
        # AU17 chin raiser (mentalis): the chin boss and the lower lip pushed up
        w = near(q, c(q, (18, 200)), 0.3) * jaw
        f.append(vec(w, 0.0, -0.035) + vec(self.lower_lip, 0.0, -0.015))
        # AU20 lip stretcher (risorius, platysma): corners pulled out sideways, lips flattened
        wr, wl = near(q, c(q, (61,)), 0.3), near(q, c(q, (291,)), 0.3)
        f.append(vec(wr, -0.07, 0.012) + vec(wl, 0.07, 0.012))
        # AU23 lip tightener (orbicularis oris): the red of the lips narrows, corners in
        out_up, out_lo = self.upper_outer, self.lower_outer
        wr, wl = near(q, c(q, (61,)), 0.12), near(q, c(q, (291,)), 0.12)
        f.append(vec(out_up, 0.0, 0.015) + vec(out_lo, 0.0, -0.015) + vec(wr, 0.012, 0.0) + vec(wl, -0.012, 0.0))
        # AU25 lips part: the lower lip drops from the upper, the upper lifts a little
        w = near(q, c(q, (14, 17)), 0.4) * jaw
        f.append(vec(w, 0.0, 0.035) + vec(self.upper_lip * near(q, c(q, (13,)), 0.35), 0.0, -0.01))
        # AU26 jaw drop (masseter relaxed; the mandible rotates down): what the jaw carries moves down
        w = jaw * torch.exp(-q[..., 0] ** 2 / (2 * 1.0 ** 2))
        f.append(vec(w, 0.0, 0.17))
        # AU45 blink (orbicularis oculi relaxes levator): upper lid down onto the lower lid
        f.append(self._blink(q))
        return f

    def _blink(self, q: torch.Tensor) -> torch.Tensor:
        """[N,478,2]: the displacement that shuts both eyes (closure 1)."""
        up, lo = list(self.upper_cols), list(self.lower_cols)
        gap = q[:, lo] - q[:, up]                                      # [N,14,2]
        d = torch.zeros_like(q)
        d[:, up] = gap
        d[:, list(self.row1_cols)] = 0.62 * gap
        d[:, list(self.row2_cols)] = 0.1 * gap
        d[:, list(RIGHT_IRIS)] = gap[:, :7].mean(1, keepdim=True)
        d[:, list(LEFT_IRIS)] = gap[:, 7:].mean(1, keepdim=True)
        return d

    def displacement(self, landmarks: torch.Tensor, intensities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """landmarks [N,478,2] (crop pixels), intensities [N,17] (0..5) -> (each point's move
        [N,478,2] in pixels, its vote in the flow [N,478]: 0 where a shutting lid covers it)."""
        frame = self.face_frame(landmarks)
        _, ex, ey, iod = frame
        fields = self.fields(self.in_frame(landmarks, frame))
        blink = AU_NAMES.index("AU45")
        closure = (intensities[:, blink:blink + 1] / self.BLINK_FULL).clamp(0, 1)      # [N,1]
        d = sum(intensities[:, k, None, None] * fields[k] for k in range(NUM_AUS) if k != blink)
        d = d + closure[..., None] * fields[blink]
        weight = 1 - closure * self.lower_lid
        return iod * (d[..., :1] * ex + d[..., 1:] * ey), weight

    # --- dense flow -----------------------------------------------------------------------------
    def flow(self, landmarks: torch.Tensor, disp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Backward flow [N,S,S,2] in normalised units: output(p) = input(p + flow(p)), from
        each point's move disp [N,478,2] (pixels), points voting with weight [N,478] (0: a point
        covered by the edit, e.g. the lower lid under a shutting upper lid). Computed on the
        flow grid (RBF everywhere, the eyelid model inside each eye's band), then upsampled."""
        n, s, g = landmarks.shape[0], self.config.image_size, self.config.flow_grid
        to_norm = 2.0 / s
        moved = (landmarks + disp) * to_norm - 1                        # [N,478,2] normalised
        value = -disp * to_norm
        # each point's width: its mesh neighbourhood (distance to its 3rd nearest voting neighbour)
        # exact differences, not cdist's |a|^2 + |b|^2 - 2ab (whose rounding, divided by a small
        # sigma^2, made float32 engines differ from eager PyTorch by ~1e-4)
        pd2 = ((moved[:, :, None] - moved[:, None]) ** 2).sum(-1) + (1 - weight[:, None, :]) * 16.0
        spacing = pd2.topk(4, dim=-1, largest=False).values[..., 3].sqrt()   # [N,478]
        sigma = spacing.clamp(min=1.5 * 2.0 / g)                       # at least 1.5 flow-grid cells
        grid = self.coarse.expand(n, -1, -1)                            # [N,G*G,2]
        c = self.coarse[0, :g, 0]                                       # the grid's 1-D coordinates
        d2 = (((c[None, :, None] - moved[:, None, :, 1]) ** 2)[:, :, None]
              + ((c[None, :, None] - moved[:, None, :, 0]) ** 2)[:, None]).reshape(n, g * g, -1)   # [N,G*G,478]
        r2 = d2 / sigma[:, None, :] ** 2
        k = torch.exp(-r2 / (2 * 1.5 ** 2)) / (r2 + 0.05)                # near-interpolating, local
        k = k * weight[:, None, :]
        v = torch.bmm(k, value) / (k.sum(-1, keepdim=True) + 0.05)      # [N,G*G,2]
        v = self._eyelids(landmarks, disp, grid, v)
        v = v.reshape(n, g, g, 2).permute(0, 3, 1, 2)
        v = F.interpolate(v, size=(s, s), mode="bilinear", align_corners=False)
        return v.permute(0, 2, 3, 1)

    @staticmethod
    def _interp(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear y(x) through knots (xs [N,K] ascending, ys [N,K]) at x [N,M] -> [N,M];
        the end values beyond the ends."""
        x0, x1, y0, y1 = xs[:, None, :-1], xs[:, None, 1:], ys[:, None, :-1], ys[:, None, 1:]
        xq = x[..., None]
        t = ((xq - x0) / (x1 - x0).clamp_min(1e-6)).clamp(0, 1)
        inside = ((xq >= x0) & (xq < x1)).to(x.dtype)
        y = (inside * (y0 + t * (y1 - y0))).sum(-1)
        first = (x < xs[:, :1]).to(x.dtype)
        last = (x >= xs[:, -1:]).to(x.dtype)
        return y + first * ys[:, :1] + last * ys[:, -1:]

    def _eyelids(self, landmarks: torch.Tensor, disp: torch.Tensor, grid: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor:
        """The flow inside each eye's band (from above the upper lid's crease to below the lower
        lid) as the lids' own motion: each column of the band is stretched piecewise-linearly so
        the lid margins land where the AU fields move them (a shut lid covers the eye, its skin
        stretched), replacing the RBF flow there. grid [N,M,2], v [N,M,2] normalised."""
        s = self.config.image_size
        frame = self.face_frame(landmarks)
        _, _, ey, iod = frame
        q, qm = self.in_frame(landmarks, frame), self.in_frame(landmarks + disp, frame)
        g = self.in_frame((grid + 1) * (s / 2), frame)                   # [N,M,2]
        gx, gy = g[..., 0], g[..., 1]
        for corners, upper, lower in ((RIGHT_EYE_CORNERS, RIGHT_UPPER_LID, RIGHT_LOWER_LID),
                                      (LEFT_EYE_CORNERS[::-1], LEFT_UPPER_LID, LEFT_LOWER_LID)):
            # knots from the outer corner to the inner one, turned to ascend in x
            up = [corners[0], *upper, corners[1]]
            lo = [corners[0], *lower, corners[1]]
            if corners == LEFT_EYE_CORNERS[::-1]:
                up, lo = up[::-1], lo[::-1]
            xs = q[:, up, 0]
            u = self._interp(gx, xs, q[:, up, 1])
            lw = self._interp(gx, q[:, lo, 0], q[:, lo, 1])
            u2 = self._interp(gx, xs, qm[:, up, 1])
            l2 = self._interp(gx, q[:, lo, 0], qm[:, lo, 1])
            top, bot = u - 0.18, lw + 0.12
            u2 = torch.maximum(u2, top + 0.02)
            l2 = torch.minimum(l2, bot - 0.02)
            meet = (u2 + l2) / 2
            crossed = (u2 > l2).to(gy.dtype)
            u2, l2 = u2 * (1 - crossed) + meet * crossed, l2 * (1 - crossed) + meet * crossed
            src = torch.where(gy <= u2, top + (gy - top) * (u - top) / (u2 - top).clamp_min(1e-6),
                              torch.where(gy >= l2, lw + (gy - l2) * (bot - lw) / (bot - l2).clamp_min(1e-6),
                                          u + (gy - u2) * (lw - u) / (l2 - u2).clamp_min(1e-6)))
            x_lo, x_hi = xs[:, :1], xs[:, -1:]
            m = _smoothstep(torch.minimum(gy - top, bot - gy) / 0.04) * \
                _smoothstep(torch.minimum(gx - x_lo, x_hi - gx) / 0.05)
            dy = (src - gy) * iod[..., 0]                               # pixels along the face's y axis
            v_eye = dy[..., None] * ey * (2.0 / s)
            v = m[..., None] * v_eye + (1 - m[..., None]) * v
        return v

    # --- appearance -----------------------------------------------------------------------------
    def _inside(self, polygon: torch.Tensor) -> torch.Tensor:
        """[N,1,S/2,S/2] 1 inside the closed polygon [N,P,2] (normalised coords), by crossing
        count, at half the crop's size."""
        h = self.config.image_size // 2
        px = self.half_grid[..., 0].reshape(1, h * h, 1)
        py = self.half_grid[..., 1].reshape(1, h * h, 1)
        a, b = polygon, torch.roll(polygon, -1, dims=1)
        ax, ay, bx, by = a[..., 0][:, None], a[..., 1][:, None], b[..., 0][:, None], b[..., 1][:, None]
        straddles = (ay > py) != (by > py)
        dy = torch.where((by - ay).abs() < 1e-9, torch.full_like(by, 1e-9), by - ay)
        x_cross = ax + (py - ay) * (bx - ax) / dy
        crossings = (straddles & (px < x_cross)).to(torch.float32).sum(-1)
        inside = crossings - 2 * torch.floor(crossings / 2)
        return inside.reshape(-1, 1, h, h)

    def mouth(self, landmarks: torch.Tensor, disp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(own [N,1,S,S], hole [N,1,S,S], shift [N,2]) over the mouth the edit opens (inside
        the moved inner lips, softened). The face's own open mouth (its teeth, upper ones on the
        skull) moves with the upper lip: `shift` is the mean move of the upper inner lip
        (pixels), and `own` is the original inner lip polygon moved by it (eroded, so a closed
        mouth's sliver is nothing), where the crop's own pixels, shifted, are kept; `hole` is
        the rest of the opened mouth, painted as the cavity. Both 0 when nothing moves. Drawn
        at half size (the masks are soft anyway) and upsampled."""
        s = self.config.image_size
        idx = list(INNER_LIP_POLYGON)
        shift = disp[:, list(UPPER_INNER)].mean(1)                                  # [N,2]
        before = self._inside((landmarks[:, idx] + shift[:, None]) * (2.0 / s) - 1)
        after = self._inside((landmarks + disp)[:, idx] * (2.0 / s) - 1)
        new = (after - before).clamp(0, 1)
        new = F.avg_pool2d(-F.max_pool2d(-new, 3, stride=1, padding=1), 3, stride=1, padding=1,
                           count_include_pad=False)                   # slivers (a lip's edge moving) go
        opened = F.avg_pool2d(after, 3, stride=1, padding=1, count_include_pad=False)
        core = -F.max_pool2d(-before, 3, stride=1, padding=1)
        masks = F.interpolate(torch.cat([opened, new, core], 1), size=(s, s), mode="bilinear", align_corners=False)
        opened, hole, core = masks[:, :1], masks[:, 1:2], masks[:, 2:]
        own = torch.minimum(core * opened, 1 - hole)
        # only a mouth that opens (its inner lips move apart) gets the cavity and the kept teeth;
        # otherwise the warp alone moves the lips (and whatever shows between them)
        _, _, _, iod = self.face_frame(landmarks)
        gap = (landmarks[:, 14] - landmarks[:, 13]).norm(dim=-1)
        gap_after = (landmarks[:, 14] + disp[:, 14] - landmarks[:, 13] - disp[:, 13]).norm(dim=-1)
        opening = ((gap_after - gap) / (0.04 * iod[:, 0, 0])).clamp(0, 1)[:, None, None, None]
        return own * opening, hole * opening, shift

    def creases(self, landmarks: torch.Tensor, intensities: torch.Tensor) -> torch.Tensor:
        """[N,1,S,S] in [-0.5, 0.2]: the relative brightness change of each pixel from the AU06 /
        AU09 creases (`CREASES`): sum over segments k of CREASE_DEPTH * x_k * (0.35 * highlight
        - exp(-d^2 / 2 w^2)), d the pixel's distance to the segment in IOD, the highlight the same
        Gaussian 1.5 w above its nearest point. Drawn for all segments at once on a grid in the
        face's frame (CREASE_WINDOW, CREASE_STEP), then mapped onto the crop (bilinear)."""
        s = self.config.image_size
        frame = self.face_frame(landmarks)
        q = self.in_frame(landmarks, frame)
        gh, gw = self.crease_grid.shape[:2]
        g = self.crease_grid.reshape(1, gh * gw, 1, 2)                             # [1,M,1,2] IOD
        anchor = q[:, self.crease_anchor]                                          # [N,K,2]
        p0 = (anchor + self.crease_start)[:, None]                                 # [N,1,K,2]
        seg = (self.crease_end - self.crease_start)[None, None]                    # [1,1,K,2]
        t = (((g - p0) * seg).sum(-1) / (seg * seg).sum(-1)).clamp(0, 1)          # [N,M,K]
        near = g - (p0 + t[..., None] * seg)
        w2 = 2 * CREASE_WIDTH ** 2
        shadow = torch.exp(-(near * near).sum(-1) / w2)
        light = torch.exp(-(near[..., 0] ** 2 + (near[..., 1] + 1.5 * CREASE_WIDTH) ** 2) / w2)
        amount = intensities[:, self.crease_au][:, None, :] * CREASE_DEPTH        # [N,1,K]
        total = (amount * (0.35 * light - shadow)).sum(-1).reshape(-1, 1, gh, gw)
        # each crop pixel's place in the window: its face-frame coordinates, scaled to [-1, 1]
        f = self.in_frame((self.grid.reshape(1, s * s, 2) + 1) * (s / 2), frame)           # [N,S*S,2]
        x0, x1, y0, y1 = CREASE_WINDOW
        where = torch.stack([(f[..., 0] - x0) / (x1 - x0), (f[..., 1] - y0) / (y1 - y0)], dim=-1) * 2 - 1
        out = F.grid_sample(total, where.reshape(-1, s, s, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        return out.clamp(-0.5, 0.2)

    def forward(self, image: torch.Tensor, aus: torch.Tensor, landmarks: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """image [N,3,S,S] in [-1,1], aus [N,17] = intensity/5, landmarks [N,478,2] crop pixels
        -> (C [N,3,S,S] in [-1,1], A [N,1,S,S] in [0,1])."""
        s = self.config.image_size
        assert image.ndim == 4 and image.shape[1:] == (3, s, s), f"image must be [N,3,{s},{s}], got {tuple(image.shape)}"
        assert aus.shape == (image.shape[0], NUM_AUS), f"aus must be [N,{NUM_AUS}], got {tuple(aus.shape)}"
        assert landmarks.shape == (image.shape[0], NUM_POINTS, 2), \
            f"landmarks must be [N,{NUM_POINTS},2], got {tuple(landmarks.shape)}"
        intensities = aus * AU_SCALE
        disp, weight = self.displacement(landmarks, intensities)
        v = self.flow(landmarks, disp, weight)
        own, hole, shift = self.mouth(landmarks, disp)
        # one sampling pass: the warp, and inside the face's own open mouth its pixels moved with
        # the upper lip (`shift`), the two sampling positions blended across the mouth's soft edge
        teeth_at = -shift[:, None, None, :] * (2.0 / s)
        mix = own.permute(0, 2, 3, 1)
        grid = self.grid.unsqueeze(0) + v * (1 - mix) + teeth_at * mix
        warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # the cavity: dark red-brown, darkest under the upper lip, lighter toward the tongue
        lips = (landmarks + disp)[:, [13, 14], 1] * (2.0 / s) - 1                       # [N,2] y of the inner lips
        yy = self.grid[..., 1].reshape(1, s, s)
        t = ((yy - lips[:, :1, None]) / (lips[:, 1:, None] - lips[:, :1, None]).clamp_min(1e-3)).clamp(0, 1)[:, None]
        dark, light = torch.tensor([0.08, 0.025, 0.03]), torch.tensor([0.36, 0.13, 0.13])
        shade = (dark.view(1, 3, 1, 1) + t * (light - dark).view(1, 3, 1, 1)).to(image) * 2 - 1
        colour = warped * (1 - hole) + shade * hole
        fold = self.creases(landmarks + disp, intensities)
        colour = ((colour + 1) * (1 + fold) - 1).clamp(-1, 1)
        moved_px = (grid - self.grid.unsqueeze(0)).norm(dim=-1).unsqueeze(1) * (s / 2)
        attention = 1 - (moved_px / 0.5 + hole + fold.abs() * 255).clamp(0, 1)
        return colour, attention

    def edit(self, image: torch.Tensor, aus: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """The edited image, A * image + (1 - A) * C, float [N,3,S,S] in [-1, 1]; the inputs as `forward`'s
        (image [N,3,S,S] in [-1,1], aus [N,17] = intensity / 5, landmarks [N,478,2] in crop pixels).
        """
        from exprengine.pixels import blend
        colour, attention = self(image, aus, landmarks)
        return blend(image, colour, attention)


def rig_sha256(config: RigConfig) -> str:
    """The rig's identity in place of a weights hash: sha256 of its config and of this module's
    source (the fields, tables and constants), so an engine built by another rig is recognised."""
    import inspect
    import sys
    text = json.dumps(config.to_dict(), sort_keys=True) + inspect.getsource(sys.modules[__name__])
    return hashlib.sha256(text.encode()).hexdigest()
