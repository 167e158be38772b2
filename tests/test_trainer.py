"""In-process tests of the trainer: train-ratio schedule, checkpoint contents, config guard."""

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import config as configlib
from dreamer_tf.driver import random_actions
from dreamer_tf.trainer import Trainer


def debug_config(**overrides):
    sets = {'env.suite': 'gym', 'env.task': 'CartPole-v1', 'run.eval_every': 0, **overrides}
    return configlib.load('dreamerv3', ['debug'], [f'{k}={v}' for k, v in sets.items()])


def test_train_ratio_schedule(tmp_path):
    # debug: batch 4 x 16 = 64 replayed steps per update; ratio 32 -> one update per 2 policy steps.
    config = debug_config(**{'run.steps': 600, 'run.prefill': 200})
    trainer = Trainer(config, tmp_path)
    try:
        trainer.run()
        policy_steps = int(trainer.counters.policy_steps.numpy())
        assert policy_steps == 600
        assert int(trainer.counters.updates.numpy()) == (600 - 200) * 32 // 64
        assert trainer.updates_due() == 0
    finally:
        trainer.close()


def test_checkpoint_restores_weights_optimizer_and_counters(tmp_path):
    config = debug_config(**{'run.steps': 400, 'run.prefill': 200})
    first = Trainer(config, tmp_path)
    try:
        first.run()
        weights = [v.numpy() for v in first.agent.train_vars]
        moments = [v.numpy() for v in first.agent.opt.nu]
        slow = [v.numpy() for v in first.agent.ac.slow_critic.weights]
        retnorm = first.agent.ac.retnorm.hi.numpy()
        counters = {k: int(getattr(first.counters, k).numpy())
                    for k in ('env_steps', 'policy_steps', 'updates', 'episodes')}
    finally:
        first.close()
    second = Trainer(config, tmp_path)
    try:
        second.restore()
        for a, b in zip(weights, second.agent.train_vars):
            np.testing.assert_array_equal(a, b.numpy())
        for a, b in zip(moments, second.agent.opt.nu):
            np.testing.assert_array_equal(a, b.numpy())
        for a, b in zip(slow, second.agent.ac.slow_critic.weights):
            np.testing.assert_array_equal(a, b.numpy())
        assert second.agent.ac.retnorm.hi.numpy() == retnorm
        assert int(second.agent.opt.step.numpy()) == counters['updates']
        for key, value in counters.items():
            assert int(getattr(second.counters, key).numpy()) == value
        assert len(second.replay) > 0, 'finished episodes were not reloaded'
    finally:
        second.close()


def test_logdir_with_different_config_is_refused(tmp_path):
    Trainer(debug_config(), tmp_path).close()
    with pytest.raises(configlib.ConfigError, match='rssm.deter'):
        Trainer(debug_config(**{'rssm.deter': 64}), tmp_path)
    # Only the step budget and the bookkeeping cadence may change between invocations.
    Trainer(debug_config(**{'run.steps': 123}), tmp_path).close()
    cadence = {'run.save_every': 7, 'run.save_minutes': 1.5, 'run.log_every': 9}
    Trainer(debug_config(**cadence), tmp_path).close()


def test_logdir_from_before_a_new_config_key_still_resumes(tmp_path):
    # A run saved by an older version lacks keys added since (here distribute.*): it resumes with
    # their defaults. config.yaml is then rewritten with the full config.
    import yaml
    Trainer(debug_config(), tmp_path).close()
    path = tmp_path / 'config.yaml'
    saved = yaml.safe_load(path.read_text())
    del saved['config']['distribute']
    path.write_text(yaml.safe_dump(saved))
    Trainer(debug_config(), tmp_path).close()
    assert 'distribute' in yaml.safe_load(path.read_text())['config']


@pytest.mark.parametrize('minutes, saves', [(1e-9, 'several'), (0.0, 'one')])
def test_checkpoints_also_follow_the_wall_clock(minutes, saves, tmp_path):
    # Step schedule far beyond the run: only the clock (or the end of the run) can save.
    from dreamer_tf.checkpoints import list_checkpoints
    config = debug_config(**{'run.steps': 230, 'run.prefill': 200, 'run.save_every': 100000,
                             'run.save_minutes': minutes, 'run.keep_checkpoints': 1000})
    trainer = Trainer(config, tmp_path)
    try:
        trainer.run()
    finally:
        trainer.close()
    found = list_checkpoints(str(tmp_path / 'checkpoints'))
    assert found[-1].endswith('ckpt-230')
    assert len(found) > 10 if saves == 'several' else len(found) == 1, found


def test_policy_modes_and_random_actions(tmp_path):
    trainer = Trainer(debug_config(), tmp_path)
    try:
        obs = trainer.envs[0].reset()
        batch = {'vector': obs['vector'][None], 'is_first': np.array([True])}
        state = trainer.agent.initial_state(1)
        for mode in ('train', 'eval'):
            action, _ = trainer.agent.policy(batch, state, mode)
            assert action.shape == (1, 2)
            np.testing.assert_allclose(tf.reduce_sum(action, -1).numpy(), 1.0, atol=1e-6)
        actions = random_actions(trainer.act_space, trainer.rng, 500)
        assert set(actions.argmax(-1)) == {0, 1} and np.all(actions.sum(-1) == 1)
    finally:
        trainer.close()


def test_compiled_functions_do_not_retrace_after_warm_up(tmp_path):
    # Every train step sees the same batch structure (with keys) and every acting step the same
    # observation batch and state structure, so each function is traced once; evaluation adds one
    # trace of the policy for mode 'eval'.
    config = debug_config(**{'run.steps': 500, 'run.prefill': 200, 'run.eval_every': 250,
                             'run.eval_episodes': 1, 'env.time_limit': 50})
    trainer = Trainer(config, tmp_path)
    try:
        trainer.run()
        assert int(trainer.counters.updates.numpy()) == 150
        assert trainer._train_step.experimental_get_tracing_count() == 1
        assert trainer._policy.experimental_get_tracing_count() == 2
    finally:
        trainer.close()
