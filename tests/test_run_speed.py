"""curves.update_speed and benchmarks/run_speed.py on a metrics.jsonl written by hand."""

import json
import pathlib
import subprocess
import sys

import pytest

from dreamer_tf.results import curves

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def logdir(tmp_path):
    rows = [
        {'step': 1000, 'run/updates': 0, 'run/wall_minutes': 1.0},        # prefill: left out
        {'step': 1500, 'run/updates': 400, 'run/wall_minutes': 9.0},      # compile inside: left out
        {'step': 1600, 'episode/score': 100.0},
        {'step': 2000, 'run/updates': 900, 'run/wall_minutes': 14.0},
        {'step': 2200, 'episode/score': 300.0},
        {'step': 2500, 'run/updates': 1400, 'run/wall_minutes': 19.0},
    ]
    (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return tmp_path


def test_update_speed_leaves_out_prefill_and_compile(logdir):
    speed = curves.update_speed(logdir)
    assert speed['seconds_per_update'] == pytest.approx(60 * (19 - 9) / (1400 - 400))   # 0.6 s
    assert speed['score'] == pytest.approx(200.0)
    assert (speed['env_steps'], speed['updates'], speed['wall_minutes']) == (2500, 1400, 19.0)


def test_update_speed_before_two_log_points(tmp_path):
    (tmp_path / 'metrics.jsonl').write_text(json.dumps({'step': 5, 'run/updates': 0}) + '\n')
    speed = curves.update_speed(tmp_path)
    assert speed['seconds_per_update'] is None and speed['score'] is None


def test_run_speed_script(logdir, tmp_path):
    script = str(ROOT / 'benchmarks' / 'run_speed.py')
    out = subprocess.run([sys.executable, script, f'--logdir={logdir}'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f'{logdir}: 2500 env steps, 1400 updates, 0.600 s/update, score 200.0 ' \
        '(10-episode mean)'
    bad = subprocess.run([sys.executable, script, f'--logdir={tmp_path / "none"}'], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and 'has no metrics.jsonl' in bad.stderr
