"""`trainer.eager`: auto runs a run's steps eagerly when it has too few for tracing its graphs to pay (the threshold
is benchmarks/eager.py's break-even); that eager and traced steps compute the same is tested in tests/test_cv.py
(`test_a_fold_trains_the_same_alone_as_after_other_folds`)."""

import pytest

from hms.config import compose
from hms.cv import EAGER_STEPS, eager_for
from hms.devices import Devices


def devices(replicas: int = 1) -> Devices:
    return Devices(strategy=None, replicas=replicas, precision="float32", description="")


@pytest.mark.parametrize("overrides, steps_per_epoch, eager", [
    # folds x epochs x steps per epoch, counted by hand against the threshold
    (["cv.folds=2", "trainer.epochs=1"], 2, True),                                      # 4: a test's tiny run
    (["cv.folds=5", "trainer.epochs=6"], 31, False),                                    # 930: the embedded default (31 steps an epoch)
    (["cv.folds=2", "trainer.epochs=1"], EAGER_STEPS // 2, False),                      # exactly the threshold: traced
    (["cv.folds=2", "trainer.epochs=1"], EAGER_STEPS // 2 - 1, True),                   # one fold-step under it
    (["cv.folds=5", "trainer.epochs=1", "cv.only=[3]"], EAGER_STEPS - 1, True),         # only the folds this run trains
    (["cv.folds=5", "trainer.epochs=1"], EAGER_STEPS - 1, False),
    (["cv.folds=2", "trainer.epochs=1", "cv.stage2=true", "cv.stage2_epochs=1"], 2, True),   # 2 x (1 + 1) x 2 = 8
    (["cv.folds=2", "trainer.epochs=1", "cv.stage2=true", "cv.stage2_epochs=2"], 2, False),  # 2 x (1 + 2) x 2 = 12
    (["cv.folds=2", "trainer.epochs=1", "cv.stage2_epochs=9"], 2, True),  # no second stage: its epochs do not count
])
def test_auto_runs_a_run_with_few_steps_eagerly_and_a_longer_one_traced(overrides, steps_per_epoch, eager):
    assert EAGER_STEPS == 12  # the counts above are worked out for it
    assert eager_for(compose(overrides), devices(), steps_per_epoch) is eager


def test_auto_traces_over_several_replicas_and_a_choice_is_kept_as_given():
    tiny = ["cv.folds=2", "trainer.epochs=1"]
    assert eager_for(compose(tiny), devices(2), 1) is False  # a traced step spreads a batch over replicas
    assert eager_for(compose([*tiny, "trainer.eager=true"]), devices(2), 1) is True
    assert eager_for(compose(["cv.folds=5", "trainer.epochs=50", "trainer.eager=true"]), devices(), 1000) is True
    assert eager_for(compose([*tiny, "trainer.eager=false"]), devices(), 1) is False


def test_a_value_that_is_not_a_choice_is_refused_by_name():
    from hms.config import validate
    from hms.schema import ConfigError

    with pytest.raises(ConfigError, match="trainer.eager='sometimes' is not one of auto, True, False"):
        validate(compose(["trainer.eager=sometimes"]))
