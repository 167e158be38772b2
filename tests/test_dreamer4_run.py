"""Dreamer 4's pipeline: its pure functions against naive loops, and reproduce/dreamer4.py end to end at the
debug size (all phases, metrics, resume that skips finished phases, bad input)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import dists
from dreamer_tf.dreamer4 import data, imagine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'reproduce', 'dreamer4.py')
PHASES = ('data', 'tokenizer', 'dynamics', 'bc', 'rl')


def test_lambda_returns_match_a_loop():
    rng = np.random.default_rng(0)
    # float32 inputs: the returns are computed in float32 (ops.lambda_return), the loop in float64.
    rewards, values = [rng.normal(size=s).astype(np.float32) for s in ((3, 5), (3, 6))]
    gamma, lam = 0.9, 0.7
    want = np.zeros((3, 5))
    for b in range(3):
        ret = values[b, 5]
        for k in range(4, -1, -1):
            ret = rewards[b, k] + gamma * ((1 - lam) * values[b, k + 1] + lam * ret)
            want[b, k] = ret
    got = imagine.lambda_returns(tf.constant(rewards), tf.constant(values), gamma, lam)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_lambda_one_is_the_discounted_sum_and_zero_is_td():
    rewards, values = np.ones((1, 3), np.float32), np.full((1, 4), 2.0, np.float32)
    mc = imagine.lambda_returns(tf.constant(rewards), tf.constant(values), 0.5, 1.0).numpy()
    np.testing.assert_allclose(mc[0, 0], 1 + 0.5 + 0.25 + 0.125 * 2.0)
    td = imagine.lambda_returns(tf.constant(rewards), tf.constant(values), 0.5, 0.0).numpy()
    np.testing.assert_allclose(td, np.full((1, 3), 2.0))


def test_value_loss_is_the_two_hot_cross_entropy_of_a_loop():
    rng = np.random.default_rng(1)
    bins = np.array(dists.symexp_bins(7), np.float64)
    logits, returns = rng.normal(size=(2, 3, 7)), rng.uniform(-3, 3, size=(2, 3))
    total = 0.0
    for b in range(2):
        for k in range(3):
            logp = logits[b, k] - np.log(np.exp(logits[b, k]).sum())
            hi = np.searchsorted(bins, returns[b, k])   # bins[hi - 1] <= x < bins[hi]
            w = (returns[b, k] - bins[hi - 1]) / (bins[hi] - bins[hi - 1])
            total -= (1 - w) * logp[hi - 1] + w * logp[hi]
    dist = dists.SymexpTwoHot(tf.constant(logits, tf.float32), bins)
    got = imagine.value_loss(dist, tf.constant(returns, tf.float32))
    np.testing.assert_allclose(float(got), total / 6, rtol=1e-5)


def test_discretise_picks_the_nearest_level():
    levels = imagine.action_values(5)
    np.testing.assert_allclose(levels, [-1, -0.5, 0, 0.5, 1])
    forces = np.linspace(-1.3, 1.3, 101)
    want = [int(np.argmin([abs(np.clip(f, -1, 1) - v) for v in levels])) for f in forces]
    got = imagine.discretise(forces, 5)
    # Exact midpoints may round either way; none of these forces is one.
    np.testing.assert_array_equal(got, want)


def test_psnr_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=(2, 3, 4, 4, 3)), rng.uniform(size=(2, 3, 4, 4, 3))
    want = 10 * np.log10(1 / ((a - b) ** 2).mean((-3, -2, -1)))
    np.testing.assert_allclose(imagine.psnr(a, b).numpy(), want, rtol=1e-5)


def test_windows_stay_inside_one_episode():
    episodes = [{'reward': np.full(n, float(i)), 'is_first': np.arange(n) == 0} for i, n in enumerate((5, 9))]
    batch = data.sample_windows(episodes, 50, 4, np.random.default_rng(0))
    assert batch['reward'].shape == (50, 4)
    assert (batch['reward'] == batch['reward'][:, :1]).all()     # one episode per window
    assert not batch['is_first'][:, 1:].any()


def test_policy_mix_and_labelling():
    kinds = [data.episode_policy(i, [0.1, 0.5], 1) for i in range(6)]
    assert kinds == [('scripted', 0.1), ('scripted', 0.5), ('random', None)] * 2
    labelled = data.labelled_episodes(40, 0.1, seed=0)
    assert len(labelled) == 4 and labelled <= set(range(40))
    assert data.labelled_episodes(3, 0.1, seed=0)   # at least one


def run_script(logdir, *args):
    env = {**os.environ, 'TF_NUM_INTRAOP_THREADS': '1', 'TF_NUM_INTEROP_THREADS': '1'}
    return subprocess.run([sys.executable, SCRIPT, f'--logdir={logdir}', *args], capture_output=True,
                          text=True, env=env, timeout=170, cwd=ROOT)


@pytest.mark.parametrize('args, needle', [
    (['--set', 'nope=1'], "Unknown config key 'nope'"),
    (['--set', 'batch_size=abc'], "'batch_size'"),
    (['--configs=bogus'], "Unknown overlay 'bogus'"),
    (['--task=walker_walk'], '--task=walker_walk'),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, needle):
    result = run_script(tmp_path, '--configs=debug', *args) if args[0] != '--configs=bogus' else \
        run_script(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and 'Traceback' not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_run_end_to_end_and_resume(tmp_path):
    logdir = tmp_path / 'run'
    first = run_script(logdir, '--configs=debug')
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    rows = [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]
    keys = set().union(*rows)
    for phase in ('tokenizer', 'dynamics', 'bc', 'rl'):
        assert any(key.startswith(f'{phase}/') for key in keys), phase
    for key in ('data/return_mean', 'tokenizer/psnr', 'dynamics/psnr_4step', 'dynamics/psnr_64step',
                'dynamics/psnr_repeat_last', 'bc/return', 'rl/return'):
        assert f'eval/{key}' in keys, key
    assert (logdir / 'dynamics_openloop.png').exists()
    assert len(data.episode_files(logdir / 'data' / 'train')) == 6
    episode = data.load_episodes(logdir / 'data' / 'train')[0]
    assert episode['image'].shape[1:] == (16, 16, 3) and episode['action'].shape[1:] == (5,)

    # A rerun skips every finished phase; without its done file the RL phase resumes from its last
    # checkpoint (already at the last update), so it only evaluates again.
    os.remove(logdir / 'rl' / 'done')
    second = run_script(logdir, '--configs=debug')
    assert second.returncode == 0, second.stderr[-3000:]
    for phase in PHASES[:-1]:
        assert f'[{phase}] finished earlier, skipped' in second.stdout
    assert '[rl] done' in second.stdout and '[rl] 6/6' not in second.stdout
    new_rows = [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()][len(rows):]
    assert [set(row) - {'step'} for row in new_rows] == [
        {'eval/rl/return', 'eval/rl/return_min', 'eval/rl/return_max', 'eval/rl/seconds'}]


def test_rollout_shapes_and_losses_leave_the_world_model_alone():
    import keras

    from dreamer_tf import config as configlib
    from dreamer_tf.dreamer4 import build
    config = configlib.load('dreamer4', ['debug'])
    keras.utils.set_random_seed(0)
    nets = build(config)
    value = imagine.ValueHead(config.dynamics.dim, 1, 8, config.heads.bins)
    latents = nets.tokenizer.encode(tf.random.uniform([2, 2, *config.tokenizer.image, 3]))
    actions = tf.one_hot([[0, 1], [2, 3]], config.actions)
    feats, taken, rewards = imagine.rollout(nets.dynamics, nets.heads, latents, actions, tf.ones([2, 2]),
                                            3, 4, tf.constant([1, 2]))
    assert feats.shape == (2, 4, config.dynamics.dim) and taken.shape == (2, 3, config.actions)
    assert rewards.shape == (2, 3)
    variables = nets.dynamics.trainable_variables + nets.heads.policy_out.trainable_variables
    with tf.GradientTape() as tape:
        policy, critic, _ = imagine.imagination_losses(nets.heads, nets.heads, value, feats, taken, rewards,
                                                       0.9, 0.95, 0.5, 0.3)
    grads = tape.gradient(policy, variables)
    count = len(nets.dynamics.trainable_variables)
    assert all(g is None for g in grads[:count])              # the world model is frozen
    assert all(g is not None for g in grads[count:])          # the policy learns
