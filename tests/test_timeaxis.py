"""The interval rule that maps a denoiser call's time to a step."""

import pytest

from tmpdiff_core.timeaxis import resample_precisions, step_of, uniform_boundaries

GRID = [1.0, 0.75, 0.5, 0.25, 0.0]


@pytest.mark.parametrize(
    "t,step",
    [
        (1.3, 0),  # above the grid clamps to the first step
        (1.0, 0),
        (0.8, 0),
        (0.75, 1),  # a step's own start belongs to it (heun's corrector lands here)
        (0.75 * (1 + 1e-7), 1),  # float round trip of the same sigma
        (0.75 * (1 - 1e-7), 1),
        (0.6, 1),  # dpm_2's midpoint stays in its interval
        (0.25, 3),
        (0.01, 3),
        (0.0, 3),  # the endpoint clamps to the last step
    ],
)
def test_step_of(t, step):
    assert step_of(t, GRID) == step


def test_step_of_works_in_raw_sigma_units():
    sigmas = [14.6, 7.0, 3.0, 1.0, 0.0292]
    assert [step_of(s, sigmas) for s in (14.6, 8.0, 7.0, 0.5)] == [0, 0, 1, 3]


def test_resample_by_time_and_by_index():
    names = ["a", "b", "c", "d"]
    assert resample_precisions(names, GRID, uniform_boundaries(2)) == ["a", "c"]
    assert resample_precisions(names, GRID, [1.0, 0.9, 0.1, 0.05, 0.0]) == names


def test_step_of_needs_a_step():
    with pytest.raises(ValueError, match="at least two"):
        step_of(0.5, [1.0])
