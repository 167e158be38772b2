"""How the papers turn training curves into per-task scores and benchmark aggregates.

A run is a dict `{'task', 'seed', 'xs', 'ys'}`: `xs` the env step (Atari: frames = agent steps x 4) at
which each training episode ended, `ys` its return. Crafter runs also carry `achievements`, a dict
name -> per-episode 0/1 flags aligned with `xs`.

Scoring a run (`final_score`): the mean return of the episodes that ended in the last `window` steps
of the budget, `end - window <= x <= end`. When no episode ended in the window (long Atari episodes,
e.g. up_n_down), the last episode that ended before it stands in. This is the windowing that
reproduces the published aggregates from the released curves (tests/test_golden.py):

| benchmark | budget | window | aggregate of per-task means over seeds |
|---|---|---|---|
| atari100k | 400k frames | last 10k frames | human-normalised mean 1.245, median 0.480 |
| dmc_proprio | 500k steps | last 5% (25k) | mean 757.5 |
| dmc_vision | 1M steps | last 5% (50k) | mean 785.6 |
| atari (200M) | 200M frames | last 5% (10M) | DreamerV2 gamer-normalised median about 2.2 |
| crafter | 1M steps | all of it | success rates over all training episodes |

Dropping the empty windows instead of the stand-in gives Atari100k 1.247 / 0.494, which misses the
published median. A task's score is the mean over its seeds; `mean` and `median` are taken over
tasks, `iqm` (interquartile mean) and `optimality_gap` over all (task, seed) scores, all by rliable
(Agarwal et al. 2021), as are the stratified bootstrap intervals.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A paper's evaluation protocol of one benchmark. Steps are env steps (Atari: frames)."""

    budget: float        # steps of a full run
    window: float        # final window that scores a run; == budget: every episode counts
    grid: float          # spacing of the learning-curve grid
    normaliser: str | None = None   # table of reference/atari_baselines.json, or raw scores
    label: str = 'score'
    target: float = 1.0  # the optimality gap's threshold: human level, or DMC's best return


PROTOCOLS = {
    'atari100k': Protocol(400e3, 10e3, 10e3, 'dreamerv3_gamer', 'human-normalised score'),
    'atari': Protocol(200e6, 10e6, 4e6, 'dreamerv3_gamer', 'human-normalised score'),
    'dmc_proprio': Protocol(500e3, 25e3, 10e3, None, 'episode return', 1000.0),
    'dmc_vision': Protocol(1e6, 50e3, 20e3, None, 'episode return', 1000.0),
    'crafter': Protocol(1e6, 1e6, 20e3, None, 'episode return'),
}
# Protocols that differ for an older agent: DreamerV1 trained DMC vision for 5M steps (SPEC),
# DreamerV2 its DMC vision runs for 2M steps (its released curves end at 1.98M).
VERSION_PROTOCOLS = {
    ('dreamerv1', 'dmc_vision'): Protocol(5e6, 250e3, 100e3, None, 'episode return', 1000.0),
    ('dreamerv2', 'dmc_vision'): Protocol(2e6, 100e3, 40e3, None, 'episode return', 1000.0),
    ('dreamerv2', 'atari'): Protocol(200e6, 10e6, 4e6, 'dreamerv2_gamer', 'gamer-normalised score'),
}


def protocol(benchmark, version='dreamerv3'):
    if (version, benchmark) in VERSION_PROTOCOLS:
        return VERSION_PROTOCOLS[(version, benchmark)]
    if benchmark not in PROTOCOLS:
        raise ValueError(f'unknown benchmark {benchmark!r}; known: {sorted(PROTOCOLS)}')
    return PROTOCOLS[benchmark]


def grid(proto, end=None):
    """Right edges of the curve bins: grid, 2 grid, ..., up to `end` (default: the budget)."""
    end = proto.budget if end is None else end
    return np.arange(1, int(np.floor(end / proto.grid + 1e-9)) + 1) * proto.grid


def _clean(xs, ys):
    """Float arrays without the missing returns (None/NaN) that some released curves start with."""
    xs = np.asarray(xs, np.float64)
    ys = np.asarray([np.nan if y is None else y for y in ys], np.float64)
    keep = np.isfinite(ys)
    return xs[keep], ys[keep]


def final_score(xs, ys, end, window):
    """Mean return of the episodes ending in [end - window, end]; else the last one before; else NaN."""
    xs, ys = _clean(xs, ys)
    inside = (xs >= end - window) & (xs <= end)
    if inside.any():
        return float(ys[inside].mean())
    before = xs <= end
    return float(ys[before][-1]) if before.any() else float('nan')


def binned_curve(xs, ys, edges):
    """Mean return per bin (edge - spacing, edge]; empty bins inside the run repeat the previous value.

    Bins before the first episode or after the run's last episode stay NaN, so a run that stopped
    early does not extend flat to the end of the grid.
    """
    xs, ys = _clean(xs, ys)
    edges = np.asarray(edges, np.float64)
    index = np.searchsorted(edges, xs, side='left')    # bin i holds edges[i - 1] < x <= edges[i]
    curve = np.full(len(edges), np.nan)
    valid = index < len(edges)
    sums = np.bincount(index[valid], ys[valid], len(edges))
    counts = np.bincount(index[valid], minlength=len(edges))
    curve[counts > 0] = sums[counts > 0] / counts[counts > 0]
    if not len(xs):
        return curve
    last = min(int(np.searchsorted(edges, xs.max(), side='left')), len(edges) - 1)
    for i in range(1, last + 1):
        if np.isnan(curve[i]):
            curve[i] = curve[i - 1]
    return curve


def group_by_task(runs):
    tasks = {}
    for run in runs:
        tasks.setdefault(run['task'], []).append(run)
    return dict(sorted(tasks.items()))


def task_scores(runs, proto, end=None):
    """{task: per-seed final scores [S]} with each run scored at `end` (default: the budget).

    A run dict may hold its own `end` (a run trained for fewer steps than the budget).
    """
    scores = {}
    for task, group in group_by_task(runs).items():
        values = [final_score(r['xs'], r['ys'], r.get('end') or end or proto.budget, proto.window)
                  for r in group]
        scores[task] = np.array([v for v in values if np.isfinite(v)])
    return {task: values for task, values in scores.items() if len(values)}


def normalise(scores, table):
    """(score - random) / (human - random) per task; `table` maps task -> [random, human]."""
    missing = sorted(set(scores) - set(table))
    if missing:
        raise ValueError(f'no normalisation entry for {missing}')
    return {task: (np.asarray(v, np.float64) - table[task][0]) / (table[task][1] - table[task][0])
            for task, v in scores.items()}


def rliable():
    """rliable's (library, metrics). It imports pandas, statsmodels and arch (seconds), so only the
    results scripts pay for it, not a training run that draws its own curve."""
    from rliable import library, metrics
    return library, metrics


@contextlib.contextmanager
def seeded(seed):
    """rliable draws its resamples from NumPy's global RNG (its `random_state` is unused): seed it,
    then give the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def score_matrices(scores):
    """{task: seed scores} as rliable score matrices [seeds, tasks], one per seed count.

    rliable resamples the seeds of each task of a matrix; tasks with fewer seeds than others go into
    their own matrix, which it resamples independently (StratifiedIndependentBootstrap).
    """
    columns = {}
    for values in scores.values():
        values = np.asarray(values, np.float64).ravel()
        columns.setdefault(len(values), []).append(values)
    return [np.stack(group, axis=1) for group in columns.values()]


def all_runs(matrices):
    return np.concatenate([m.ravel() for m in matrices])


def _aggregate_fn(target):
    """The four aggregates of score matrices, as one vector so that one bootstrap serves them all.

    mean and median are rliable's, over the task means ([1, tasks]: the mean over each task's own
    seeds); IQM and optimality gap are rliable's over all (task, seed) scores.
    """
    _, metrics = rliable()

    def fn(*matrices):
        means = np.concatenate([m.mean(axis=0) for m in matrices])[None]
        runs = all_runs(matrices)
        return np.array([metrics.aggregate_mean(means), metrics.aggregate_median(means),
                         metrics.aggregate_iqm(runs), metrics.aggregate_optimality_gap(runs, target)])
    return fn


METRICS = ('mean', 'median', 'iqm', 'optimality_gap')


def aggregates(scores, target=1.0):
    """{'mean', 'median', 'iqm', 'optimality_gap'} of {task: seed scores}; the gap is the mean
    shortfall of all runs below `target` (1: human level for normalised Atari scores)."""
    values = _aggregate_fn(target)(*score_matrices(scores))
    return {name: float(v) for name, v in zip(METRICS, values)}


def bootstrap_ci(scores, reps=2000, level=0.95, seed=0, target=1.0):
    """rliable's stratified percentile bootstrap intervals of `aggregates` (seeds resampled within
    each task). Returns {name: (low, high)}; a task with one seed contributes a fixed value."""
    library, _ = rliable()
    with seeded(seed):
        _, intervals = library.get_interval_estimates(
            {'scores': score_matrices(scores)}, _aggregate_fn(target), reps=reps,
            confidence_interval_size=level)
    low, high = intervals['scores']
    return {name: (float(lo), float(hi)) for name, lo, hi in zip(METRICS, low, high)}


def seed_band(curves):
    """Mean, min and max over seeds of [S, G] curves, ignoring NaN; all-NaN columns stay NaN."""
    curves = np.asarray(curves, np.float64)
    out = {}
    for name, fn in (('mean', np.mean), ('min', np.min), ('max', np.max)):
        column = np.full(curves.shape[1], np.nan)
        for j in range(curves.shape[1]):
            finite = curves[:, j][np.isfinite(curves[:, j])]
            if len(finite):
                column[j] = fn(finite)
        out[name] = column
    return out


# ------------------------------------------------------------------------------------------------
# Crafter (Hafner 2022): success rates over all training episodes of the 1M-step budget, the score as
# the geometric mean of (1 + rate in %), and mean +- std (population) over seeds, which reproduces the
# human experts' 50.5 +- 6.8 % from their released episodes.


def crafter_run_summary(run, end=None):
    """{'rates': {achievement: fraction}, 'score': %, 'reward': mean return} of one Crafter run."""
    from dreamer_tf.envs.crafter import ACHIEVEMENTS, crafter_score
    xs = np.asarray(run['xs'], np.float64)
    keep = xs <= (end or run.get('end') or PROTOCOLS['crafter'].budget)
    flags = run.get('achievements', {})
    missing = [name for name in ACHIEVEMENTS if name not in flags]
    if missing:
        raise ValueError(f"run {run.get('task')}/{run.get('seed')} logs no episode/achievement_ flags "
                         f'for {missing}')
    rates = {name: float(np.mean(np.asarray(flags[name], np.float64)[keep] > 0)) for name in ACHIEVEMENTS}
    reward = float(np.mean(np.asarray(run['ys'], np.float64)[keep]))
    return {'rates': rates, 'score': crafter_score(rates), 'reward': reward}


def crafter_summary(runs, end=None):
    """Per-seed Crafter summaries, and their mean +- std: score, reward and per-achievement rates."""
    per_seed = [crafter_run_summary(run, end) for run in runs]
    names = list(per_seed[0]['rates'])
    rates = np.array([[s['rates'][n] for n in names] for s in per_seed])
    score = np.array([s['score'] for s in per_seed])
    reward = np.array([s['reward'] for s in per_seed])
    return {'seeds': len(per_seed), 'score': (float(score.mean()), float(score.std())),
            'reward': (float(reward.mean()), float(reward.std())),
            'rates': {n: float(r) for n, r in zip(names, rates.mean(0))},
            'per_seed': per_seed}
