"""`jit: auto` and `precision: auto` (issue 16): the defaults, how a run decides them on this machine,
and how a resumed run keeps what its start decided (trainer.check_logdir_config)."""

import os
import pathlib
import shutil

import pytest
import yaml

from dreamer_tf import config as configlib
from dreamer_tf import framework, hardware
from dreamer_tf.trainer import check_logdir_config

VECTOR = {'vector': None}      # the keys of an env's obs_space are what resolve_auto looks at
IMAGE = {'image': None}


def debug_gym(*sets):
    return configlib.load('dreamerv3', ['gym', 'debug'], ['env.task=CartPole-v1', *sets])


# The defaults and their values ---------------------------------------------------------------------------

def test_both_default_to_auto_and_explicit_values_still_work():
    config = configlib.load('dreamerv3', ['dmc_proprio', 'size1m'])
    assert (config.jit, config.precision) == ('auto', 'auto')
    assert configlib.load(overrides=['jit=false']).jit is False
    assert configlib.load(overrides=['jit=true']).jit is True
    assert configlib.load(overrides=["jit='false'"]).jit is False     # a quoted false is still off
    assert configlib.load(overrides=['precision=bfloat16']).precision == 'bfloat16'
    assert configlib.load(overrides={'jit': 'auto', 'precision': 'auto'}).jit == 'auto'


@pytest.mark.parametrize('text, message', [
    ('jit=maybe', "Config key 'jit': got 'maybe', allowed: one of auto, true, false"),
    ('jit=1', "Config key 'jit': got 1 (int), expected one of auto, true, false (in --set jit=1)"),
    ('precision=float64', "Config key 'precision': got 'float64', allowed: one of auto, float32, bfloat16, "
                          'float16'),
])
def test_a_bad_value_names_the_key_and_what_is_allowed(text, message):
    with pytest.raises(configlib.ConfigError) as info:
        configlib.load(overrides=[text])
    assert str(info.value) == message


def test_no_image_overlay_sets_jit_but_debug_keeps_xla_off():
    for version in configlib.available_versions():
        for overlay in configlib.available_overlays(version):
            jit = configlib.load(version, [overlay]).jit
            assert jit == (False if overlay == 'debug' else 'auto'), (version, overlay, jit)


# Decided on this machine ---------------------------------------------------------------------------------

@pytest.mark.parametrize('suite, obs_space, jit', [
    ('dmc_proprio', VECTOR, True), ('gym', VECTOR, True),
    ('dmc_vision', IMAGE, False), ('atari100k', IMAGE, False), ('atari', IMAGE, False),
    ('crafter', IMAGE, False),
])
def test_this_cpu_decides_xla_by_observations_and_float32_without_amx(suite, obs_space, jit):
    if hardware.has_gpu():
        pytest.skip('a GPU takes XLA and bfloat16 everywhere (tests/test_hardware.py)')
    config = framework.resolve_auto(configlib.load('dreamerv3', [suite, 'size1m']), obs_space)
    assert config.jit is jit
    assert config.precision == ('bfloat16' if hardware.has_amx() else 'float32')
    assert config.overlays == (suite, 'size1m')


def test_the_obs_space_of_real_envs_decides():
    from dreamer_tf import envs
    if hardware.has_gpu():
        pytest.skip('a GPU takes XLA everywhere')
    for suite, task in (('dmc_proprio', 'cartpole_balance'), ('gym', 'CartPole-v1')):
        config = configlib.load('dreamerv3', [suite], [f'env.task={task}'])
        env = envs.make_env(config.env, 0)
        try:
            assert framework.resolve_auto(config, env.obs_space).jit is True
        finally:
            env.close()


def test_explicit_values_pass_and_a_gpu_takes_xla_and_bfloat16():
    config = configlib.load('dreamerv3', ['atari100k'])
    gpu = framework.resolve_auto(config, IMAGE, gpu=True, amx=False)
    assert (gpu.jit, gpu.precision) == (True, 'bfloat16')
    explicit = framework.resolve_auto(config.update({'jit': False, 'precision': 'float16'}), IMAGE, gpu=True)
    assert (explicit.jit, explicit.precision) == (False, 'float16')
    with pytest.raises(configlib.ConfigError, match='resolve_auto'):
        framework.set_precision('auto')


# Resume: auto is decided once, when the run starts ---------------------------------------------------------

def saved_logdir(tmp_path, **values):
    """A logdir whose config.yaml a run decided with `values` (the project's own Config.save)."""
    debug_gym(*(f'{key}={value}' for key, value in values.items())).save(tmp_path / 'config.yaml')
    return tmp_path


def test_a_run_saved_with_xla_and_float32_resumes_under_the_auto_defaults(tmp_path):
    logdir = saved_logdir(tmp_path, jit='true', precision='float32')
    config = check_logdir_config(debug_gym('jit=auto'), logdir)
    assert (config.jit, config.precision) == (True, 'float32')
    # The debug overlay's explicit jit: false is a difference jit may make (it changes no math).
    assert check_logdir_config(debug_gym(), logdir).jit is False


def test_a_saved_precision_is_kept_where_the_new_config_says_auto(tmp_path):
    logdir = saved_logdir(tmp_path, precision='bfloat16')
    assert check_logdir_config(debug_gym(), logdir).precision == 'bfloat16'
    # A config.yaml written without deciding (by hand) decides nothing.
    (tmp_path / 'hand').mkdir()
    debug_gym().save(tmp_path / 'hand' / 'config.yaml')
    assert check_logdir_config(debug_gym(), tmp_path / 'hand').precision == 'auto'


def test_an_explicit_precision_that_differs_from_the_saved_one_is_refused(tmp_path):
    logdir = saved_logdir(tmp_path, precision='bfloat16')
    with pytest.raises(configlib.ConfigError, match=r"precision: 'bfloat16' -> 'float32'"):
        check_logdir_config(debug_gym('precision=float32'), logdir)
    assert check_logdir_config(debug_gym('precision=bfloat16'), logdir).precision == 'bfloat16'


def test_the_trainer_saves_its_decision_and_a_resume_keeps_a_saved_one(tmp_path):
    from dreamer_tf.trainer import Trainer, banner
    trainer = Trainer(debug_gym(), tmp_path / 'fresh')
    try:
        saved = yaml.safe_load((tmp_path / 'fresh' / 'config.yaml').read_text())['config']
        assert (saved['jit'], saved['precision']) == (False, trainer.config.precision)
        assert trainer.config.precision in ('float32', 'bfloat16')
        line = banner(trainer.config, trainer.strategy, trainer.agent, trainer.logdir, trainer.auto)
        assert f'| {trainer.config.precision} (auto) | XLA off |' in line
    finally:
        trainer.close()
    # A run saved in bfloat16 (e.g. started on a GPU) keeps bfloat16 here.
    logdir = saved_logdir(tmp_path / 'gpu_run', jit='true', precision='bfloat16')
    trainer = Trainer(debug_gym('jit=auto'), logdir)
    try:
        assert (trainer.config.jit, trainer.config.precision) == (True, 'bfloat16')
        saved = yaml.safe_load((logdir / 'config.yaml').read_text())['config']
        assert (saved['jit'], saved['precision']) == (True, 'bfloat16')
    finally:
        trainer.close()
        framework.set_precision('float32')     # the global Keras policy, for the tests after this one


def test_the_paper_run_resumes_under_the_new_defaults(tmp_path):
    path = pathlib.Path(os.path.expanduser('~/dreamer_runs/paper/cartpole_balance/config.yaml'))
    if not path.exists():
        pytest.skip('no paper run on this machine')
    shutil.copy(path, tmp_path / 'config.yaml')       # a copy: the run itself is never touched
    saved = configlib.Config.from_file(path)
    assert (saved.jit, saved.precision) == (True, 'float32')
    # The command that started it (reproduce/dmc_proprio.py --task=cartpole_balance --configs=size1m);
    # run.steps may change on a resume.
    sets = [f'env.task={saved.env.task}', f'seed={saved.seed}']
    command = configlib.load(saved.version, saved.overlays, sets)
    config = check_logdir_config(command, tmp_path)
    assert (config.jit, config.precision) == (True, 'float32')
