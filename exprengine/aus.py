"""Expression control with FACS Action Units (SPEC section 2).

Intensities are on OpenFace's scale, 0 to 5, in OpenFace's `_r` column order. The network
sees intensity / 5. Above about 2.0 the thesis finds images break, so 2.0 is the default cap.

    >>> AUs.parse("happiness@1.5", "AU25=0.6").values    # preset, then explicit AUs override
    >>> AUs.parse("12=1.8")                              # "AU" prefix and zero padding optional

Policies, applied by `AUPolicy.check` (the CLI's `--max-intensity`, `--above-max`, `--strict`):
- outside [0, 5]: always an error;
- above the cap (default 2.0): warn (default), clip to the cap, or error;
- conflicting pairs (CONFLICTS) both active: warn, or error with `strict`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from exprengine.errors import UserError

AU_NAMES: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)
NUM_AUS = len(AU_NAMES)
AU_INDEX = {name: i for i, name in enumerate(AU_NAMES)}
AU_DESCRIPTIONS: dict[str, str] = {
    "AU01": "inner brow raiser", "AU02": "outer brow raiser", "AU04": "brow lowerer",
    "AU05": "upper lid raiser", "AU06": "cheek raiser", "AU07": "lid tightener",
    "AU09": "nose wrinkler", "AU10": "upper lip raiser", "AU12": "lip corner puller",
    "AU14": "dimpler", "AU15": "lip corner depressor", "AU17": "chin raiser",
    "AU20": "lip stretcher", "AU23": "lip tightener", "AU25": "lips part",
    "AU26": "jaw drop", "AU45": "blink",
}
AU_SCALE = 5.0          # OpenFace intensities run 0..5; the network input is intensity / 5
DEFAULT_CAP = 2.0       # the thesis's practical maximum
DEFAULT_PRESET_INTENSITY = 1.0
#: What `AUPolicy` does with an intensity above its cap: warn, clip to the cap, or refuse.
ABOVE_MAX = ("warn", "clip", "error")


@dataclass(frozen=True)
class Preset:
    """A named expression: the AUs it raises (each to the preset's intensity)."""

    name: str
    aus: tuple[str, ...]
    note: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("natural", ()),
    Preset("happiness", ("AU06", "AU12")),
    Preset("sadness", ("AU01", "AU04", "AU15")),
    Preset("surprise", ("AU01", "AU02", "AU05", "AU26")),
    Preset("fear", ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26")),
    Preset("anger", ("AU04", "AU05", "AU07", "AU23")),
    # Thesis table 2.2: disgust = 9 + 15 + 16. AU16 (lower lip depressor) is not one of the
    # 17 AUs OpenFace estimates, so no model has learnt it. We substitute AU25 (lips part):
    # AU16 pulls the lower lip down and away from the upper lip, and FACS codes it with AU25
    # almost always; AU25 is the available AU whose region and direction come closest.
    Preset("disgust", ("AU09", "AU15", "AU25"),
           note="AU16 (lower lip depressor) is not among the 17 AUs; AU25 (lips part) stands in for it"),
    Preset("contempt", ("AU12", "AU14")),
)}


@dataclass(frozen=True)
class Conflict:
    """An antagonist pair: AUs `a` and `b` (canonical names, e.g. 'AU23') pull the same tissue in
    opposite directions; `why` says how, in words. Raising both above CONFLICT_THRESHOLD asks the
    generator for a face it has never seen (thesis fig. 2.3).
    """

    a: str
    b: str
    why: str


# Antagonist pairs: the two AUs pull the same tissue in opposite directions, so raising both
# asks the generator for a face it has never seen and it breaks that region (thesis fig. 2.3).
CONFLICTS: tuple[Conflict, ...] = (
    Conflict("AU23", "AU25", "lip tightener presses the lips together while lips part opens them"),
    Conflict("AU12", "AU15", "lip corner puller raises the mouth corners, lip corner depressor lowers them"),
    Conflict("AU05", "AU45", "upper lid raiser opens the eye wide while blink closes it"),
    Conflict("AU17", "AU26", "chin raiser pushes the lower lip and chin up while jaw drop opens the mouth"),
)
CONFLICT_THRESHOLD = 0.5   # both AUs above this intensity count as raised together


def au_name(token: str) -> str:
    """'AU12', 'au12', '12', 'AU1', '1' -> canonical 'AU12' / 'AU01'. Raises UserError."""
    m = re.fullmatch(r"(?:au)?0*(\d{1,2})", token.strip().lower())
    if not m:
        raise UserError(f"{token!r} is not an AU name (expected e.g. AU12 or 12)")
    name = f"AU{int(m.group(1)):02d}"
    if name not in AU_INDEX:
        hint = " (AU16 is not estimated by OpenFace; see the disgust preset)" if name == "AU16" else ""
        raise UserError(f"{name} is not one of the 17 supported AUs{hint}: {' '.join(AU_NAMES)}")
    return name


def _parse_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise UserError(f"{what}: {text!r} is not a finite number")
    return value


@dataclass(frozen=True)
class AUs:
    """A vector of 17 AU intensities on the OpenFace scale (0..5), in AU_NAMES order."""

    values: np.ndarray = field(default_factory=lambda: np.zeros(NUM_AUS, np.float32))

    def __post_init__(self):
        v = np.asarray(self.values, dtype=np.float32).reshape(-1)
        if v.shape != (NUM_AUS,):
            raise UserError(f"an AU vector needs {NUM_AUS} values, got {v.size}")
        v = v.copy()
        v.setflags(write=False)
        object.__setattr__(self, "values", v)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, intensity: float = DEFAULT_PRESET_INTENSITY) -> "AUs":
        """The named preset (PRESETS, case-insensitive) with each of its AUs at `intensity` (0..5).

        Raises UserError for an unknown name or an intensity outside [0, 5].
        """
        key = name.strip().lower()
        if key not in PRESETS:
            raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        # Checked here, before presets combine by maximum: happiness@-1 would otherwise vanish
        # into "natural" and natural@99 pass unnoticed.
        if not (np.isfinite(intensity) and 0 <= intensity <= AU_SCALE):
            raise UserError(f"preset {name}@{intensity:g}: the intensity must be between 0 and {AU_SCALE:g} "
                            f"(OpenFace's AU scale)")
        v = np.zeros(NUM_AUS, np.float32)
        for au in PRESETS[key].aus:
            v[AU_INDEX[au]] = intensity
        return cls(v)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, float]) -> "AUs":
        """{'AU12': 1.5, '25': 0.6, ...} -> AUs; names as `au_name` reads them, others 0.

        Raises UserError for a name that is not one of the 17 AUs; a value `float()` cannot read
        raises its ValueError / TypeError. Values are not range-checked here (AUPolicy.check is).
        """
        v = np.zeros(NUM_AUS, np.float32)
        for k, x in mapping.items():
            v[AU_INDEX[au_name(str(k))]] = float(x)
        return cls(v)

    @classmethod
    def parse(cls, *specs: str) -> "AUs":
        """Combine specs left to right: presets add up (max), `AUxx=v` sets one AU.

        Spec forms: `happiness`, `happiness@1.5`, `AU12=1.5`, `12=1.5`, and several
        comma-separated in one string (`happiness@1.2,AU25=0.5`).
        """
        v = np.zeros(NUM_AUS, np.float32)
        tokens = [t.strip() for s in specs for t in str(s).split(",") if t.strip()]
        if not tokens and specs:
            raise UserError("empty AU spec")
        for tok in tokens:
            if "=" in tok:
                name, _, num = tok.partition("=")
                au = au_name(name)
                v[AU_INDEX[au]] = _parse_number(num, f"AU spec {tok!r}")
            else:
                name, at, num = tok.partition("@")
                intensity = _parse_number(num, f"preset spec {tok!r}") if at else DEFAULT_PRESET_INTENSITY
                if not re.fullmatch(r"[A-Za-z_-]+", name.strip()):
                    raise UserError(f"bad AU spec {tok!r}: expected AU12=1.5, 12=1.5, or a preset like happiness@1.5")
                v = np.maximum(v, cls.preset(name, intensity).values)
        return cls(v)

    # --- views --------------------------------------------------------------------------
    def as_dict(self, nonzero: bool = False) -> dict[str, float]:
        """{'AU01': x, ...} in AU_NAMES order, floats on the 0..5 scale; only the non-zero ones if `nonzero`."""
        return {n: float(x) for n, x in zip(AU_NAMES, self.values) if x != 0 or not nonzero}

    def network_input(self) -> np.ndarray:
        """[17] float32 as the network sees it: intensity / 5."""
        return self.values / AU_SCALE

    def conflicts(self, threshold: float = CONFLICT_THRESHOLD) -> list[Conflict]:
        """The CONFLICTS whose two AUs are both above `threshold` (intensity, 0..5), in CONFLICTS order."""
        return [c for c in CONFLICTS
                if self.values[AU_INDEX[c.a]] > threshold and self.values[AU_INDEX[c.b]] > threshold]

    def __array__(self, dtype=None, copy=None):
        return np.array(self.values, dtype=dtype)

    def __str__(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.as_dict(nonzero=True).items()]
        return ",".join(parts) if parts else "natural"


@dataclass(frozen=True)
class AUPolicy:
    """How out-of-range intensities and conflicting AUs are treated."""

    max_intensity: float = DEFAULT_CAP
    above_max: str = "warn"        # "warn" | "clip" | "error"
    strict: bool = False           # conflicts and above-max become errors

    def __post_init__(self):
        if self.above_max not in ABOVE_MAX:
            raise UserError(f"above_max must be warn, clip or error, not {self.above_max!r}")
        if not 0 < self.max_intensity <= AU_SCALE:
            raise UserError(f"the intensity cap must be in (0, {AU_SCALE:g}], got {self.max_intensity:g}")

    def check(self, aus: np.ndarray) -> np.ndarray:
        """Validate [17] or [N,17] intensities; returns the (possibly clipped) float32 copy.

        Warnings go through `warnings.warn` (category AUWarning); errors raise UserError.
        """
        v = np.array(aus, dtype=np.float32)
        if v.shape[-1:] != (NUM_AUS,) or v.ndim not in (1, 2):
            raise UserError(f"AU intensities must have shape [17] or [N,17], got {list(v.shape)}")
        if not np.isfinite(v).all():
            raise UserError("AU intensities must be finite numbers")
        rows = v.reshape(-1, NUM_AUS)
        bad = np.argwhere((rows < 0) | (rows > AU_SCALE))
        if bad.size:
            r, c = bad[0]
            raise UserError(f"{AU_NAMES[c]}={rows[r, c]:g} is outside the OpenFace range 0 to {AU_SCALE:g}")
        high = np.argwhere(rows > self.max_intensity)
        if high.size:
            r, c = high[0]
            msg = (f"{AU_NAMES[c]}={rows[r, c]:g} is above the intensity cap {self.max_intensity:g} "
                   "(the thesis finds images break above about 2.0)")
            if self.strict:
                raise UserError(msg + "; refused because of `strict`")
            if self.above_max == "error":
                raise UserError(msg + "; lower it or set `above_max` to warn")
            if self.above_max == "clip":
                warnings.warn(msg + f"; clipped to {self.max_intensity:g}", AUWarning, stacklevel=2)
                np.minimum(rows, self.max_intensity, out=rows)
            else:
                warnings.warn(msg, AUWarning, stacklevel=2)
        for row in rows:
            for c in AUs(row).conflicts():
                msg = f"{c.a} and {c.b} conflict ({c.why}); the mouth or eyes may break"
                if self.strict:
                    raise UserError(msg + "; refused because of `strict`")
                warnings.warn(msg, AUWarning, stacklevel=2)
        return v


class AUWarning(UserWarning):
    """A questionable but allowed AU setting (above the cap, or conflicting AUs)."""


def as_intensity_array(aus: "AUs | np.ndarray | Sequence[float] | Iterable[AUs]") -> np.ndarray:
    """AUs, [17], [N,17] or a list of AUs -> float32 array ([17] or [N,17]) on the 0..5 scale."""
    if isinstance(aus, AUs):
        return aus.values.copy()
    if isinstance(aus, (list, tuple)) and aus and isinstance(aus[0], AUs):
        return np.stack([a.values for a in aus])
    if isinstance(aus, str):
        return AUs.parse(aus).values.copy()
    try:
        return np.array(aus, dtype=np.float32)
    except (TypeError, ValueError):
        raise UserError(f"cannot read AU intensities from {type(aus).__name__}") from None
