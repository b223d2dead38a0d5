import warnings

import numpy as np
import pytest

from exprengine.aus import (AU_NAMES, AU_INDEX, CONFLICTS, PRESETS, AUPolicy, AUs, AUWarning,
                            as_intensity_array, au_name)
from exprengine.errors import UserError


def test_vocabulary_is_openface_order():
    assert AU_NAMES == ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
                        "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")


@pytest.mark.parametrize("token,expected", [("AU12", "AU12"), ("au12", "AU12"), ("12", "AU12"),
                                            ("1", "AU01"), ("AU1", "AU01"), ("AU01", "AU01"), (" 45 ", "AU45")])
def test_au_names(token, expected):
    assert au_name(token) == expected


@pytest.mark.parametrize("token", ["AU16", "16", "AU3", "AUX", "", "12a", "100"])
def test_bad_au_names(token):
    with pytest.raises(UserError):
        au_name(token)


def test_parse_specs():
    a = AUs.parse("AU12=1.5", "25=0.6")
    assert a.values[AU_INDEX["AU12"]] == pytest.approx(1.5)
    assert a.values[AU_INDEX["AU25"]] == pytest.approx(0.6)
    assert np.count_nonzero(a.values) == 2
    b = AUs.parse("happiness@1.5,AU25=0.5")
    assert b.as_dict(nonzero=True) == {"AU06": 1.5, "AU12": 1.5, "AU25": 0.5}
    # explicit AUs override a preset's value
    c = AUs.parse("happiness@1.5", "AU12=0.2")
    assert c.values[AU_INDEX["AU12"]] == pytest.approx(0.2)
    assert AUs.parse("happiness").values[AU_INDEX["AU06"]] == pytest.approx(1.0)


@pytest.mark.parametrize("spec", ["AU12=", "AU12=abc", "AU12=nan", "happiness@", "happiness@x",
                                  "joy", "AU16=1", "=1", "happy!@1", ","])
def test_bad_specs(spec):
    with pytest.raises(UserError):
        AUs.parse(spec)


def test_presets_match_thesis_table():
    assert set(PRESETS) == {"natural", "happiness", "sadness", "surprise", "fear", "anger", "disgust", "contempt"}
    table = {"natural": [], "happiness": [6, 12], "sadness": [1, 4, 15], "surprise": [1, 2, 5, 26],
             "fear": [1, 2, 4, 5, 7, 20, 26], "anger": [4, 5, 7, 23], "contempt": [12, 14]}
    for name, aus in table.items():
        assert PRESETS[name].aus == tuple(f"AU{n:02d}" for n in aus)
    for name in PRESETS:
        v = AUs.preset(name, 1.5).values
        assert set(np.unique(v)) <= {0.0, 1.5}


def test_disgust_policy_for_au16_is_explicit():
    disgust = PRESETS["disgust"]
    assert disgust.aus == ("AU09", "AU15", "AU25")
    assert "AU16" in disgust.note and "AU25" in disgust.note


def test_presets_are_conflict_free():
    for name in PRESETS:
        assert AUs.preset(name, 2.0).conflicts() == [], name


def test_conflicts_detected():
    assert ("AU23", "AU25") in {(c.a, c.b) for c in CONFLICTS}
    a = AUs.parse("AU23=1", "AU25=1")
    assert [(c.a, c.b) for c in a.conflicts()] == [("AU23", "AU25")]
    assert AUs.parse("AU23=1", "AU25=0.3").conflicts() == []
    with pytest.warns(AUWarning, match="AU23 and AU25 conflict"):
        AUPolicy().check(a.values)
    with pytest.raises(UserError, match="`strict`"):
        AUPolicy(strict=True).check(a.values)


def test_intensity_range_policy():
    v = AUs.parse("AU12=3").values
    with pytest.warns(AUWarning, match="above the intensity cap 2"):
        out = AUPolicy().check(v)
    assert out[AU_INDEX["AU12"]] == 3
    with pytest.warns(AUWarning, match="clipped"):
        out = AUPolicy(above_max="clip").check(v)
    assert out[AU_INDEX["AU12"]] == 2
    assert v[AU_INDEX["AU12"]] == 3          # the caller's array is not modified
    with pytest.raises(UserError):
        AUPolicy(above_max="error").check(v)
    with pytest.raises(UserError):
        AUPolicy(strict=True).check(v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AUPolicy(max_intensity=3.5).check(v)          # a raised cap accepts it silently
    for bad in (-0.1, 5.01, np.inf, np.nan):
        arr = np.zeros(17, np.float32)
        arr[3] = bad
        with pytest.raises(UserError):
            AUPolicy().check(arr)
    with pytest.raises(UserError):
        AUPolicy().check(np.zeros(16))
    with pytest.raises(UserError):
        AUPolicy(max_intensity=6)


def test_batched_check_and_conversion():
    rows = np.stack([AUs.preset("happiness").values, AUs.preset("sadness").values])
    assert AUPolicy().check(rows).shape == (2, 17)
    assert as_intensity_array([AUs.preset("anger"), AUs.preset("fear")]).shape == (2, 17)
    assert as_intensity_array("surprise@2").max() == 2
    np.testing.assert_allclose(AUs.preset("fear", 2).network_input().max(), 0.4)
    with pytest.raises(UserError):
        AUs(np.zeros(5))
