"""Scoring windows, aggregates, run discovery, plots and the open-loop report.

Expected values are hand arithmetic on small made-up runs.
"""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dreamer_tf import config as configlib
from dreamer_tf.dream import open_loop_grid
from dreamer_tf.envs.crafter import ACHIEVEMENTS
from dreamer_tf.replay import Replay
from dreamer_tf.results import aggregate, compare, curves, plots, reference
from dreamer_tf.results import runs as runlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Scoring


def test_final_score_averages_the_window_and_falls_back_to_the_last_episode():
    xs, ys = [100, 380, 390, 395, 400, 401], [1, 2, 3, 5, 7, 100]
    assert aggregate.final_score(xs, ys, end=400, window=10) == pytest.approx((3 + 5 + 7) / 3)
    # No episode ended in [300, 350]: the last one before (x = 100) stands in.
    assert aggregate.final_score(xs, ys, end=350, window=50) == 1
    assert math.isnan(aggregate.final_score([500], [1], end=400, window=10))
    # Missing returns (the first point of some released curves) are ignored.
    assert aggregate.final_score([1, 2], [None, 4.0], end=2, window=5) == 4.0


def test_binned_curve_bins_fills_gaps_and_stops_at_the_run_end():
    edges = [10, 20, 30, 40, 50]
    curve = aggregate.binned_curve([5, 10, 12, 31, 35], [1, 3, 4, 6, 8], edges)
    # (0,10]: 1 and 3; (10,20]: 4; (20,30]: empty, repeats 4; (30,40]: 6 and 8; (40,50]: after the run.
    np.testing.assert_allclose(curve[:4], [2, 4, 4, 7])
    assert np.isnan(curve[4])
    assert np.isnan(aggregate.binned_curve([25], [1], edges)[:2]).all()


def test_iqm_aggregates_and_normalisation_by_hand():
    assert aggregate.aggregates({'t': np.arange(1, 9)})['iqm'] == pytest.approx(4.5)   # mean of 3, 4, 5, 6
    scores = {'a': [1.0, 3.0], 'b': [10.0, 10.0], 'c': [4.0, 8.0]}     # task means 2, 10, 6
    agg = aggregate.aggregates(scores, target=5.0)
    assert agg['mean'] == pytest.approx(6) and agg['median'] == pytest.approx(6)
    assert agg['iqm'] == pytest.approx(np.mean([3, 4, 8, 10]))        # 1 3 4 8 10 10: trim 1 each side
    # Clipped at 5: 1 3 5 5 4 5, mean 23 / 6.
    assert agg['optimality_gap'] == pytest.approx(5 - 23 / 6)
    # Unequal seed counts: mean and median over task means, IQM over the 5 runs (trim 1 each side).
    ragged = aggregate.aggregates({'a': [1.0, 2.0, 9.0], 'b': [6.0, 8.0]})
    assert ragged['mean'] == pytest.approx((4 + 7) / 2) and ragged['iqm'] == pytest.approx((2 + 6 + 8) / 3)
    norm = aggregate.normalise({'pong': [0.0, 14.6]}, {'pong': [-20.7, 14.6]})
    np.testing.assert_allclose(norm['pong'], [20.7 / 35.3, 1.0])
    with pytest.raises(ValueError, match='pong'):
        aggregate.normalise({'pong': [1.0]}, {})


def test_bootstrap_intervals_are_seeded_and_contain_the_estimate():
    rng = np.random.default_rng(1)
    scores = {f't{i}': rng.normal(i, 1.0, 5) for i in range(8)}
    np.random.seed(7)
    ci = aggregate.bootstrap_ci(scores, reps=300, seed=3)
    # rliable resamples with NumPy's global RNG: seeded inside, and the caller's stream is left alone.
    assert np.random.rand() == np.random.RandomState(7).rand()
    assert ci == aggregate.bootstrap_ci(scores, reps=300, seed=3) != aggregate.bootstrap_ci(scores, reps=300)
    point = aggregate.aggregates(scores)
    assert set(ci) == set(point) == set(aggregate.METRICS)
    for name, (low, high) in ci.items():
        assert low <= point[name] <= high and low < high
    # Identical seeds leave nothing to resample.
    fixed = aggregate.bootstrap_ci({'a': [2.0, 2.0], 'b': [4.0, 4.0]}, reps=50)
    assert fixed['mean'] == (3.0, 3.0)
    # One seed is fixed; two seeds resample to means 1, 2 or 3 (each extreme 1/4): the mean takes
    # 1.5, 2 or 2.5, and the 2.5 and 97.5 percentiles are the extremes.
    ragged = aggregate.bootstrap_ci({'a': [2.0], 'b': [1.0, 3.0]}, reps=200)
    assert ragged['mean'] == (1.5, 2.5)


def test_performance_profile_is_the_fraction_of_runs_above_each_threshold():
    scores = {'a': [1.0, 2.0], 'b': [3.0, 4.0]}
    profile, low, high = compare.performance_profile(scores, [0.0, 1.0, 2.5, 4.0], reps=100)
    np.testing.assert_allclose(profile, [1.0, 0.75, 0.5, 0.0])       # strictly above: 4, 3, 2, 0 of 4
    assert (low <= profile).all() and (profile <= high).all()
    # Above 2.5 every resample keeps a's two runs below and b's two above.
    assert (low[2], high[2]) == (0.5, 0.5) and low[1] < high[1]


def test_probability_of_improvement_by_hand():
    # [1, 2] against [0, 3]: 1 > 0, 1 < 3, 2 > 0, 2 < 3 -> 2 of 4 pairs.
    assert compare.probability_of_improvement({'t': [1.0, 2.0]}, {'t': [0.0, 3.0]}, reps=20)[0] == 0.5
    # A tie counts half: against [1, 0]: 0.5 + 1 + 1 + 1 of 4.
    assert compare.probability_of_improvement({'t': [1.0, 2.0]}, {'t': [1.0, 0.0]}, reps=20)[0] == 0.875
    # Averaged over the common tasks; u has 1 seed against 3: 5 beats 4 and 2, not 6 -> 2 / 3.
    x = {'t': [1.0, 2.0], 'u': [5.0], 'only_x': [9.0]}
    y = {'t': [0.0, 3.0], 'u': [4.0, 6.0, 2.0]}
    p, (low, high) = compare.probability_of_improvement(x, y, reps=200)
    assert p == pytest.approx((0.5 + 2 / 3) / 2) and low <= p <= high and low < high
    assert compare.probability_of_improvement(y, x, reps=20)[0] == pytest.approx(1 - p)
    # Every run of x above every run of y, whatever the resample.
    assert compare.probability_of_improvement({'t': [5.0, 6.0]}, {'t': [1.0, 2.0, 3.0]}, reps=20) == (
        1.0, (1.0, 1.0))
    with pytest.raises(ValueError, match='no task in common'):
        compare.probability_of_improvement({'a': [1.0]}, {'b': [1.0]})


def test_comparison_figure_and_table(tmp_path):
    import matplotlib.image
    methods = {'ours': {'a': [0.0, 1.0], 'b': [1.0, 1.0]},
               'paper': {'a': [0.5, 0.5], 'b': [2.0, 3.0], 'c': [4.0, 4.0]}}
    result = compare.compare(methods, target=1.0, reps=200)
    assert result['tasks'] == ['a', 'b'] and result['taus'][0] == 0 and result['taus'][-1] == 3
    # ours on a and b: runs 0 1 1 1; gap below 1 is 1 - 3/4; IQM keeps the middle 1, 1.
    ours = result['methods']['ours']
    assert ours['aggregates'] == {'mean': 0.75, 'median': 0.75, 'iqm': 1.0, 'optimality_gap': 0.25}
    # Pairs on a: 0 < 0.5 twice, 1 > 0.5 twice -> 1/2; on b: never -> 0.
    assert result['improvement'][('ours', 'paper')][0] == pytest.approx(0.25)
    png = compare.profile_figure(result, tmp_path / 'profiles.png', 'human-normalised score')
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[1] > 600
    lines = compare.summary_lines(result)
    # a resamples to 0, 0.5 or 1 and b stays 1: the mean takes 0.5, 0.75 or 1.
    assert '| ours | 0.75 [0.5, 1] | 0.75 [0.5, 1] | 1 [0.5, 1] | 0.25 [0, 0.5] |' in lines
    assert any(line.startswith('P(ours > paper) = 0.25 [') for line in lines)


def test_crafter_summary_rates_score_and_spread_over_seeds():
    def run(seed, unlocked):
        flags = {n: np.array([1.0, 0.0, 0.0, 0.0]) if n in unlocked else np.zeros(4) for n in ACHIEVEMENTS}
        return {'task': 'reward', 'seed': seed, 'xs': [10, 20, 30, 40], 'ys': [1, 2, 3, 4],
                'achievements': flags}
    summary = aggregate.crafter_summary([run(0, {'collect_wood'}), run(1, set(ACHIEVEMENTS))])
    # Seed 0: one achievement at 25 % -> exp(ln(26) / 22) - 1; seed 1: all at 25 % -> 25.
    first = math.exp(math.log(26) / 22) - 1
    assert summary['score'][0] == pytest.approx((first + 25) / 2)
    assert summary['score'][1] == pytest.approx(abs(25 - first) / 2)
    assert summary['rates']['collect_wood'] == 0.25 and summary['rates']['wake_up'] == 0.125
    assert summary['reward'] == (2.5, 0.0)
    with pytest.raises(ValueError, match='achievement'):
        aggregate.crafter_summary([{'task': 'reward', 'seed': 0, 'xs': [1], 'ys': [1]}])


def test_reference_tables_name_their_source_and_cover_the_paper_tasks():
    from dreamer_tf.envs.benchmarks import benchmark_runs
    for benchmark in ('atari100k', 'dmc_proprio', 'dmc_vision'):
        table = reference.curves(benchmark)
        assert 'reference_scores' in table['source']
        assert sorted(table['tasks']) == sorted(benchmark_runs('dreamerv3', benchmark)[0])
        proto = aggregate.protocol(benchmark)
        assert table['grid'][-1] == proto.budget and len(table['grid']) == proto.budget / proto.grid
    baselines = reference.atari_baselines()
    assert baselines['pong'] == [-20.7, 14.6] and len(baselines) == 57
    assert reference.curves('crafter') is None


# ---------------------------------------------------------------------------------------------
# Our runs on disk


def write_run(run_dir, benchmark, task, seed, episodes, steps, achievements=None):
    """A logdir as the trainer leaves it: config.yaml and metrics.jsonl with episode and train rows."""
    run_dir.mkdir(parents=True)
    config = configlib.load('dreamerv3', [benchmark, 'debug'],
                            [f'env.task={task}', f'seed={seed}', f'run.steps={steps}'])
    config.save(run_dir / 'config.yaml')
    with open(run_dir / 'metrics.jsonl', 'w') as f:
        for i, (step, score) in enumerate(episodes):
            row = {'step': step, 'episode/score': score, 'episode/length': 100}
            if achievements is not None:
                row.update({f'episode/achievement_{n}': float(n in achievements[i]) for n in ACHIEVEMENTS})
            f.write(json.dumps(row) + '\n')
            f.write(json.dumps({'step': step, 'train/loss/total': 1.0}) + '\n')
        f.write('{"step": 99999, "episode/sco')          # a run killed mid-line


def atari_sweep(root):
    """2 games x 2 seeds of a 400k-frame Atari100k sweep; final-window scores known by construction."""
    scores = {('pong', 0): -20.7, ('pong', 1): 14.6, ('boxing', 0): 12.1, ('boxing', 1): 12.1}
    for (task, seed), final in scores.items():
        episodes = [(100_000, final - 50), (395_000, final), (399_000, final)]
        write_run(root / 'dreamerv3' / 'atari100k' / task / str(seed), 'atari100k', task, seed, episodes,
                  400_000)


def test_find_runs_reads_sweeps_and_single_logdirs(tmp_path):
    atari_sweep(tmp_path / 'sweep')
    write_run(tmp_path / 'sweep' / 'dreamerv3' / 'dmc_proprio' / 'walker_walk' / '0', 'dmc_proprio',
              'walker_walk', 0, [(1000, 5.0)], 1000)
    runs = runlib.find_runs(tmp_path / 'sweep', benchmark='atari100k')
    assert sorted((r['task'], r['seed']) for r in runs) == [('boxing', 0), ('boxing', 1), ('pong', 0),
                                                            ('pong', 1)]
    assert all(r['xs'] == [100_000, 395_000, 399_000] and r['end'] == 400_000 for r in runs)
    single = runlib.find_runs(tmp_path / 'sweep' / 'dreamerv3' / 'dmc_proprio' / 'walker_walk' / '0')
    assert len(single) == 1 and single[0]['benchmark'] == 'dmc_proprio' and single[0]['ys'] == [5.0]
    assert runlib.find_runs(tmp_path / 'sweep', version='dreamerv2') == []


def test_report_scores_plots_and_tables_an_atari_sweep(tmp_path):
    atari_sweep(tmp_path / 'sweep')
    result = plots.report(tmp_path / 'sweep', 'atari100k', tmp_path / 'out', reps=50)
    # pong: seeds at random (0) and human (1) level -> 0.5; boxing at human level -> 1.
    assert result['aggregates']['ours']['mean'] == pytest.approx(0.75)
    assert result['aggregates']['ours']['median'] == pytest.approx(0.75)
    assert result['aggregates']['paper']['mean'] == pytest.approx(1.245, rel=0.005)
    for name in ('curves.png', 'aggregate.png', 'summary.md'):
        assert (tmp_path / 'out' / name).stat().st_size > 1000
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    assert '| mean | 0.75 |' in summary and '| pong | 2 |' in summary
    with pytest.raises(ValueError, match='no dreamerv3 crafter runs'):
        plots.report(tmp_path / 'sweep', 'crafter', tmp_path / 'none')


def test_plot_cli_compares_an_atari_sweep_with_the_paper_on_its_tasks(tmp_path):
    import matplotlib.image
    atari_sweep(tmp_path / 'sweep')
    out = tmp_path / 'out'
    command = [sys.executable, str(ROOT / 'results' / 'plot.py'), f'--logdir={tmp_path / "sweep"}',
               '--benchmark=atari100k', f'--out={out}', '--reps=200']
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert matplotlib.image.imread(out / 'profiles.png').ndim == 3
    summary = (out / 'summary.md').read_text()
    # Normalised pong seeds 0 and 1, boxing 1 and 1 (as in the report test): same hand values as above.
    assert 'Over the 2 tasks that every method has' in summary
    assert '| ours | 0.75 [0.5, 1] | 0.75 [0.5, 1] | 1 [0.5, 1] | 0.25 [0, 0.5] |' in summary
    assert 'P(ours > dreamerv3 (paper)) = ' in summary


def test_report_of_crafter_runs_and_the_cli(tmp_path):
    unlocked = [{'collect_wood'}, {'collect_wood', 'place_table'}]
    for seed in (0, 1):
        write_run(tmp_path / 'crafter' / str(seed), 'crafter', 'reward', seed, [(400, 2.0), (900, 4.0)],
                  1000, unlocked)
    out = tmp_path / 'plots'
    result = subprocess.run([sys.executable, str(ROOT / 'results' / 'plot.py'), f'--logdir={tmp_path}',
                             '--benchmark=crafter', f'--out={out}'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / 'crafter_success.png').exists() and (out / 'curves.png').exists()
    # Per seed: wood 100 %, table 50 %, twenty at 0 -> exp((ln 101 + ln 51) / 22) - 1 for both seeds.
    score = math.exp((math.log(101) + math.log(51)) / 22) - 1
    summary = (out / 'summary.md').read_text()
    assert f'| ours | {score:.1f} +- 0.0 | 3.0 +- 0.0 |' in summary
    assert '| dreamerv3 (paper) | 14.5 +- 1.6 | 11.7 +- 1.9 |' in summary
    bad = subprocess.run([sys.executable, str(ROOT / 'results' / 'plot.py'), f'--logdir={tmp_path}',
                          '--benchmark=dmc_vision', f'--out={out}'], capture_output=True, text=True)
    assert bad.returncode == 2 and 'no dreamerv3 dmc_vision runs' in bad.stderr


# ---------------------------------------------------------------------------------------------
# A run's committed record (results/curves/)


def write_cartpole_run(run_dir):
    """A 100k-step cartpole_balance logdir: episodes k = 1..13 score 10 k at 1000 k steps, with a restart.

    Run rows every 2000 steps log updates = step / 2, after the episode row of the same step. After
    the 12th episode the run logs steps 13000 and 14000, then restarts from the 12000 checkpoint: those
    two rows are rolled back and the 13th episode comes again, scoring 130.
    """
    run_dir.mkdir(parents=True)
    config = configlib.load('dreamerv3', ['dmc_proprio', 'debug'],
                            ['env.task=cartpole_balance', 'run.steps=100000'])
    config.save(run_dir / 'config.yaml')
    rows = []
    for k in range(1, 13):
        rows.append({'step': 1000 * k, 'episode/score': 10.0 * k, 'episode/wall_minutes': 2.0 * k})
        if k % 2 == 0:
            rows.append({'step': 1000 * k, 'run/updates': 500.0 * k, 'run/wall_minutes': 2.0 * k})
        rows.append({'step': 1000 * k, 'train/loss/total': 1.0})
    rows += [{'step': 13000, 'episode/score': 999.0, 'episode/wall_minutes': 26.0},
             {'step': 14000, 'run/updates': 999.0, 'run/wall_minutes': 28.0},
             {'step': 13000, 'episode/score': 130.0, 'episode/wall_minutes': 26.5},
             {'step': 14000, 'run/updates': 7000.0, 'run/wall_minutes': 28.5}]
    with open(run_dir / 'metrics.jsonl', 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
        f.write('{"step": 15000, "episode/sco')          # a run killed mid-line


def test_record_means_the_last_ten_episodes_and_drops_rolled_back_rows(tmp_path):
    write_cartpole_run(tmp_path / 'run')
    rows = curves.record(tmp_path / 'run')
    assert [r['env_step'] for r in rows] == [1000 * k for k in range(1, 14)]
    # Scores 10, 20, ..., 130: the first nine means grow one episode at a time, then ten slide.
    expected = [np.mean([10 * j for j in range(max(1, k - 9), k + 1)]) for k in range(1, 14)]
    assert expected[:2] == [10, 15] and expected[9:] == [55, 65, 75, 85]
    np.testing.assert_allclose([r['score'] for r in rows], expected)
    assert [r['wall_minutes'] for r in rows] == [2.0 * k for k in range(1, 13)] + [26.5]
    # Updates of the newest run row at or before the step (same step counts, 14000 is after 13000).
    assert [r['updates'] for r in rows] == [None] + [500.0 * (k - k % 2) for k in range(2, 13)] + [6000.0]
    path = curves.write_record(rows, tmp_path / 'out.csv')
    assert path.read_text().splitlines()[:3] == ['env_step,wall_minutes,score,updates',
                                                 '1000,2.00,10.000,', '2000,4.00,15.000,1000']
    table = curves.read_record(path)
    assert list(table) == list(curves.COLUMNS) and len(table['score']) == 13
    assert np.isnan(table['updates'][0]) and table['score'][-1] == 85
    thin = curves.record(tmp_path / 'run', max_rows=5)
    assert [r['env_step'] for r in thin] == [1000, 4000, 7000, 10000, 13000]


def test_record_run_writes_csv_and_png_and_replots_from_the_csv_alone(tmp_path):
    import matplotlib.image
    write_cartpole_run(tmp_path / 'run')
    script = [sys.executable, str(ROOT / 'results' / 'record_run.py')]
    result = subprocess.run(script + [f'--logdir={tmp_path / "run"}', f'--out={tmp_path / "curves"}'],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    csv_path = tmp_path / 'curves' / 'dreamerv3-dmc_proprio-cartpole_balance.csv'
    image = matplotlib.image.imread(csv_path.with_suffix('.png'))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[2] in (3, 4)
    assert curves.read_record(csv_path)['env_step'][-1] == 13000
    # A new machine without the logdir: the committed CSV alone re-plots.
    alone = tmp_path / 'clone' / csv_path.name
    alone.parent.mkdir()
    alone.write_bytes(csv_path.read_bytes())
    result = subprocess.run(script + [f'--csv={alone}', '--steps=100000'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert matplotlib.image.imread(alone.with_suffix('.png')).ndim == 3
    # An earlier run's record (its logdir lost with a machine) is found by name and drawn too.
    earlier = tmp_path / 'clone' / 'earlier' / '1' / csv_path.name
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(csv_path.read_bytes())
    (tmp_path / 'clone' / 'earlier' / 'notes').mkdir()
    assert plots.earlier_records(alone) == [earlier]
    plain = matplotlib.image.imread(alone.with_suffix('.png'))
    with_earlier = matplotlib.image.imread(plots.record_figure(alone, tmp_path / 'e.png', end=100000))
    assert plain.shape == with_earlier.shape and np.abs(plain - with_earlier).max() > 0.1
    bad = tmp_path / 'cartpole.csv'
    bad.write_bytes(csv_path.read_bytes())
    result = subprocess.run(script + [f'--csv={bad}'], capture_output=True, text=True)
    assert result.returncode == 2 and '<version>-<benchmark>-<task>[-<setting>].csv' in result.stderr


def test_records_of_the_small_setting_are_named_apart_and_plotted_together(tmp_path):
    import matplotlib.image
    write_cartpole_run(tmp_path / 'run')
    script = [sys.executable, str(ROOT / 'results' / 'record_run.py'), f'--out={tmp_path / "curves"}']
    result = subprocess.run(script + [f'--logdir={tmp_path / "run"}', '--setting=small'],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    path = tmp_path / 'curves' / 'dreamerv3-dmc_proprio-cartpole_balance-small.csv'
    assert curves.parse_full_name(path) == ('dreamerv3', 'dmc_proprio', 'cartpole_balance', 'small')
    assert curves.parse_name(path) == ('dreamerv3', 'dmc_proprio', 'cartpole_balance')
    assert curves.read_record(path)['score'][-1] == 85
    # A second version's record joins the same panel of the one figure.
    (tmp_path / 'curves' / 'dreamerv2-dmc_proprio-cartpole_balance-small.csv').write_bytes(path.read_bytes())
    png = plots.settings_figure(sorted((tmp_path / 'curves').glob('*-small.csv')), tmp_path / 'all.png')
    assert matplotlib.image.imread(png).ndim == 3
    assert matplotlib.image.imread(tmp_path / 'curves' / 'small.png').ndim == 3
    # Tasks may hold a '-' (gym's CartPole-v1); versions and benchmarks do not.
    assert curves.parse_full_name(pathlib.Path('dreamerv3-gym-CartPole-v1-small.csv')) == (
        'dreamerv3', 'gym', 'CartPole-v1', 'small')
    assert curves.parse_full_name(pathlib.Path('dreamerv3-gym-CartPole-v1.csv'))[2:] == ('CartPole-v1', None)
    with pytest.raises(ValueError, match='setting'):
        curves.parse_full_name(tmp_path / 'dreamerv3-small.csv')


# ---------------------------------------------------------------------------------------------
# Open-loop report


def test_open_loop_grid_layout():
    truth = np.zeros((2, 7, 4, 5, 3), np.uint8)
    pred = np.ones((2, 7, 4, 5, 3), np.float32)
    grid = open_loop_grid(truth, pred, context=3, columns=6)
    # 3 bar rows + per sequence 3 image rows of 4 px and a 2 px gap; 6 columns of 5 px + 1 px gap.
    assert grid.shape == (3 + 2 * (3 * 4 + 2), 6 * 6, 3) and grid.dtype == np.uint8
    assert (grid[3:7, :5] == 0).all() and (grid[7:11, :5] == 255).all() and (grid[11:15, :5] == 255).all()
    assert tuple(grid[0, 0]) == (40, 170, 60) and tuple(grid[0, 3 * 6]) == (210, 50, 40)
    gray = open_loop_grid(truth[..., :1], pred[..., :1], context=3)
    assert gray.shape[-1] == 3 and gray.shape[1] == 7 * 6


def test_sampling_with_a_separate_rng_leaves_the_training_draws_unchanged():
    def filled():
        replay = Replay(4, 1000, seed=5)
        for t in range(50):
            replay.add({'x': np.float32(t), 'is_first': t == 0, 'is_last': False, 'is_terminal': False})
        return replay
    plain, reporting = filled(), filled()
    first = plain.sample(3)
    reporting.sample(3, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(first['x'], reporting.sample(3)['x'])


def test_trainer_writes_open_loop_images_to_tensorboard(tmp_path):
    pytest.importorskip('ale_py')
    import tensorflow as tf

    import dreamer_tf
    from dreamer_tf.trainer import Trainer
    # Prefill only (no update runs): the report's plumbing, not the model's quality, is under test.
    config = dreamer_tf.make_config('dreamerv3', 'atari100k', ['debug'], **{
        'env.task': 'pong', 'run.steps': 300, 'run.prefill': 1000, 'run.report_every': 300,
        'replay.persist': False})
    trainer = Trainer(config, tmp_path)
    try:
        trainer.run()
    finally:
        trainer.close()
    images = []
    for path in tmp_path.glob('events.out.tfevents.*'):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            images += [(event.step, v) for v in event.summary.value if v.tag == 'report/open_loop']
    assert len(images) == 1 and images[0][0] == 300
    # tf.summary.image stores [width, height, encoded PNG]: 17 steps (16 + 1 context step) of 64 + 1 px.
    width, height, png = tf.make_ndarray(images[0][1].tensor)
    assert int(width) == 17 * 65 and int(height) == 3 + 4 * (3 * 64 + 2)
    assert tf.io.decode_png(png).shape == (int(height), int(width), 3)
