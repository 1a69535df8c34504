"""swinunetr_lib.notebooks.prediction: the gap between a written prediction and the computed value."""
from __future__ import annotations

import math

import pytest

from swinunetr_lib.notebooks.prediction import NOT_COMPUTED, NOT_PREDICTED, check_prediction, compare


def test_a_number_reports_its_signed_gap_and_relative_error(capsys):
    [g] = check_prediction(16, 11.6, what="parameters at 48 / at 12")
    assert g.error == pytest.approx(4.4) and g.relative == pytest.approx(4.4 / 11.6) and g.close is False
    assert capsys.readouterr().out.strip() == ("parameters at 48 / at 12: predicted 16, computed 11.6 -> off by +4.4 "
                                               "(38 % too high)")
    low = compare(0.5, 0.685, what="Dice")
    assert low.error == pytest.approx(-0.185) and "27 % too low" in low.text
    near = compare(1.05, 1.0986, tolerance=0.1)
    assert near.close is True and "within 10 %" in near.text
    assert compare(1, 0).close is False and "the computed value is 0" in compare(1, 0).text
    assert compare(0, 0).close is True
    assert "more than 10 times too high" in compare(0.8, 0.0087).text
    assert compare(1500, 1043.118, what="liver (mL)").text == ("liver (mL): predicted 1,500, computed 1,043 -> off by "
                                                              "+457 (44 % too high)")


def test_nothing_written_or_nothing_computed_is_said_not_raised():
    g = compare(None, math.log(3), what="chance")
    assert g.close is None and NOT_PREDICTED in g.text and "computed 1.099;" in g.text
    for missing in (None, float("nan")):
        g = compare(1.0, missing)
        assert g.close is None and NOT_COMPUTED in g.text
    assert repr(check_prediction(None, None, show=False)) == "nothing to compare yet"


def test_texts_and_collections():
    assert compare("Liver ", "liver").close is True and compare("spleen", "liver").close is False
    g = compare(["liver", "Spleen", "aorta"], ["spleen", "kidney"])
    assert g.close is False and "1 of the 2 computed" in g.text and "(Spleen)" in g.text
    assert compare(["kidney", "spleen"], ("spleen", "kidney")).close is True


def test_a_dict_gives_one_line_per_computed_key(capsys):
    gaps = check_prediction({"Dice": 0.5}, {"Dice": 0.685, "HD95": 4.0}, what="shift 4")
    out = capsys.readouterr().out.splitlines()
    assert [g.what for g in gaps] == ["shift 4, Dice", "shift 4, HD95"]
    assert out[0].startswith("shift 4, Dice: predicted 0.5, computed 0.685") and NOT_PREDICTED in out[1]
    assert repr(gaps) == "0 of 1 predictions close"
    assert [g.close for g in check_prediction(None, {"a": 1.0}, show=False)] == [None]
    with pytest.raises(KeyError, match="prediction keys \\['dice'\\] are not among"):
        check_prediction({"dice": 0.5}, {"Dice": 0.685}, show=False)
    with pytest.raises(TypeError, match="predict a dict with the keys"):
        check_prediction(0.5, {"Dice": 0.685}, show=False)


def test_an_empty_computed_dict_is_not_computed_yet():
    [g] = check_prediction({"cut out": 2.0}, {}, show=False)
    assert g.close is None and NOT_COMPUTED in g.text
