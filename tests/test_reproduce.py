"""Smoke runs of every reproduce/ script with the debug overlay, in a real subprocess.

Checks what a user sees: config.yaml, metrics.jsonl with episode scores, TensorBoard events, a
checkpoint on disk, the learning-curve picture curves.png, and that a second invocation on the same
logdir resumes instead of restarting.
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / 'reproduce').glob('*.py'))
# One cheap task per benchmark script (the script name without .py), run twice to test resuming.
# DMC episodes are capped at 200 steps so that a few finish within the short run.
TASKS = {'dmc_proprio': ['--task=cartpole_balance', '--set', 'env.time_limit=200'],
         'gym_classic': ['--task=CartPole-v1']}
# The image benchmarks run once, for a few hundred env steps (frames for Atari), with an episode cap so
# that episodes finish. crafter goes through the sweep path (--task=all is its one task).
SMOKE = {
    'atari100k': ['--task=pong', '--steps=480', '--set', 'env.time_limit=30'],
    'atari200m': ['--task=pong', '--steps=480', '--set', 'env.time_limit=30',
                  '--set', 'env.num_envs=2'],
    'dmc_vision': ['--task=cartpole_balance', '--steps=260', '--set', 'env.time_limit=50'],
    'crafter': ['--task=all', '--seeds=0', '--steps=260', '--set', 'env.time_limit=50'],
}
# Scripts that do not run the Trainer, with the test file that runs them end to end and resumes them.
OWN_TESTS = {'dreamer4': 'tests/test_dreamer4_run.py'}


def run_script(script, logdir, *args, timeout=600):
    cmd = [sys.executable, str(script), f'--logdir={logdir}', '--configs=debug', *args]
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2'}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_curves_png(logdir):
    """The trainer's `<logdir>/curves.png` is a readable RGB(A) picture of about one panel's size."""
    import matplotlib.image
    image = matplotlib.image.imread(logdir / 'curves.png')
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    assert 200 <= image.shape[0] <= 1000 and 300 <= image.shape[1] <= 2000, image.shape
    assert image[..., :3].min() < 0.5, 'curves.png is blank'


def test_every_script_has_a_smoke_task():
    assert {s.stem for s in SCRIPTS} == set(TASKS) | set(SMOKE) | set(OWN_TESTS), \
        'add a cheap task for each new script'
    assert all((ROOT / path).exists() for path in OWN_TESTS.values())


@pytest.mark.parametrize('script', [s for s in SCRIPTS if s.stem in TASKS],
                         ids=[s.stem for s in SCRIPTS if s.stem in TASKS])
def test_script_runs_and_resumes(script, tmp_path):
    logdir = tmp_path / 'run'
    task = TASKS[script.stem]
    first = run_script(script, logdir, *task, '--steps=600')
    assert first.returncode == 0, first.stderr[-3000:]
    assert (logdir / 'config.yaml').exists()
    assert list(logdir.glob('events.out.tfevents.*')), 'no TensorBoard events'
    assert (logdir / 'checkpoints' / 'checkpoint').exists()
    metrics = read_jsonl(logdir / 'metrics.jsonl')
    scores = [m for m in metrics if 'episode/score' in m]
    assert scores and all(m['episode/length'] > 0 for m in scores)
    assert any('train/loss/total' in m for m in metrics), 'no training happened'
    assert max(m['step'] for m in metrics) == 600

    second = run_script(script, logdir, *task, '--steps=800')
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'Resumed from' in second.stdout and 'at step 600' in second.stdout
    new = read_jsonl(logdir / 'metrics.jsonl')[len(metrics):]
    assert new and min(m['step'] for m in new) > 600, 'the resumed run restarted from 0'
    assert max(m['step'] for m in new) == 800
    updates = [m['run/updates'] for m in new if 'run/updates' in m]
    assert updates and updates[0] > max(m.get('run/updates', 0) for m in metrics)
    check_curves_png(logdir)


# What a new user must not see: TensorFlow, absl, CUDA or Keras messages, native or from Python.
NOISE = re.compile(r'tensorflow|absl|cuda|cudnn|cublas|cufft|onednn|keras|UserWarning', re.IGNORECASE)
PROGRESS = re.compile(r'[\d,]+/[\d,]+ env steps \| .* env steps/s.* \| ETA ')
BANNER = re.compile(r'dreamer_tf \S+ \| dreamerv3 gym CartPole-v1 \| .+ \| (float32|bfloat16) \(auto\) \| '
                    r'XLA off \| [\d,]+ parameters \| ')   # precision auto; the debug overlay's jit: false


def run_quickstart(logdir, steps):
    """The README's first command (with the debug overlay) as a new user runs it: no TF_CPP_MIN_LOG_LEVEL,
    stderr and stdout in one stream."""
    env = {key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'}
    env['PYTHONPATH'] = str(ROOT)
    cmd = [sys.executable, 'reproduce/gym_classic.py', '--task=CartPole-v1', '--configs=debug',
           f'--steps={steps}', f'--logdir={logdir}']
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                          env=env, cwd=ROOT)


def test_quickstart_prints_a_banner_then_progress_and_still_shows_real_warnings(tmp_path):
    logdir = tmp_path / 'quickstart'
    result = run_quickstart(logdir, 600)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    first_progress = next(i for i, line in enumerate(lines) if PROGRESS.match(line))
    assert first_progress <= 2, lines[:first_progress + 1]      # at most 3 lines up to the progress
    assert BANNER.match(lines[0]) and lines[0].endswith(str(logdir)), lines[0]
    assert [line for line in lines if NOISE.search(line)] == []
    check_curves_png(logdir)

    # A corrupt replay file and a corrupt newest checkpoint are real problems: their warnings show.
    replay_file = sorted((logdir / 'replay').glob('*.npz'))[0]
    replay_file.write_bytes(replay_file.read_bytes()[:100])
    (logdir / 'checkpoints' / 'ckpt-600.data-00000-of-00001').write_bytes(b'')
    again = run_quickstart(logdir, 800)
    assert again.returncode == 0, again.stdout[-3000:]
    assert 'skipping unreadable replay file' in again.stdout, again.stdout[-3000:]
    assert 'ckpt-600 could not be read' in again.stdout and 'at step 500' in again.stdout, again.stdout


# (script, arguments, exit status, what the one-line message must name). Config errors exit before
# TensorFlow is imported; task and env errors once the environment is built.
BAD_INPUTS = {
    'unknown dmc task': ('dmc_proprio', ['--task=cartpole_balanse'], 2, ['cartpole_balance']),
    'unknown gym task': ('gym_classic', ['--task=CartPol-v1'], 2, ["Did you mean 'CartPole-v1'"]),
    'unknown config key': ('dmc_proprio', ['--set', 'rssm.detr=3'], 2, ["'rssm.detr'", 'rssm.deter']),
    'malformed value': ('gym_classic', ['--set', 'env.task=[CartPole'], 2,
                        ["'env.task'", 'not valid YAML']),
    'wrong type': ('gym_classic', ['--set', 'run.steps=abc'], 2, ["'run.steps'", "'abc'", 'expected int']),
    'scalar for a list': ('gym_classic', ['--set', 'env.size=64'], 2, ["'env.size'", 'expected a list']),
    'not key=value': ('gym_classic', ['--set', 'rssm.deter'], 2, ["'rssm.deter'", 'key=value']),
    'unknown overlay': ('gym_classic', ['--configs=debug,size3m'], 2,
                        ["Unknown overlay 'size3m'", 'size1m', 'small']),
    'unknown version': ('dmc_proprio', ['--version=dreamerv9'], 2,
                        ["'dreamerv9'", 'available: dreamerv1, dreamerv2, dreamerv3, dreamerv3_2023']),
    'vision for a gym task': ('gym_classic', ['--set', 'env.obs=vision'], 2,
                              ["env.obs='vision'", "suite 'gym'", 'proprio']),
    'unknown precision': ('gym_classic', ['--set', 'precision=float64'], 2, ["'float64'", 'float32']),
    'flag of the wrong type': ('gym_classic', ['--steps=abc'], 1, ['--steps=abc']),
}
# Values outside their declared range: refused before the logdir exists.
OUT_OF_RANGE = {
    'negative steps': ('gym_classic', ['--steps=-5'], 2, ["'run.steps': got -5", 'an integer >= 1']),
    'negative train ratio': ('gym_classic', ['--set', 'run.train_ratio=-1'], 2,
                             ["'run.train_ratio': got -1.0", 'a number > 0']),
    'zero batch size': ('gym_classic', ['--set', 'batch_size=0'], 2, ["'batch_size': got 0", '>= 1']),
    'zero classes': ('dmc_proprio', ['--set', 'rssm.classes=0'], 2, ["'rssm.classes': got 0", '>= 1']),
    'zero horizon': ('dmc_proprio', ['--set', 'behavior.horizon=0'], 2, ["'behavior.horizon': got 0"]),
    'unknown choice': ('dmc_proprio', ['--set', 'behavior.return_critic=slo'], 2,
                       ["'behavior.return_critic': got 'slo'", 'one of online, slow']),
}
BAD_INPUTS.update(OUT_OF_RANGE)


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_is_a_clear_error(case, tmp_path):
    script, args, status, expected = BAD_INPUTS[case]
    if not any(a.startswith('--task') for a in args):
        args = [*TASKS[script], *args]
    result = run_script(ROOT / 'reproduce' / f'{script}.py', tmp_path / 'run', '--steps=10', *args)
    assert result.returncode == status, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]
    for text in expected:
        assert text in result.stderr, (text, result.stderr[-2000:])
    if case in OUT_OF_RANGE:
        assert not (tmp_path / 'run').exists() and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_logdir_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / 'run').write_text('not a directory')
    result = run_script(ROOT / 'reproduce' / 'gym_classic.py', tmp_path / 'run', '--task=CartPole-v1')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'error:' in result.stderr and str(tmp_path / 'run') in result.stderr


def test_version_without_the_benchmark_is_a_clear_error(tmp_path):
    from dreamer_tf import cli, config
    (tmp_path / 'old.yaml').write_text('defaults: {seed: 0}\ndmc_proprio: {seed: 1}\n')
    (tmp_path / 'new.yaml').write_text('defaults: {seed: 0}\natari100k: {seed: 1}\n')
    cli.check_benchmark('new', 'atari100k', tmp_path)
    with pytest.raises(config.ConfigError, match="version 'old' has no 'atari100k' benchmark; "
                                                 'versions that have it: new'):
        cli.check_benchmark('old', 'atari100k', tmp_path)
    with pytest.raises(config.ConfigError, match="Unknown config version 'older'.*available: new, old"):
        cli.check_benchmark('older', 'atari100k', tmp_path)


def test_logdir_with_another_config_is_refused_unless_overridden(tmp_path):
    from dreamer_tf import config
    script, logdir = ROOT / 'reproduce' / 'gym_classic.py', tmp_path / 'run'
    saved = config.load('dreamerv3', ['gym', 'debug'], ['env.task=CartPole-v1', 'rssm.deter=64'])
    saved.save(logdir / 'config.yaml')
    args = ['--task=CartPole-v1', '--steps=30']
    refused = run_script(script, logdir, *args)
    assert refused.returncode == 2 and 'Traceback' not in refused.stderr
    assert 'rssm.deter: 64 -> 32' in refused.stderr and '--override_config' in refused.stderr
    assert config.Config.from_file(logdir / 'config.yaml') == saved, 'the refused run changed config.yaml'
    overridden = run_script(script, logdir, *args, '--override_config')
    assert overridden.returncode == 0, overridden.stderr[-2000:]
    assert 'overriding the config' in overridden.stdout and 'rssm.deter: 64 -> 32' in overridden.stdout
    assert config.Config.from_file(logdir / 'config.yaml').rssm.deter == 32
    backups = list(logdir.glob('config.*.yaml'))
    assert len(backups) == 1 and config.Config.from_file(backups[0]) == saved


def check_smoke_run(logdir, steps, frames_per_step=1, episode_steps=None):
    assert (logdir / 'config.yaml').exists() and (logdir / 'checkpoints' / 'checkpoint').exists()
    metrics = read_jsonl(logdir / 'metrics.jsonl')
    episodes = [m for m in metrics if 'episode/score' in m]
    assert episodes, 'no episode finished'
    if episode_steps:
        assert all(m['episode/length'] == episode_steps * frames_per_step for m in episodes)
    assert any('train/loss/total' in m for m in metrics), 'no training happened'
    assert max(m['step'] for m in metrics) == steps
    check_curves_png(logdir)
    return episodes


@pytest.mark.parametrize('name', sorted(SMOKE))
def test_benchmark_script_smoke(name, tmp_path):
    result = run_script(ROOT / 'reproduce' / f'{name}.py', tmp_path, *SMOKE[name])
    assert result.returncode == 0, result.stderr[-3000:]
    if name == 'crafter':
        check_crafter(tmp_path, result)
    elif name.startswith('atari'):
        # 30 agent steps of 4 frames each; `step` counts frames.
        check_smoke_run(tmp_path, 480, frames_per_step=4, episode_steps=30)
    else:
        check_smoke_run(tmp_path, 260, episode_steps=50)


def check_crafter(root, result):
    logdir = root / 'dreamerv3' / 'crafter' / 'reward' / '0'
    episodes = check_smoke_run(logdir, 260)
    names = {key for m in episodes for key in m if key.startswith('episode/achievement_')}
    assert len(names) == 22 and 'episode/achievement_collect_wood' in names
    assert all(m[key] in (0.0, 1.0) for m in episodes for key in names)
    assert (logdir / 'done').read_text() == '260'
    again = run_script(ROOT / 'reproduce' / 'crafter.py', root, *SMOKE['crafter'])
    assert again.returncode == 0 and 'finished earlier, skipped' in again.stdout


def test_sweep_plan():
    from dreamer_tf import cli
    runs = cli.plan('atari100k', 'all', [], '/runs', 'dreamerv3')
    assert len(runs) == 26 * 5
    assert runs[0] == ('alien', 0, os.path.join('/runs', 'dreamerv3', 'atari100k', 'alien', '0'))
    assert runs[26][1] == 1, 'a first pass over every game comes before the next seed'
    assert cli.plan('atari', 'pong,breakout', ['3'], '/r', 'dreamerv3') == [
        ('pong', 3, '/r/dreamerv3/atari/pong/3'), ('breakout', 3, '/r/dreamerv3/atari/breakout/3')]
    assert cli.plan('dmc_vision', 'walker_walk', [], '/r', 'dreamerv3', seed=7) == [
        ('walker_walk', 7, '/r')]
    assert len(cli.plan('dmc_vision', 'all', [], '/r', 'dreamerv3')) == 20 * 10
    with pytest.raises(ValueError, match='atari100k'):
        cli.plan('gym', 'all', [], '/r', 'dreamerv3')


# Every agent version end to end: DMC proprio for V1, V2 and the 2023 preset (run, then resume), and the
# image benchmarks that each version's paper ran (DreamerV3 itself: the smoke tests above).
# (script, version) -> arguments.
PROPRIO = ['--task=cartpole_balance', '--set', 'env.time_limit=200']
VISION = ['--task=cartpole_balance', '--steps=260', '--set', 'env.time_limit=50']
VERSION_SMOKE = {
    ('dmc_proprio', 'dreamerv1'): PROPRIO,
    ('dmc_proprio', 'dreamerv2'): PROPRIO,
    ('dmc_proprio', 'dreamerv3_2023'): PROPRIO,
    ('dmc_vision', 'dreamerv1'): VISION,
    ('dmc_vision', 'dreamerv2'): VISION,
    ('atari200m', 'dreamerv2'): ['--task=pong', '--steps=480', '--set', 'env.time_limit=30'],
    ('crafter', 'dreamerv2'): ['--task=reward', '--steps=260', '--set', 'env.time_limit=50'],
    # The 2023 DreamerV3 paper ran every benchmark.
    ('atari100k', 'dreamerv3_2023'): ['--task=pong', '--steps=480', '--set', 'env.time_limit=30'],
    ('atari200m', 'dreamerv3_2023'): ['--task=pong', '--steps=480', '--set', 'env.time_limit=30',
                                      '--set', 'env.num_envs=2'],
    ('dmc_vision', 'dreamerv3_2023'): VISION,
    ('crafter', 'dreamerv3_2023'): ['--task=reward', '--steps=260', '--set', 'env.time_limit=50'],
}


@pytest.mark.parametrize('script,version', list(VERSION_SMOKE), ids=[f'{s}-{v}' for s, v in VERSION_SMOKE])
def test_every_version_runs_end_to_end(script, version, tmp_path):
    args = [f'--version={version}', *VERSION_SMOKE[(script, version)]]
    proprio = script == 'dmc_proprio'
    if proprio:
        args.append('--steps=600')
    result = run_script(ROOT / 'reproduce' / f'{script}.py', tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = (tmp_path / 'config.yaml').read_text()
    assert f'version: {version}' in saved
    if not proprio:
        # Episode lengths count env steps: Atari repeats actions 4 times, V1/V2 on DMC twice.
        repeat = {'atari100k': 4, 'atari200m': 4, 'dmc_vision': 2, 'crafter': 1}[script]
        steps = 480 if repeat == 4 else 260
        check_smoke_run(tmp_path, steps, frames_per_step=repeat, episode_steps=30 if repeat == 4 else 50)
        return
    metrics = read_jsonl(tmp_path / 'metrics.jsonl')
    train = [m for m in metrics if 'train/loss/total' in m]
    assert train and all(math.isfinite(m['train/loss/total']) for m in train)
    # V1 and V2 have one KL term and three optimisers; the 2023 preset keeps dyn/rep.
    kl_terms = {'dreamerv1': ['train/loss/kl'], 'dreamerv2': ['train/loss/kl'],
                'dreamerv3_2023': ['train/loss/dyn', 'train/loss/rep']}[version]
    assert all(key in train[-1] for key in kl_terms + ['train/model/grad_norm', 'train/actor/lr'])
    again = run_script(ROOT / 'reproduce' / f'{script}.py', tmp_path, *args[:-1], '--steps=800')
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'Resumed from' in again.stdout and 'at step 600' in again.stdout
    assert max(m['step'] for m in read_jsonl(tmp_path / 'metrics.jsonl')) == 800
    check_curves_png(tmp_path)
