import dataclasses

import numpy as np
import pytest

from gmmmem import config
from gmmmem.agreement import compare
from gmmmem.experiments import PhaseTransitionResult

RUN = config.data_dir() / "phase_transition" / "paper_d30_K4_N100_seed0.json"


def test_a_run_agrees_with_itself():
    a = PhaseTransitionResult.load(RUN)
    c = compare(a, a)
    assert c.max_abs_z == 0 and np.all(c.var_rel_diff == 0) and c.midpoint_diff == 0
    assert c.midpoint_noise > 0 and list(c.model_sizes) == a.model_sizes


def test_ratio_z_is_the_two_proportion_z_score():
    a = PhaseTransitionResult.load(RUN)
    ratio = a.memorization_ratio.copy()
    k = a.model_sizes.index(80)
    ratio[k] += 0.1  # 0.51 -> 0.61 with 200 samples each
    b = dataclasses.replace(a, memorization_ratio=ratio, model_sizes=list(a.model_sizes))
    c = compare(a, b)
    p = (a.memorization_ratio[k] + ratio[k]) / 2
    assert c.ratio_z[k] == pytest.approx(0.1 / np.sqrt(p * (1 - p) * 2 / 200))
    assert np.count_nonzero(c.ratio_z) == 1 and c.midpoint_diff < 0


def test_only_common_sizes_of_one_configuration_are_compared():
    a = PhaseTransitionResult.load(RUN)
    b = dataclasses.replace(a, model_sizes=[10, 20, 30], memorization_ratio=np.zeros(3),
                            learned_var=a.learned_var[:3])
    assert list(compare(a, b).model_sizes) == [10, 20, 30]
    with pytest.raises(ValueError, match="different configurations"):
        compare(a, dataclasses.replace(a, N=50))
    with pytest.raises(ValueError, match="no model size"):
        compare(a, dataclasses.replace(b, model_sizes=[1, 2, 3]))
