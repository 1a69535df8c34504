"""E0, the label-scarcity check: atlas, majority vote and the rule on tiny phantoms."""
import numpy as np
import pytest

from swinunetr_lib.experiments.dense_readout import atlas_dice, majority_vote, mean_dice
from swinunetr_lib.experiments.label_scarcity import MIN_STEP, label_scarcity, phantom_family


def test_atlas_of_identical_cases_is_dice_one():
    labeled, _ = phantom_family(0.0, 2, 1, seed=3, spacing=12.0)
    case = labeled[0]
    out = label_scarcity([case, case], [case], feature_size=0)
    assert out["atlas_single"] == 1.0 and out["atlas_majority"] == 1.0 and out["atlas_step"] == 0.0
    assert "scarce" not in out  # without the readout the rule is not decided


def test_majority_vote_picks_the_most_frequent_id_lowest_on_ties():
    a, b, c = (np.array([[[k, 1, 2, 3]]]) for k in (0, 0, 5))
    vote = majority_vote([a, b, c])
    np.testing.assert_array_equal(vote, [[[0, 1, 2, 3]]])
    np.testing.assert_array_equal(majority_vote([np.array([[[2]]]), np.array([[[1]]])]), [[[1]]])


def test_variable_family_shares_one_grid_and_lowers_the_atlas():
    lab0, held0 = phantom_family(0.0, 2, 1, seed=0, spacing=12.0)
    lab1, held1 = phantom_family(1.0, 2, 1, seed=0, spacing=12.0)
    assert {c[1].shape for c in lab1 + held1} == {lab0[0][1].shape}
    d0 = mean_dice(atlas_dice(lab0[0][1], [held0[0][1]])[0])
    d1 = mean_dice(atlas_dice(lab1[0][1], [held1[0][1]])[0])
    assert d1 < d0  # a posed, reshaped family is harder to copy labels across


@pytest.mark.slow  # ~20 s alone, minutes on a busy machine
def test_label_scarcity_with_the_readout_reports_every_number():
    labeled, held = phantom_family(0.5, 2, 1, seed=0, spacing=12.0)
    out = label_scarcity(labeled, held, feature_size=12, per_class=200, max_iter=20)
    for key in ("atlas_single", "atlas_majority", "readout_1", "readout_all"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["scarce"] == (out["atlas_step"] >= MIN_STEP and out["readout_step"] >= MIN_STEP)


@pytest.mark.parametrize("argv", [["--n-labeled", "1"], ["--variabilities", "[2]"]])
def test_label_scarcity_command_refuses_bad_values_in_one_line(argv, capsys):
    from swinunetr_lib.experiments.label_scarcity import main

    assert main(argv + ["--feature-size", "0", "--spacing", "24"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err
