"""Smoke runs of every reproduce/ script with the debug overlay, in a real subprocess.

Checks what a user sees: config.yaml, metrics.jsonl with episode scores, TensorBoard events, a
checkpoint on disk, and that a second invocation on the same logdir resumes instead of restarting.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / 'reproduce').glob('*.py'))
# One cheap task per benchmark script (the script name without .py).
TASKS = {'dmc_proprio': 'cartpole_balance', 'gym_classic': 'CartPole-v1'}


def run_script(script, logdir, *args, timeout=600):
    cmd = [sys.executable, str(script), f'--logdir={logdir}', '--configs=debug', *args]
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2'}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_script_has_a_smoke_task():
    assert {s.stem for s in SCRIPTS} == set(TASKS), 'add a cheap task for each new script'


@pytest.mark.parametrize('script', SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_runs_and_resumes(script, tmp_path):
    logdir = tmp_path / 'run'
    task = f'--task={TASKS[script.stem]}'
    first = run_script(script, logdir, task, '--steps=1200')
    assert first.returncode == 0, first.stderr[-3000:]
    assert (logdir / 'config.yaml').exists()
    assert list(logdir.glob('events.out.tfevents.*')), 'no TensorBoard events'
    assert (logdir / 'checkpoints' / 'checkpoint').exists()
    metrics = read_jsonl(logdir / 'metrics.jsonl')
    scores = [m for m in metrics if 'episode/score' in m]
    assert scores and all(m['episode/length'] > 0 for m in scores)
    assert any('train/loss/total' in m for m in metrics), 'no training happened'
    assert max(m['step'] for m in metrics) == 1200

    second = run_script(script, logdir, task, '--steps=1600')
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'Resumed from' in second.stdout and 'at step 1200' in second.stdout
    new = read_jsonl(logdir / 'metrics.jsonl')[len(metrics):]
    assert new and min(m['step'] for m in new) > 1200, 'the resumed run restarted from 0'
    assert max(m['step'] for m in new) == 1600
    updates = [m['run/updates'] for m in new if 'run/updates' in m]
    assert updates and updates[0] > max(m.get('run/updates', 0) for m in metrics)


def test_bad_task_is_a_clear_error(tmp_path):
    script = ROOT / 'reproduce' / 'dmc_proprio.py'
    result = run_script(script, tmp_path / 'run', '--task=cartpole_balanse', '--steps=10')
    assert result.returncode == 2
    assert 'cartpole_balance' in result.stderr and 'Traceback' not in result.stderr


def test_bad_override_is_a_clear_error(tmp_path):
    script = ROOT / 'reproduce' / 'dmc_proprio.py'
    result = run_script(script, tmp_path / 'run', '--task=cartpole_balance',
                        '--set', 'rssm.detr=3')
    assert result.returncode == 2
    assert 'rssm.deter' in result.stderr and 'Traceback' not in result.stderr
