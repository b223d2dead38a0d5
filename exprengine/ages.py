"""Ages in years and the six age classes of Lifespan Age Transformation Synthesis (SPEC section 8).

LATS (Or-El et al., ECCV 2020) and its FFHQ-Aging data set sort faces into six classes of ages
in whole years: 0-2, 3-6, 7-9, 15-19, 30-39 and 50-69 (`AGE_CLASSES`, both ends included; the
ages between the classes are not labelled). Its generator is steered by a class, and continuous
aging interpolates between adjacent classes: the *class position* is that continuous index,
0.0 (class 0-2) to 5.0 (class 50-69).

Here a class stands at its centre, the middle of its two ends ((0+2)/2 = 1, 4.5, 8, 17, 34.5,
59.5 years), and `class_position` runs piecewise-linearly between the centres, clamped to 0..5
outside them (an age under 1 is position 0, over 59.5 is position 5). `age_of_position` is its
inverse on the centres' span 1..59.5 years. The piecewise-linear choice is ours: the reference
interpolates linearly between the style vectors of adjacent classes, so a straight line between
class centres is the matching map from years; the centres themselves are the classes' midpoints.

    >>> class_position(17.0)        # class 15-19's centre
    3.0
    >>> class_position(25.75)       # halfway between 17 and 34.5
    3.5
    >>> age_of_position(3.5)
    25.75

This room is at the bottom of the package (it imports only `errors`), so the synthetic world
(`data/`) and the age models (`models/`) both read the classes from here.
"""
from __future__ import annotations

import math
from numbers import Real

from exprengine.errors import UserError

#: The LATS / FFHQ-Aging age classes, in years, both ends included.
AGE_CLASSES: tuple[tuple[int, int], ...] = ((0, 2), (3, 6), (7, 9), (15, 19), (30, 39), (50, 69))
NUM_AGE_CLASSES = len(AGE_CLASSES)
#: The ages this package renders and edits, in years: 0 to MAX_AGE, both included.
MIN_AGE = 0.0
MAX_AGE = 70.0
#: Each class's centre in years, the middle of its ends: (1.0, 4.5, 8.0, 17.0, 34.5, 59.5).
CLASS_CENTRES: tuple[float, ...] = tuple((lo + hi) / 2.0 for lo, hi in AGE_CLASSES)


def class_label(index: int) -> str:
    """The class's name as the reference writes it: class_label(0) == "0-2", class_label(5) ==
    "50-69". UserError if `index` is not 0..NUM_AGE_CLASSES-1."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < NUM_AGE_CLASSES:
        raise UserError(f"`index` must be an age class 0 to {NUM_AGE_CLASSES - 1}, got {index!r}")
    lo, hi = AGE_CLASSES[index]
    return f"{lo}-{hi}"


def check_age(age: float) -> float:
    """`age` (years) as a float, if it is a finite real number between 0 and 70 (both included).

    UserError otherwise: "`age` must be between 0 and 70 years, got ...".
    """
    if isinstance(age, bool) or not isinstance(age, Real) or not math.isfinite(float(age)) \
            or not MIN_AGE <= float(age) <= MAX_AGE:
        raise UserError(f"`age` must be between {MIN_AGE:g} and {MAX_AGE:g} years, got {age!r}")
    return float(age)


def class_of_age(age: float) -> int | None:
    """The index of the class whose years hold `age` (a class holds lo <= age < hi + 1, so 2.5
    years is class 0-2), or None in the gaps between classes (10-14, 20-29, 40-49) and at 70.
    UserError for an age outside 0..70 (`check_age`)."""
    a = check_age(age)
    for i, (lo, hi) in enumerate(AGE_CLASSES):
        if lo <= a < hi + 1:
            return i
    return None


def class_position(age_years: float) -> float:
    """The continuous class index of an age: piecewise-linear between the class centres
    (`CLASS_CENTRES`), clamped to 0.0 below 1 year and 5.0 above 59.5 years.

    UserError for an age outside 0..70 (`check_age`).
    """
    a = check_age(age_years)
    if a <= CLASS_CENTRES[0]:
        return 0.0
    if a >= CLASS_CENTRES[-1]:
        return float(NUM_AGE_CLASSES - 1)
    for i in range(NUM_AGE_CLASSES - 1):
        lo, hi = CLASS_CENTRES[i], CLASS_CENTRES[i + 1]
        if a <= hi:
            return i + (a - lo) / (hi - lo)
    raise AssertionError("unreachable: the centres cover 1..59.5")


def age_of_position(p: float) -> float:
    """The age in years at class position `p` (0..5): the inverse of `class_position` on the
    centres' span, age_of_position(class_position(a)) == a for 1 <= a <= 59.5.

    UserError if `p` is not a finite number between 0 and NUM_AGE_CLASSES-1.
    """
    top = NUM_AGE_CLASSES - 1
    if isinstance(p, bool) or not isinstance(p, Real) or not math.isfinite(float(p)) or not 0 <= float(p) <= top:
        raise UserError(f"`p` must be a class position between 0 and {top}, got {p!r}")
    p = float(p)
    i = min(int(math.floor(p)), top - 1)
    t = p - i
    return CLASS_CENTRES[i] + t * (CLASS_CENTRES[i + 1] - CLASS_CENTRES[i])
