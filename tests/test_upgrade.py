"""Checkpoints written by an earlier version of the library still load and resume.

`tests/fixtures/checkpoints/<version>/` holds a debug run's config.yaml and checkpoint, written by the
library at commit 9acf9fc (before the config-schema refactor of issue 15) with

    python reproduce/dmc_proprio.py --version=<version> --task=cartpole_balance --configs=debug \
        --steps=400 --set run.save_every=400 --logdir=<fixture>

Never regenerate them: their point is that they come from older code. A long run must survive a
library upgrade, so a renamed layer, variable or config key fails here first.
"""

import hashlib
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import dreamer_tf

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'checkpoints')
VERSIONS = ('dreamerv1', 'dreamerv2', 'dreamerv3', 'dreamerv3_2023')


def _digest(value):
    value = np.asarray(value)
    return value.shape, hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()


def _saved_digests(prefix):
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith('agent/')]
    return {_digest(reader.get_tensor(n)) for n in names}


@pytest.fixture(params=VERSIONS)
def old_logdir(request, tmp_path):
    logdir = tmp_path / request.param
    shutil.copytree(os.path.join(FIXTURES, request.param), logdir)
    return request.param, logdir


def test_old_checkpoint_restores_every_variable(old_logdir):
    version, logdir = old_logdir
    loaded = dreamer_tf.load(logdir)
    assert loaded.config.version == version
    assert loaded.env_steps == 400
    env = loaded.make_env()
    action, _ = loaded.act(env.reset())   # builds any variable the agent creates lazily
    env.close()
    assert np.all(np.isfinite(action))
    saved = _saved_digests(loaded.checkpoint)
    variables = loaded.agent.variables
    assert len(variables) > 20
    missing = [v.name for v in variables if _digest(v.numpy()) not in saved]
    assert not missing, f'{len(missing)} variables do not hold a saved value, e.g. {missing[:5]}'


def test_old_logdir_resumes_training(old_logdir, capsys):
    version, logdir = old_logdir
    config = dreamer_tf.make_config(version, 'dmc_proprio', ['debug'], **{
        'env.task': 'cartpole_balance', 'run.steps': 440, 'run.save_every': 400})
    trainer = dreamer_tf.train(config, str(logdir))
    assert f'Resumed from {logdir}' in capsys.readouterr().out
    assert int(trainer.counters.env_steps.numpy()) == 440
