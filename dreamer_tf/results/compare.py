"""Methods compared the way rliable (Agarwal et al. 2021) compares them: aggregates with intervals,
performance profiles and the probability of improvement, drawn into `profiles.png`.

A method's scores are `{task: seed scores}` as `aggregate.task_scores` gives them. Every figure here is
taken over the tasks that all the compared methods have, so a sweep of a few tasks is set against the
paper on the same tasks. The resamples are rliable's stratified bootstrap, seeded (`aggregate.seeded`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dreamer_tf.results import aggregate, reference
from dreamer_tf.results import runs as runlib


def performance_profile(scores, taus, reps=2000, level=0.95, seed=0):
    """rliable's score distribution: the fraction of all (task, seed) runs scoring above each tau.

    Returns (profile [K], low [K], high [K]) for taus [K], the band a stratified bootstrap interval.
    """
    library, _ = aggregate.rliable()
    taus = np.asarray(taus, np.float64)

    def profile(*matrices):
        return library.score_distributions(aggregate.all_runs(matrices), taus)
    with aggregate.seeded(seed):
        point, band = library.get_interval_estimates(
            {'scores': aggregate.score_matrices(scores)}, profile, reps=reps,
            confidence_interval_size=level)
    return point['scores'], band['scores'][0], band['scores'][1]


def _paired_matrices(x_scores, y_scores):
    """[x_1, y_1, x_2, y_2, ...]: score matrices [seeds, tasks] of the common tasks, one pair per
    (x seeds, y seeds) count, since rliable needs every task of a matrix to have as many seeds."""
    groups = {}
    for task in sorted(set(x_scores) & set(y_scores)):
        pair = [np.asarray(s[task], np.float64).ravel() for s in (x_scores, y_scores)]
        groups.setdefault((len(pair[0]), len(pair[1])), []).append(pair)
    if not groups:
        raise ValueError('the two methods have no task in common')
    return [np.stack(column, axis=1) for pairs in groups.values() for column in zip(*pairs)]


def _improvement(*matrices):
    """rliable's P(X > Y) of each pair of matrices, averaged over all their tasks. [1]"""
    _, metrics = aggregate.rliable()
    xs, ys = matrices[0::2], matrices[1::2]
    probs = [metrics.probability_of_improvement(x, y) for x, y in zip(xs, ys)]
    return np.array([np.average(probs, weights=[x.shape[1] for x in xs])])


def probability_of_improvement(x_scores, y_scores, reps=2000, level=0.95, seed=0):
    """P(X > Y): the chance that a run of X beats a run of Y on a task (ties count half), averaged
    over the common tasks, and its interval from resampling each method's seeds on its own.

    Returns (estimate, (low, high)).
    """
    library, _ = aggregate.rliable()
    with aggregate.seeded(seed):
        point, interval = library.get_interval_estimates(
            {'pair': _paired_matrices(x_scores, y_scores)}, _improvement, reps=reps,
            confidence_interval_size=level)
    return float(point['pair'][0]), (float(interval['pair'][0][0]), float(interval['pair'][1][0]))


def default_taus(methods, count=101):
    """Thresholds from min(0, lowest score) to the highest score of any method."""
    values = np.concatenate([aggregate.all_runs(aggregate.score_matrices(s)) for s in methods.values()])
    return np.linspace(min(0.0, values.min()), values.max(), count)


def compare(methods, target=1.0, reps=2000, seed=0, taus=None):
    """Aggregates with intervals and a performance profile of each of {name: scores}, and P(first >
    other) for every other method, all over the tasks that every method has."""
    tasks = sorted(set.intersection(*(set(s) for s in methods.values())))
    if not tasks:
        raise ValueError(f'the methods {sorted(methods)} have no task in common')
    methods = {name: {task: scores[task] for task in tasks} for name, scores in methods.items()}
    taus = default_taus(methods) if taus is None else np.asarray(taus, np.float64)
    result = {'tasks': tasks, 'taus': taus, 'target': target, 'reps': reps, 'methods': {}}
    for name, scores in methods.items():
        result['methods'][name] = {
            'aggregates': aggregate.aggregates(scores, target),
            'ci': aggregate.bootstrap_ci(scores, reps, seed=seed, target=target),
            'profile': performance_profile(scores, taus, reps, seed=seed)}
    first, *others = methods
    result['improvement'] = {(first, other): probability_of_improvement(
        methods[first], methods[other], reps, seed=seed) for other in others}
    return result


def profile_figure(result, out, label='score'):
    """Write a PNG of `compare`'s result: the performance profiles with their bands and, with two or
    more methods, P(first > other) with its interval. Returns `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    pairs = result['improvement']
    fig = Figure(figsize=(9.5 if pairs else 5.5, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if pairs else 1, squeeze=False)[0]
    for name, entry in result['methods'].items():
        profile, low, high = entry['profile']
        line, = axes[0].plot(result['taus'], profile, label=name)
        axes[0].fill_between(result['taus'], low, high, color=line.get_color(), alpha=0.2, lw=0)
    axes[0].set(xlabel=f'{label} threshold', ylabel='fraction of runs above', ylim=(0, 1.02),
                title=f"performance profile ({len(result['tasks'])} tasks)")
    axes[0].legend(fontsize=8)
    for row, (p, (low, high)) in enumerate(pairs.values()):
        axes[1].errorbar([p], [row], xerr=[[p - low], [high - p]], fmt='o', capsize=4)
    if pairs:
        axes[1].axvline(0.5, color='gray', ls='--', lw=1)
        axes[1].set_yticks(range(len(pairs)), [f'P({x} > {y})' for x, y in pairs], fontsize=8)
        axes[1].set(xlim=(0, 1), ylim=(-0.5, len(pairs) - 0.5), xlabel='probability of improvement')
    fig.tight_layout()
    fig.savefig(out, format='png', dpi=90)
    return out


def _cell(value, interval):
    return f'{value:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]'


def summary_lines(result, figure='profiles.png'):
    """Markdown of `compare`'s result: one row of aggregates per method, then P(first > other)."""
    shared = ' that every method has' if len(result['methods']) > 1 else ''
    lines = ['## Compared with rliable', '',
             f"Over the {len(result['tasks'])} tasks{shared}: rliable's aggregates with 95% "
             f"stratified bootstrap intervals ({result['reps']} resamples of the seeds within each task). "
             f"The optimality gap is the mean shortfall of the runs below {result['target']:g}. `{figure}` "
             'draws the performance profiles (the fraction of runs scoring above each threshold).', '',
             '| method | mean | median | IQM | optimality gap |', '|---|---|---|---|---|']
    for name, entry in result['methods'].items():
        cells = [_cell(entry['aggregates'][m], entry['ci'][m]) for m in aggregate.METRICS]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    for (x, y), (p, interval) in result['improvement'].items():
        lines += ['', f'P({x} > {y}) = {_cell(p, interval)}: the chance that a run of {x} beats a run '
                  f'of {y} on a task, averaged over the tasks.']
    return lines


def methods_of(logdir, benchmark, version='dreamerv3', reference_dir=None, normaliser=None):
    """(protocol, {'ours': scores, '<version> (paper)': scores}), normalised as the protocol says. A
    side without scores (no logdir, no released table) is left out."""
    proto = aggregate.protocol(benchmark, version)
    proto = dataclasses.replace(proto, normaliser=normaliser) if normaliser else proto
    methods = {}
    if logdir is not None:
        methods['ours'] = aggregate.task_scores(
            [r for r in runlib.find_runs(logdir, benchmark, version) if r['xs']], proto)
    table = reference.curves(benchmark, version, reference_dir)
    if table:
        methods[f'{version} (paper)'] = reference.final_scores(table)
    if proto.normaliser:
        baselines = reference.atari_baselines(proto.normaliser, reference_dir)
        methods = {name: aggregate.normalise(s, baselines) for name, s in methods.items()}
    return proto, {name: scores for name, scores in methods.items() if scores}


def report(logdir, benchmark, out, version='dreamerv3', reference_dir=None, reps=2000, normaliser=None):
    """Write `out`/profiles.png comparing our runs with the paper's and return its Markdown section;
    [] when there is nothing to compare: no scores, or Crafter, which scores success rates."""
    if benchmark == 'crafter':
        return []
    proto, methods = methods_of(logdir, benchmark, version, reference_dir, normaliser)
    if not methods:
        return []
    result = compare(methods, proto.target, reps)
    profile_figure(result, f'{out}/profiles.png', proto.label)
    return summary_lines(result)
