"""Times Replay.add and Replay.sample(16) with length 65 on a full buffer, and episode writes.

Cases: 1,000,000 stored vector steps, and 100,000 stored 64x64x3 uint8 image steps; ten episodes
more than fit are added so eviction runs too. Run from the repository root:
`python benchmarks/replay_speed.py`.
"""

import os
import sys
import tempfile
import time

import numpy as np

# Running this file as a script puts benchmarks/ on the path, not the checkout holding dreamer_tf.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dreamer_tf.replay import Replay  # noqa: E402

BATCH, LENGTH, EPISODE = 16, 65, 1000


def steps(observation, count):
    """Yields `count` steps of 1000-step episodes, all sharing the arrays of one template."""
    flags = {(first, last): {"is_first": np.bool_(first), "is_last": np.bool_(last),
                             "is_terminal": np.bool_(False)}
             for first in (False, True) for last in (False, True)}
    base = {**observation, "action": np.zeros(6, np.float32), "reward": np.float32(0)}
    for index in range(count):
        t = index % EPISODE
        yield {**base, **flags[(t == 0, t == EPISODE - 1)]}


def run(name, observation, count):
    replay = Replay(length=LENGTH, capacity=count)
    added = count + 10 * EPISODE
    start = time.perf_counter()
    for step in steps(observation, added):
        replay.add(step)
    add_us = (time.perf_counter() - start) / added * 1e6
    for _ in range(5):
        replay.sample(BATCH)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        replay.sample(BATCH)
        times.append(time.perf_counter() - start)
    times = np.array(times) * 1e3
    megabytes = replay.stats()["bytes"] / 2**20
    print(f"{name}: {len(replay):,} steps ({megabytes:,.0f} MiB): add {add_us:.1f} us/step, "
          f"sample({BATCH}) x {LENGTH}: median {np.median(times):.2f} ms, "
          f"p95 {np.percentile(times, 95):.2f} ms, max {times.max():.2f} ms")


def persist(observation, episodes=5):
    with tempfile.TemporaryDirectory() as directory:
        replay = Replay(length=LENGTH, capacity=10 * EPISODE, directory=directory)
        start = time.perf_counter()
        for step in steps(observation, episodes * EPISODE):
            replay.add(step)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        loaded = Replay(length=LENGTH, capacity=10 * EPISODE, directory=directory).load()
        load_seconds = time.perf_counter() - start
    print(f"persisted image episodes of {EPISODE} steps: {seconds / episodes * 1e3:.0f} ms per episode "
          f"(adds and write), load {load_seconds / episodes * 1e3:.0f} ms per episode ({loaded:,} steps)")


def main():
    image = {"image": np.zeros((64, 64, 3), np.uint8)}
    run("vector", {"vector": np.zeros(24, np.float32)}, 1_000_000)
    run("image", image, 100_000)
    persist(image)


if __name__ == "__main__":
    main()
