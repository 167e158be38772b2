"""One end-to-end learning test: a small DreamerV3 must learn gymnasium CartPole-v1.

Random CartPole policies last about 22 steps. The test trains for 6k env steps (2,500 updates; 5.2
minutes measured on one thread of a shared 2-core CPU) and requires the last 10 episodes to average
at least 150 steps, which only happens when the world model, the imagination returns and the actor
gradient all work (flipping the actor loss sign makes the agent drop the pole faster than random, and
the test fails).
"""

import numpy as np
import pytest

from dreamer_tf import config as configlib
from dreamer_tf.logger import read_metrics
from dreamer_tf.trainer import train

# The README quickstart: the `gym` benchmark with the `small` overlay (dreamer_tf/configs/dreamerv3.yaml).
OVERLAYS = ('gym', 'small')
OVERRIDES = {'env.task': 'CartPole-v1', 'run.steps': 6000, 'run.save_every': 100000}
RANDOM_MEAN_LENGTH = 22.0   # CartPole-v1 with uniform random actions (gymnasium docs, ~22 steps)
LEARNED_MEAN_LENGTH = 150.0  # about 7x random; see the measurements at the assert


@pytest.mark.learning
def test_dreamerv3_learns_cartpole(tmp_path):
    config = configlib.load('dreamerv3', OVERLAYS, OVERRIDES)
    train(config, tmp_path)
    scores = [m['episode/score'] for m in read_metrics(tmp_path) if 'episode/score' in m]
    final = float(np.mean(scores[-10:]))
    print(f'episodes {len(scores)}, first 10 mean {np.mean(scores[:10]):.1f}, '
          f'last 10 mean {final:.1f}')
    # Train ratio 128 and lr 2e-4 (the small overlay since session 11), 6k steps: last-10 mean 357 (one
    # thread, shared CPU; the quickstart run was at 297 at 5.2k steps); with the actor loss sign flipped,
    # 8.6. 150, about seven times the random length, leaves room for seed noise (the bound was three
    # times random at ratio 16 and 30k steps, where the runs reached 139 and 152).
    assert final >= LEARNED_MEAN_LENGTH, f'last 10 episodes average {final:.1f} (random {RANDOM_MEAN_LENGTH})'
