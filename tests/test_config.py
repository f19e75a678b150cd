import pytest
import torch

from gmmmem import config, device, validate


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


def test_the_shared_argument_checks_name_what_is_wrong():
    assert validate.model_sizes([3, 1, 5], 5) == [3, 1, 5]
    with pytest.raises(ValueError, match="sizes is empty"):
        validate.model_sizes([], 5, "sizes")
    with pytest.raises(ValueError, match=r"model size in model_sizes\[2\]"):
        validate.model_sizes([1, 6], 5, "model_sizes[2]")
    assert validate.training_set(2) == 2
    with pytest.raises(ValueError, match="N must be >= 2"):
        validate.training_set(1)
    assert validate.data_variance(2) == 2.0 and isinstance(validate.data_variance(2), float)
    for bad in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="data variance"):
            validate.data_variance(bad)


def test_a_training_device_is_resolved_and_the_cpu_allocator_tuned_once(monkeypatch):
    calls = []
    monkeypatch.setattr(device, "tune_cpu_allocator", lambda: calls.append(1))
    assert device.for_training("cpu") == torch.device("cpu") and calls == [1]
    with pytest.raises(ValueError, match="unknown device"):
        device.for_training("tpu")
