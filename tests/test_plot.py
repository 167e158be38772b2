"""The learning-curve figures of run logdirs: the trainer's <logdir>/curves.png (plots.LiveCurves) and
`python -m dreamer_tf.plot`, on small made-up logdirs."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dreamer_tf import config as configlib
from dreamer_tf.results import curves, plots

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_run(run_dir, benchmark, task, scores, restart=False):
    """A debug-config logdir whose k-th episode (k = 1, 2, ...) ends at step 100 k with scores[k - 1].

    With `restart`, the last episode is first logged with score 999 by a run that is then killed; the
    resumed run's first row (50 steps earlier) rolls it back, and it is logged again.
    """
    config = configlib.load('dreamerv3', [benchmark, 'debug'], [f'env.task={task}', 'run.steps=5000'])
    config.save(run_dir / 'config.yaml')
    rows = [{'step': 100 * k, 'episode/score': float(s)} for k, s in enumerate(scores, 1)]
    rows.insert(1, {'step': 100, 'run/updates': 10.0, 'train/loss/total': 1.0})
    if restart:
        last = 100 * len(scores)
        rows[-1:-1] = [{'step': last, 'episode/score': 999.0}, {'step': last - 50, 'run/updates': 20.0}]
    with open(run_dir / 'metrics.jsonl', 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
    return run_dir


def test_running_mean_is_the_records_mean_of_the_last_ten_episodes(tmp_path):
    scores = np.arange(1.0, 15.0) ** 2
    write_run(tmp_path, 'dmc_proprio', 'cartpole_balance', scores)
    expected = [r['score'] for r in curves.record(tmp_path)]
    np.testing.assert_allclose(plots.running_mean(scores), expected)
    np.testing.assert_allclose(plots.running_mean([2.0, 4.0, 9.0], window=2), [2.0, 3.0, 6.5])


def test_logdir_run_drops_rolled_back_episodes_and_names_the_gym_benchmark(tmp_path):
    write_run(tmp_path / 'dmc', 'dmc_proprio', 'cartpole_balance', [1, 2, 3], restart=True)
    run = plots.logdir_run(tmp_path / 'dmc')
    assert (run['name'], run['version'], run['benchmark'], run['task']) == (
        'dmc', 'dreamerv3', 'dmc_proprio', 'cartpole_balance')
    assert run['steps'].tolist() == [100, 200, 300] and run['scores'].tolist() == [1, 2, 3]
    write_run(tmp_path / 'gym', 'gym', 'CartPole-v1', [5])
    assert plots.logdir_run(tmp_path / 'gym')['benchmark'] == 'gym'


def test_runs_figure_has_a_panel_per_task_and_the_release_only_where_one_exists(tmp_path):
    made = [('a', 'dmc_proprio', 'cartpole_balance'), ('b', 'gym', 'CartPole-v1'),
            ('c', 'dmc_proprio', 'cartpole_balance')]
    runs = [plots.logdir_run(write_run(tmp_path / name, benchmark, task, [1, 2, 3]))
            for name, benchmark, task in made]
    runs[0]['end'] = 40_000.0       # the release's grid starts at 10k steps
    fig = plots.runs_figure(runs)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ['dmc_proprio cartpole_balance', 'gym CartPole-v1']
    labels = [[line.get_label() for line in ax.get_lines() if not line.get_label().startswith('_')]
              for ax in fig.axes]
    assert labels[0] == ['release, mean of 5 seeds', 'a (dreamerv3)', 'c (dreamerv3)']
    assert labels[1] == ['b (dreamerv3)']
    release = fig.axes[0].get_lines()[0]
    assert release.get_xdata().tolist() == [10_000, 20_000, 30_000, 40_000]


def test_live_curves_writes_the_png_then_skips_unchanged_metrics(tmp_path):
    import matplotlib.image
    write_run(tmp_path, 'gym', 'CartPole-v1', [10, 30, 20])
    live = plots.LiveCurves(tmp_path)
    assert live.update(final=True) and not live.update(final=True)
    image = matplotlib.image.imread(tmp_path / 'curves.png')
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[:2] == (324, 504)
    assert sorted(os.listdir(tmp_path)) == ['config.yaml', 'curves.png', 'metrics.jsonl']   # no temp file


def test_live_curves_waits_for_episodes_and_keeps_its_cost_share(tmp_path):
    write_run(tmp_path, 'gym', 'CartPole-v1', [])
    live = plots.LiveCurves(tmp_path, share=0.05)
    assert not live.update() and not (tmp_path / 'curves.png').exists()   # prefill: nothing yet
    with open(tmp_path / 'metrics.jsonl', 'a') as f:
        f.write(json.dumps({'step': 300, 'episode/score': 4.0}) + '\n')
    live.cost = 1e6          # as if the last attempt took far longer than 5 % of the time since
    assert not live.update() and live.update(final=True)


def test_a_failing_plot_warns_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    write_run(tmp_path, 'gym', 'CartPole-v1', [1, 2])

    def broken(*args, **kwargs):
        raise RuntimeError('no font\ncache')
    monkeypatch.setattr(plots, 'runs_figure', broken)
    live = plots.LiveCurves(tmp_path)
    assert not live.update(final=True) and not live.update(final=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith('warning: cannot draw') and 'no font cache' in lines[0]


def run_plot(*args, cwd):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, '-m', 'dreamer_tf.plot', *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def test_plot_overlays_a_gym_and_a_dmc_run_in_one_png(tmp_path):
    import matplotlib.image
    gym = write_run(tmp_path / 'gym_run', 'gym', 'CartPole-v1', [10, 20, 40, 80])
    dmc = write_run(tmp_path / 'dmc_run', 'dmc_proprio', 'cartpole_balance', [100, 200, 150], restart=True)
    result = run_plot(gym, dmc, cwd=tmp_path)                 # default output: ./curves.png
    assert result.returncode == 0, result.stderr[-2000:]
    image = matplotlib.image.imread(tmp_path / 'curves.png')
    # Two panels side by side: 2 x 5.6 by 3.6 inches at 90 dpi.
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[:2] == (324, 1008)
    out = tmp_path / 'figs' / 'both.png'
    out.parent.mkdir()
    again = run_plot(dmc, gym, f'--out={out}', cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == str(out)
    assert matplotlib.image.imread(out).shape == image.shape


@pytest.mark.parametrize('case', ['missing', 'not a run', 'no episodes'])
def test_plot_of_a_bad_path_is_a_one_line_error_with_status_2(case, tmp_path):
    good = write_run(tmp_path / 'good', 'gym', 'CartPole-v1', [1, 2])
    bad = tmp_path / 'bad'
    if case == 'not a run':
        bad.mkdir()
        (bad / 'notes.txt').write_text('hello')
    elif case == 'no episodes':
        write_run(bad, 'gym', 'CartPole-v1', [])
    result = run_plot(good, bad, cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and str(bad) in lines[0], result.stderr
    assert not (tmp_path / 'curves.png').exists()
