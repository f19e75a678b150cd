import pytest
import torch

from gmmmem import config, device


def test_scale_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("GMMMEM_SCALE", raising=False)
    assert config.scale() == "default"
    monkeypatch.setenv("GMMMEM_SCALE", "ci")
    assert config.scale() == "ci"
    monkeypatch.setenv("GMMMEM_SCALE", "huge")
    with pytest.raises(ValueError, match="scale"):
        config.scale()


def test_device_default_and_override(monkeypatch):
    monkeypatch.delenv("GMMMEM_DEVICE", raising=False)
    assert device.default().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("GMMMEM_DEVICE", "cpu")
    assert device.default() == torch.device("cpu") and device.resolve(None) == torch.device("cpu")
    assert device.resolve("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GMMMEM_DEVICE", "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        device.default()
