"""The driver's env stepping and episode bookkeeping, with scripted envs and hand-counted totals."""

import numpy as np
import tensorflow as tf

from dreamer_tf.driver import Driver, eval_scores, policy_batch, random_actions
from dreamer_tf.envs import ActionSpec
from dreamer_tf.trainer import Counters

SPACE = ActionSpec(discrete=True, size=2)


class ScriptedEnv:
    """Episodes of `length` steps with reward `reward` each; `restart_at` makes step k a restart."""

    act_space = SPACE

    def __init__(self, length, reward, restart_at=()):
        self.length, self.reward, self.restart_at = length, reward, set(restart_at)
        self.t, self.calls = 0, 0

    def _obs(self, reward, first, last):
        return {'vector': np.full(3, self.t, np.float32), 'reward': np.float32(reward),
                'is_first': first, 'is_last': last, 'is_terminal': last}

    def reset(self):
        self.t = 0
        return self._obs(0.0, True, False)

    def step(self, action):
        self.calls += 1
        if self.calls in self.restart_at:       # a restarted env process answers with a fresh episode
            return self.reset()
        self.t += 1
        obs = self._obs(self.reward, False, self.t == self.length)
        if obs['is_last']:
            obs['log/achievement'] = 1.0
        return obs


class ListReplay:
    def __init__(self):
        self.steps = []

    def add(self, step, worker=0):
        self.steps.append((worker, step))


def drive(envs, steps, action_repeat=2):
    replay, counters, episodes = ListReplay(), Counters(), []
    driver = Driver(envs, replay, counters, action_repeat, lambda *args: episodes.append(args))
    driver.reset(lambda n: {'n': n})

    def act(obs, state):
        return np.eye(2, dtype=np.float32)[[1] * len(obs)], state

    for _ in range(steps):
        driver.step(act)
    return driver, replay, counters, episodes


def test_driver_counts_steps_and_books_each_episode():
    # Env 0: episodes of 3 steps, reward 1; env 1: 4 steps, reward 2. After 8 steps of both:
    # env 0 finished 2 episodes (steps 3, 6), env 1 finished 2 (steps 4, 8).
    driver, replay, counters, episodes = drive([ScriptedEnv(3, 1.0), ScriptedEnv(4, 2.0)], 8)
    assert driver.state == {'n': 2}
    assert int(counters.policy_steps.numpy()) == 16
    assert int(counters.env_steps.numpy()) == 32           # action repeat 2
    assert int(counters.episodes.numpy()) == 4
    assert driver.scores == [3.0, 8.0, 3.0, 8.0]
    assert episodes[0] == (3.0, 6, {'achievement': 1.0}) and episodes[1] == (8.0, 8, {'achievement': 1.0})
    # Every env step and every reset went to the replay: 2 resets + 16 steps + 4 resets after episodes.
    assert len(replay.steps) == 22
    firsts = [step for _, step in replay.steps if step['is_first']]
    assert len(firsts) == 6 and all(not step['action'].any() for step in firsts)
    assert all(step['action'].tolist() == [0.0, 1.0] for _, step in replay.steps if not step['is_first'])
    assert not any(key.startswith('log/') for _, step in replay.steps for key in step)
    assert driver.running == {0: (2.0, 2)}                  # env 0 is 2 steps into its third episode


def test_a_restarted_env_drops_its_partial_episode():
    # Env step 2 answers with a restart: the 1 step before it is not an episode; steps 3-5 are one.
    driver, replay, counters, episodes = drive([ScriptedEnv(3, 1.0, restart_at=[2])], 5)
    assert int(counters.policy_steps.numpy()) == 4          # the restart is not a policy step
    assert driver.scores == [3.0] and int(counters.episodes.numpy()) == 1
    assert [step['is_first'] for _, step in replay.steps] == [True, False, True, False, False, False, True]


def test_eval_scores_sum_rewards_per_episode_with_the_eval_mode():
    modes = []

    def policy(batch, state, mode):
        modes.append(mode)
        assert batch['vector'].shape == (1, 3) and batch['is_first'].shape == (1,)
        return tf.one_hot([0], 2), state

    scores = eval_scores(ScriptedEnv(4, 0.5), policy, lambda n: None, ['vector'], 3)
    assert scores == [2.0, 2.0, 2.0] and set(modes) == {'eval'} and len(modes) == 12


def test_policy_batch_and_random_actions():
    batch = policy_batch([{'vector': np.zeros(3), 'is_first': True},
                          {'vector': np.ones(3), 'is_first': False}], ['vector'])
    assert batch['vector'].shape == (2, 3) and batch['is_first'].tolist() == [True, False]
    rng = np.random.default_rng(0)
    onehot = random_actions(SPACE, rng, 100)
    assert onehot.shape == (100, 2) and set(onehot.sum(-1)) == {1.0} and 0 < onehot[:, 0].sum() < 100
    box = random_actions(ActionSpec(discrete=False, size=3), rng, 100)
    assert box.dtype == np.float32 and np.abs(box).max() <= 1.0
