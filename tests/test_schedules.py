"""The schedules against hand-worked numbers: the train ratio (with V1/V2 bursts and pretraining),
the step cadence and the wall clock."""

import pytest

from dreamer_tf.schedules import Clock, Every, Ratio


@pytest.mark.parametrize('steps, owed', [(-5, 0), (0, 0), (1, 0), (2, 1), (3, 1), (400, 200)])
def test_ratio_owes_ratio_over_batch_steps_updates_per_policy_step(steps, owed):
    # ratio 32 over 4 x 16 = 64 replayed steps per update: one update per 2 policy steps, rounded down.
    assert Ratio(32, 64).owed(steps) == owed


def test_ratio_counts_what_is_still_owed():
    ratio = Ratio(32, 64)
    assert ratio(400, 150) == 50 and ratio(400, 200) == 0 and ratio(401, 200) == 0


@pytest.mark.parametrize('steps, owed', [(0, 100), (499, 100), (500, 200), (1234, 300)])
def test_ratio_in_bursts_owes_a_whole_period_at_its_start(steps, owed):
    # DreamerV1: 100 updates of 50 x 50 steps every 500 policy steps = ratio 100 * 2500 / 500 = 500.
    assert Ratio(500, 2500, every=500).owed(steps) == owed


@pytest.mark.parametrize('steps, owed', [(0, 101), (4, 101), (5, 102), (12, 103)])
def test_ratio_adds_pretrain_updates_from_the_first_step(steps, owed):
    # DreamerV2: one update of 16 x 50 steps every 5 policy steps = ratio 800 / 5 = 160, 100 pretrain.
    assert Ratio(160, 800, every=5, pretrain=100).owed(steps) == owed


def test_every_fires_at_each_multiple_once():
    every = Every(100)
    assert [step for step in range(0, 401, 25) if every(step)] == [100, 200, 300, 400]


def test_every_lines_up_with_step_zero_after_jumps_and_resumes():
    every = Every(100)
    assert not every(96) and every(104)             # a jump past 100 fires once ...
    assert not every(199) and every(200)            # ... and the next is 200, not 204
    resumed = Every(100, step=250)
    assert resumed.next == 300 and not resumed(299) and resumed(300)
    at_multiple = Every(100, step=300)              # a run resumed at a saved multiple: not again
    assert not at_multiple(300) and at_multiple(400)


def test_every_zero_never_fires():
    never = Every(0, step=7)
    assert not any(never(step) for step in (0, 1, 10 ** 9))


def test_clock_is_due_after_its_minutes_since_the_last_reset():
    now = [0.0]
    clock = Clock(2.0, now=lambda: now[0])
    for seconds, due in [(60.0, False), (119.9, False), (120.0, True), (500.0, True)]:
        now[0] = seconds
        assert clock() is due, seconds
    clock.reset()                                   # at 500 s
    now[0] = 619.0
    assert not clock()
    now[0] = 620.0
    assert clock()
    assert not Clock(0.0, now=lambda: 1e9)()
