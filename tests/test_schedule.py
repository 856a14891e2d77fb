import pytest
from omegaconf import OmegaConf

from hms.schedule import lr_at


def test_step_schedule_is_the_seeds():
    step = OmegaConf.create({"name": "step", "steps": [[0, 1e-3], [2, 1e-4], [3, 1e-5]]})
    assert [lr_at(step, e, 4) for e in range(4)] == [1e-3, 1e-3, 1e-4, 1e-5]


def test_cosine_warms_up_then_decays_to_min():
    cosine = OmegaConf.create({"name": "cosine", "lr": 1e-3, "warmup_epochs": 2, "min_lr": 1e-6})
    lrs = [lr_at(cosine, e, 10) for e in range(10)]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] == pytest.approx(1e-6)
