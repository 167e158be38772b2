"""The public API: make_config, train, load, summary, policy modes, the README example, packaging."""

import os
import pathlib
import re
import shutil
import site
import subprocess
import venv

import numpy as np
import pytest

import dreamer_tf
from dreamer_tf import checkpoints
from dreamer_tf import config as configlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


# -- make_config ------------------------------------------------------------------------------

def test_make_config_applies_benchmark_overlays_and_overrides():
    config = dreamer_tf.make_config('dreamerv3', 'gym', ['debug'], seed=3,
                                    run={'steps': 1000}, **{'rssm.deter': 64, 'env.task': 'Pendulum-v1'})
    assert config.overlays == ('gym', 'debug')
    assert (config.seed, config.run.steps, config.rssm.deter) == (3, 1000, 64)
    assert config.env.task == 'Pendulum-v1'
    assert config.run.prefill == 200                      # from the debug overlay
    assert dreamer_tf.make_config('dreamerv3', 'gym', 'small,debug').overlays == ('gym', 'small', 'debug')
    assert dreamer_tf.make_config() == configlib.load('dreamerv3')


def test_make_config_rejects_unknown_keys_with_suggestions():
    with pytest.raises(configlib.ConfigError, match="Did you mean: rssm.deter"):
        dreamer_tf.make_config('dreamerv3', 'gym', **{'rssm.detr': 64})
    with pytest.raises(configlib.ConfigError, match="Unknown overlay 'nope'"):
        dreamer_tf.make_config('dreamerv3', 'nope')


def test_configs_ship_inside_the_package():
    assert configlib.CONFIGS_DIR == pathlib.Path(dreamer_tf.__file__).parent / 'configs'
    assert (configlib.CONFIGS_DIR / 'dreamerv3.yaml').is_file()


# -- load -------------------------------------------------------------------------------------

def test_load_restores_the_trained_weights_and_counters(dmc_run):
    agent = dreamer_tf.load(dmc_run.logdir)
    assert agent.checkpoint.endswith('ckpt-400')
    assert agent.env_steps == 400
    assert agent.config == dmc_run.config
    trained = dmc_run.agent.weights_by_path
    assert set(agent.agent.weights_by_path) == set(trained)
    for path, variable in agent.agent.weights_by_path.items():
        np.testing.assert_array_equal(variable.numpy(), trained[path].numpy(), err_msg=path)


def test_summary_matches_the_trained_variables(dmc_run):
    agent = dreamer_tf.load(dmc_run.logdir)
    counts = agent.summary()
    trained = sum(int(np.prod(v.shape)) for v in dmc_run.agent.train_vars)
    assert counts['total'] == trained
    assert counts['total'] == sum(v for k, v in counts.items() if k != 'total')
    assert counts == dmc_run.agent.summary()
    assert f"params={counts['total']}" in repr(agent)


def test_policy_modes_and_single_env_act(dmc_run):
    agent = dreamer_tf.load(dmc_run.logdir)
    env = agent.make_env()
    try:
        obs = env.reset()
        action, state = agent.act(obs)
        assert action.shape == (agent.act_space.size,) and np.all(np.abs(action) <= 1.0)
        obs = env.step(action)
        batch = {'vector': obs['vector'][None], 'is_first': np.array([False])}
        for mode in ('eval', 'explore', 'train'):
            sample, new_state = agent.policy(batch, state, mode)
            assert sample.shape == (1, agent.act_space.size)
            assert new_state['latent']['deter'].shape == state['latent']['deter'].shape
        with pytest.raises(ValueError, match=r"'greedy' is not one of \['eval', 'explore', 'train'\]"):
            agent.agent.policy(batch, state, 'greedy')
    finally:
        env.close()


def test_load_falls_back_past_a_corrupt_newest_checkpoint(dmc_run, tmp_path):
    shutil.copy(os.path.join(dmc_run.logdir, 'config.yaml'), tmp_path)
    shutil.copytree(os.path.join(dmc_run.logdir, 'checkpoints'), tmp_path / 'checkpoints')
    for path in (tmp_path / 'checkpoints').glob('ckpt-400.data-*'):
        path.write_bytes(path.read_bytes()[:100])
    warnings = []
    agent = dreamer_tf.load(tmp_path, warn=warnings.append)
    assert agent.checkpoint.endswith('ckpt-200') and agent.env_steps == 200
    assert len(warnings) == 1 and 'ckpt-400' in warnings[0]


def test_load_errors_say_what_is_missing(dmc_run, tmp_path):
    with pytest.raises(dreamer_tf.LoadError, match='does not exist'):
        dreamer_tf.load(tmp_path / 'nowhere')
    with pytest.raises(dreamer_tf.LoadError, match='has no config.yaml'):
        dreamer_tf.load(tmp_path)
    shutil.copy(os.path.join(dmc_run.logdir, 'config.yaml'), tmp_path)
    with pytest.raises(dreamer_tf.LoadError, match='has no checkpoint'):
        dreamer_tf.load(tmp_path)
    shutil.copytree(os.path.join(dmc_run.logdir, 'checkpoints'), tmp_path / 'checkpoints')
    for path in (tmp_path / 'checkpoints').glob('*.index'):
        path.write_bytes(b'not a checkpoint index')
    with pytest.raises(checkpoints.CheckpointError, match='no readable checkpoint'):
        dreamer_tf.load(tmp_path, warn=lambda message: None)


# -- README example ---------------------------------------------------------------------------

def readme_example():
    """The first python block of the README's 'Python API' section."""
    text = (ROOT / 'README.md').read_text()
    section = text[text.index('### Python API'):]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_example()
    # Same example, shrunk: the debug widths and a few hundred steps instead of the small agent.
    for old, new in [("overlays=['small']", "overlays=['debug']"), ("'run.steps': 8000", "'run.steps': 300")]:
        assert old in code, f'README example no longer contains {old}'
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, 'README.md', 'exec'), scope)
    assert scope['agent'].env_steps == 300
    assert (tmp_path / 'runs' / 'api_demo' / 'config.yaml').exists()
    assert scope['score'] >= 1.0                     # CartPole pays 1 per step
    assert f"'total': {scope['agent'].summary()['total']}" in capsys.readouterr().out


# -- packaging --------------------------------------------------------------------------------

@pytest.mark.packaging
def test_pip_install_into_a_fresh_venv(tmp_path):
    """`pip install .` (not editable) gives a package that finds its configs and commands.

    Offline: the new venv has no site packages of its own but sees this interpreter's (a venv's or
    the system's, whichever runs the tests) through a .pth file, so TensorFlow and the build backend
    come from requirements.txt, which pins a setuptools that builds wheels without the `wheel`
    package. pip neither resolves dependencies nor builds in isolation. The source is copied so that
    the build leaves nothing in the working tree.
    """
    source = tmp_path / 'src'
    source.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / 'dreamer_tf', source / 'dreamer_tf',
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    python, scripts = env_dir / 'bin' / 'python', env_dir / 'bin'
    inner_site = subprocess.run([str(python), '-c', 'import site; print(site.getsitepackages()[0])'],
                                capture_output=True, text=True, check=True).stdout.strip()
    # Plain path lines: the outer site dirs join sys.path after the venv's own, and their .pth
    # files (this checkout's editable install among them) are not run.
    pathlib.Path(inner_site, 'outer.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    install = subprocess.run(
        [str(python), '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index', '-q',
         str(source)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    check = ('import dreamer_tf, dreamer_tf.config as c; '
             'config = c.load("dreamerv3", ["gym", "debug"]); '
             'print(dreamer_tf.__file__); print(c.CONFIGS_DIR); print(config.env.task)')
    run = subprocess.run([str(python), '-c', check], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    module, configs, task = run.stdout.split()
    installed = str(env_dir / 'lib')
    assert module.startswith(installed) and configs.startswith(installed), run.stdout
    assert task == 'CartPole-v1'
    for command in ('dreamer-evaluate', 'dreamer-dream'):
        result = subprocess.run([str(scripts / command), '--help'], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=60)
        assert result.returncode == 0 and '--logdir' in result.stdout, result.stderr
