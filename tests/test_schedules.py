import pytest

from fmnist.errors import ConfigError
from fmnist.schedules import SCHEDULES, ConstantConfig, CosineConfig, OneCycleConfig, ScheduleConfig, StepConfig, build_schedule


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_stays_within_zero_and_one(name):
    factor = build_schedule(SCHEDULES.schema(name)(epochs=10))
    values = [factor(t / 10) for t in range(101)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert max(values) == pytest.approx(1.0, abs=0.05)


def test_schedule_values_at_known_points():
    assert build_schedule(ConstantConfig())(3.7) == 1.0
    step = build_schedule(StepConfig(epochs=10, step_size=3, gamma=0.1))
    assert [step(t) for t in (0, 2.9, 3.0, 6.5)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    cosine = build_schedule(CosineConfig(epochs=4))
    assert [cosine(t) for t in (0, 2, 4)] == pytest.approx([1.0, 0.5, 0.0])
    onecycle = build_schedule(OneCycleConfig(epochs=8, warmup=0.25))
    assert [onecycle(t) for t in (0, 1, 2, 5, 8)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])


@pytest.mark.parametrize(
    "schema,kwargs,message",
    [
        (ConstantConfig, {"epochs": 0}, "schedule.epochs must be >= 1, got 0"),
        (ScheduleConfig, {"name": "linear"}, "unknown schedule 'linear'"),
        (StepConfig, {"gamma": 0}, "gamma"),
        (OneCycleConfig, {"warmup": 1.0}, "warmup"),
    ],
)
def test_bad_schedule_values_are_refused(schema, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        schema(**kwargs)
