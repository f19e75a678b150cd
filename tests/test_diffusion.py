import math

import pytest
import torch

from gmmmem import diffusion


def test_schedule_is_variance_preserving():
    t = diffusion.time_grid(dtype=torch.float64)
    assert torch.allclose(diffusion.alpha(t) ** 2 + diffusion.sigma(t) ** 2, torch.ones(26, dtype=torch.float64))
    assert torch.allclose(diffusion.snr(t), diffusion.alpha(t) ** 2 / diffusion.sigma(t) ** 2)


def test_floats_and_tensors_agree():
    for t in (0.001, 0.36, 0.999):
        assert diffusion.alpha(t) == pytest.approx(math.sqrt(1 - t * t))
        assert diffusion.sigma(t) == t
        assert diffusion.snr(t) == pytest.approx(diffusion.snr(torch.tensor(t, dtype=torch.float64)).item())


def test_time_grid_is_the_papers():
    t = diffusion.time_grid(dtype=torch.float64)
    assert t.shape == (26,)
    assert t[0].item() == pytest.approx(0.001) and t[-1].item() == pytest.approx(0.999)
    assert torch.allclose(t.diff(), torch.full((25,), 0.998 / 25, dtype=torch.float64))


@pytest.mark.parametrize("kw", [dict(num=0), dict(t_min=0.0), dict(t_max=1.0), dict(t_min=0.5, t_max=0.4)])
def test_time_grid_rejects_bad_arguments(kw):
    with pytest.raises(ValueError):
        diffusion.time_grid(**kw)
