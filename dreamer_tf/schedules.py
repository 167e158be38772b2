"""When to train, log, evaluate and save: pure functions of the checkpointed counters, so a resumed
run keeps the schedule of the run it continues."""

import time


class Ratio:
    """Updates owed at a train ratio: `ratio` replayed steps per policy step, `per_update` (B * T)
    replayed steps per update.

    With `every` = N > 0 (DreamerV1, V2) the updates come in bursts: the whole N-step period's
    updates are owed at its start. `pretrain` updates are owed on top from the first step on.
    """

    def __init__(self, ratio, per_update, every=0, pretrain=0):
        self.ratio, self.per_update = ratio, per_update
        self.every, self.pretrain = every, pretrain

    def owed(self, steps):
        """Updates owed in all after `steps` policy steps (counted from the end of prefill)."""
        steps = max(0, steps)
        if self.every:
            steps = (steps // self.every + 1) * self.every
        return int(steps * self.ratio / self.per_update) + self.pretrain

    def __call__(self, steps, updates):
        """Updates still owed after `steps` policy steps when `updates` have run."""
        return self.owed(steps) - updates


class Every:
    """Fires once the step reaches the next multiple of `every` (never when every is 0); the
    multiples line up with step 0, so a resumed run keeps its cadence."""

    def __init__(self, every, step=0):
        self.every = every
        self.next = self._after(step)

    def _after(self, step):
        return (step // self.every + 1) * self.every if self.every else float('inf')

    def __call__(self, step):
        if step < self.next:
            return False
        self.next = self._after(step)
        return True


class Clock:
    """Due once `minutes` of wall clock have passed since the last `reset` (never when 0)."""

    def __init__(self, minutes, now=time.monotonic):
        self.minutes, self.now = minutes, now
        self.reset()

    def reset(self):
        self.start = self.now()

    def __call__(self):
        return bool(self.minutes) and self.now() - self.start >= 60.0 * self.minutes
