"""Figures and the Markdown summary of our runs against the papers' (the engine of results/plot.py).

`report(logdir, benchmark, out)` writes into `out`:
- `curves.png`: one panel per task, our runs' mean over seeds (band: min to max) on the protocol's
  grid, against the paper's mean and min-max band;
- `aggregate.png`: mean and median over tasks of the (human-normalised, for Atari) per-task curves;
- `crafter_success.png` (Crafter): success rate per achievement, ours against the human experts';
- `summary.md`: the per-task final scores and the aggregates with 95% bootstrap intervals.

`record_figure(csv, png)` draws one run's committed record (`curves.py`) against the released curve.

`runs_figure(logdir_runs(logdirs))` overlays run logdirs straight from their metrics.jsonl: a panel per
(benchmark, task), each run's episode scores and running mean, and the released curve where there is one.
`LiveCurves` keeps a training run's `<logdir>/curves.png` current; `python -m dreamer_tf.plot` overlays.
Every figure is drawn on its own Agg canvas (`_agg_figure`) and written whole (`save_png`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import time

import numpy as np
import yaml

from dreamer_tf import config as configlib
from dreamer_tf.results import aggregate, curves, reference, summary
from dreamer_tf.results import runs as runlib

EARLIER = 'earlier'   # results/curves/earlier/<n>/: records of earlier runs whose logdirs were lost


def _agg_figure(figsize):
    """A figure on its own Agg canvas, outside pyplot: no global backend switch and no figure registry in
    the training process that draws it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, out, dpi=90):
    """Write `fig` at `out` through a temporary file and os.replace, so that a reader (an image viewer
    refreshing a run's curves.png) never sees half a PNG."""
    out = pathlib.Path(out)
    tmp = out.with_name(f'.{out.name}.{os.getpid()}.tmp')
    try:
        fig.savefig(tmp, format='png', dpi=dpi)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)      # only left when savefig or the rename failed
    return out


def _steps_label(frames):
    return 'frames' if frames else 'env steps'


def _band(ax, xs, band, color, mean_label, band_label=None, lw=1.5):
    """`band`'s mean as a line over its min-max range."""
    ax.fill_between(xs, band['min'], band['max'], color=color, alpha=0.25, lw=0, label=band_label)
    ax.plot(xs, band['mean'], color=color, lw=lw, label=mean_label)


def _our_band(group, edges):
    return aggregate.seed_band([aggregate.binned_curve(r['xs'], r['ys'], edges) for r in group])


def learning_curves(runs, table, proto, path):
    """One panel per task: ours (mean over seeds, min-max band) and the paper's, on the same grid."""
    tasks = aggregate.group_by_task(runs)
    names = sorted(set(tasks) | (set(table['tasks']) if table and not tasks else set()))
    cols = min(6, max(1, len(names)))
    rows = -(-len(names) // cols)
    fig = _agg_figure((3.0 * cols, 2.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    end = max([r['end'] or 0 for r in runs] + [proto.grid])
    edges = aggregate.grid(proto, min(proto.budget, end)) if runs else aggregate.grid(proto)
    for ax, name in zip(axes.flat, names):
        if table and name in table['tasks']:
            _band(ax, table['grid'], table['tasks'][name], 'tab:gray', 'paper', lw=1.2)
        if name in tasks:
            _band(ax, edges, _our_band(tasks[name], edges), 'tab:blue', f'ours ({len(tasks[name])})')
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis('off')
    if names:
        axes.flat[0].legend(fontsize=7)
    fig.supxlabel(_steps_label('human' in proto.label), fontsize=9)
    fig.supylabel('episode return', fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.95, wspace=0.35, hspace=0.55)
    return save_png(fig, path, dpi=80)


def _task_means(curves_by_task, table_norm):
    """[T, G] per-task curves, normalised when `table_norm` is given."""
    rows = []
    for task, curve in curves_by_task.items():
        curve = np.asarray(curve, np.float64)
        if table_norm is not None:
            random, human = table_norm[task]
            curve = (curve - random) / (human - random)
        rows.append(curve)
    return np.array(rows)


def _over_tasks(matrix, fn):
    """`fn` over the tasks that have a value at each grid point (NaN where none has)."""
    out = np.full(matrix.shape[1], np.nan)
    for j in range(matrix.shape[1]):
        finite = matrix[:, j][np.isfinite(matrix[:, j])]
        if len(finite):
            out[j] = fn(finite)
    return out


def aggregate_curves(runs, table, proto, path, baselines=None):
    """Mean and median over tasks of the per-task mean curves; ours over the tasks we ran."""
    fig = _agg_figure((9, 3.2))
    axes = fig.subplots(1, 2)
    series = []
    if table:
        series.append(('paper', 'tab:gray', table['grid'],
                       {t: e['mean'] for t, e in table['tasks'].items()}))
    if runs:
        end = min(proto.budget, max(r['end'] or proto.grid for r in runs))
        edges = aggregate.grid(proto, end)
        ours = {t: _our_band(g, edges)['mean'] for t, g in aggregate.group_by_task(runs).items()}
        series.append((f'ours ({len(ours)} tasks)', 'tab:blue', edges, ours))
    for ax, (title, fn) in zip(axes, (('mean', np.mean), ('median', np.median))):
        for label, color, xs, by_task in series:
            ax.plot(xs, _over_tasks(_task_means(by_task, baselines), fn), color=color, lw=1.5, label=label)
        ax.set_title(f'{title} over tasks', fontsize=10)
        ax.set_xlabel(_steps_label(baselines), fontsize=9)
        ax.set_ylabel(proto.label, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def crafter_bars(crafter, crafter_reference, path):
    """Success rate per achievement (log scale, %): ours (mean over seeds) and the human experts'."""
    human = crafter_reference['human_episodes']['seeds']
    names = list(human[0]['rates'])
    human_rates = [100 * np.mean([s['rates'][n] for s in human]) for n in names]
    x = np.arange(len(names))
    fig = _agg_figure((11, 3.6))
    ax = fig.subplots()
    floor = 0.01   # the log axis needs a floor; 0 % shows as a stub at 0.01 %
    if crafter:
        ours = [100 * crafter['rates'][n] for n in names]
        ax.bar(x - 0.2, np.maximum(ours, floor), 0.4, label=f"ours ({crafter['seeds']} seeds)",
               color='tab:blue')
    ax.bar(x + 0.2, np.maximum(human_rates, floor), 0.4, label='human experts', color='tab:gray')
    ax.set_yscale('log')
    ax.set_ylim(floor, 100)
    ax.set_ylabel('success rate (%)')
    ax.set_xticks(x, [n.replace('_', ' ') for n in names], rotation=60, ha='right', fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def _release(ax, table, task, end, name='release', color='tab:gray'):
    """The released curve of `task` up to `end`: mean over seeds and min-max band."""
    if not table or task not in table['tasks']:
        return
    ref, keep = table['tasks'][task], table['grid'] <= end
    _band(ax, table['grid'][keep], {k: ref[k][keep] for k in ('min', 'mean', 'max')}, color,
          f"{name}, mean of {ref['seeds']} seeds", f'{name}, min-max over seeds', lw=1.2)


def earlier_records(path):
    """The records of earlier runs of `path`'s command: `<dir>/earlier/<n>/<name>`, oldest first."""
    folder = pathlib.Path(path).parent / EARLIER
    found = [p for p in folder.glob(f'*/{pathlib.Path(path).name}') if p.parent.name.isdigit()]
    return sorted(found, key=lambda p: int(p.parent.name))


def _earlier(ax, path, end):
    """Dashed lines for the earlier runs' records, each labelled with how far it got."""
    for n, old in enumerate(earlier_records(path), 1):
        data = curves.read_record(old)
        if not len(data['env_step']):
            continue
        keep = data['env_step'] <= end
        ax.plot(data['env_step'][keep], data['score'][keep], color='tab:cyan', lw=1.0, ls='--',
                label=f"ours, earlier run {n} (logdir lost at {data['env_step'][-1]:,.0f} steps)")


def _last_point(ax, data, table, task):
    """Mark our newest point and spell it out, with the release's mean at the same step."""
    x, y = data['env_step'][-1], data['score'][-1]
    minutes, updates = data['wall_minutes'][-1], data['updates'][-1]
    text = f'ours: {y:.0f} at {x:,.0f} steps'
    text += f'\n{minutes:.0f} min' if np.isfinite(minutes) else ''
    text += f', {updates:,.0f} updates' if np.isfinite(updates) else ''
    known = table and task in table['tasks']
    release = np.interp(x, table['grid'], table['tasks'][task]['mean'], left=np.nan) if known else np.nan
    text += f'\nrelease mean there: {release:.0f}' if np.isfinite(release) else ''
    ax.plot([x], [y], 'o', color='tab:blue', ms=5)
    ax.annotate(text, (x, y), xytext=(0.03, 0.95), textcoords='axes fraction', va='top', fontsize=8,
                arrowprops=dict(arrowstyle='->', color='tab:blue', lw=0.8))


def record_figure(path, out, end=None, reference_dir=None, window=curves.WINDOW):
    """Plot the record at `path` (named <version>-<benchmark>-<task>.csv) against the released curve.

    Records of earlier runs of the same command, kept as `earlier/<n>/<the same name>` beside it (a run
    whose logdir was lost with its machine), are drawn too, dashed, so a restart hides nothing.

    The x-axis ends at `end` (the run's step budget); by default at the record's last step rounded up
    to the protocol's grid, since the CSV alone does not hold the budget.
    """
    version, benchmark, task = curves.parse_name(path)
    data = curves.read_record(path)
    if not len(data['env_step']):
        raise ValueError(f'{path}: the record has no rows')
    proto = aggregate.protocol(benchmark, version)
    end = end or proto.grid * np.ceil(data['env_step'][-1] / proto.grid)
    table = reference.curves(benchmark, version, reference_dir)
    fig = _agg_figure((6.4, 3.8))
    ax = fig.subplots()
    _release(ax, table, task, end)
    _earlier(ax, path, end)
    ax.plot(data['env_step'], data['score'], color='tab:blue', lw=1.5,
            label=f'ours, mean of the last {window} episodes')
    _last_point(ax, data, table, task)
    ax.set_xlim(0, end)
    ax.set_xlabel(_steps_label('human' in proto.label), fontsize=9)
    ax.set_ylabel('episode return', fontsize=9)
    ax.set_title(f'{version} {benchmark} {task}', fontsize=10)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    return save_png(fig, out)


def settings_figure(paths, out, window=curves.WINDOW):
    """Records of a non-paper setting (the CPU `small` overlay) in one figure: a panel per task with one
    line per version, score against training wall-clock minutes (what a laptop user waits for)."""
    by_task = {}
    for path in sorted(paths):
        version, benchmark, task, _ = curves.parse_full_name(path)
        by_task.setdefault(f'{benchmark} {task}', []).append((version, curves.read_record(path)))
    if not by_task:
        raise ValueError('no records to plot')
    fig = _agg_figure((4.2 * len(by_task), 3.4))
    axes = fig.subplots(1, len(by_task), squeeze=False)
    for ax, (title, lines) in zip(axes[0], sorted(by_task.items()), strict=True):
        for version, data in lines:
            ax.plot(data['wall_minutes'], data['score'], lw=1.5, label=version)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('training wall-clock minutes (2-core CPU)', fontsize=8)
        ax.set_ylabel(f'mean return of the last {window} episodes', fontsize=8)
        ax.set_xlim(left=0)
        ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    return save_png(fig, out)


# ------------------------------------------------------------------------------------------------
# Run logdirs: the trainer's <logdir>/curves.png and overlays of several runs (python -m dreamer_tf.plot)

CURVES_PNG = 'curves.png'
# One colour per run; tab:gray and the other _RELEASE_COLORS are kept for released curves.
_RUN_COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown', 'tab:pink',
               'tab:olive', 'tab:cyan')
_RELEASE_COLORS = ('tab:gray', 'black', 'silver')


def running_mean(values, window=curves.WINDOW):
    """At each index the mean of the last `window` values (of fewer at the start), as curves.record has it."""
    values = np.asarray(values, np.float64)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    counts = np.minimum(ends, window)
    return (sums[ends] - sums[ends - counts]) / counts


def _read_config(logdir):
    for name in ('config.yaml', runlib.METRICS_FILE):
        if not (logdir / name).is_file():
            raise ValueError(f'{logdir}: not a run logdir (no {name})')
    try:
        return configlib.Config.from_file(logdir / 'config.yaml')
    except yaml.YAMLError as error:     # not a ValueError; callers report ValueErrors as bad input
        raise ValueError(f"{logdir / 'config.yaml'}: not a saved config ({error})") from error


def logdir_run(logdir):
    """What the run in `logdir` ran and its finished training episodes (`steps`, `scores`, possibly empty).

    Rows a restart rolled back are dropped; `run/updates` rows are read too, since the first one a resumed
    run logs is what shows where it stepped back to. Raises ValueError if `logdir` holds no run.
    """
    logdir = pathlib.Path(logdir).expanduser().absolute()
    config = _read_config(logdir)
    rows = curves.timeline(runlib.metric_rows(logdir, ['episode/score', 'run/updates']))
    episodes = [row for row in rows if row.get('episode/score') is not None]
    benchmark = runlib.benchmark_of(config) or config.env.suite     # benchmark_of knows every suite
    return {'path': str(logdir), 'name': logdir.name, 'version': config.version or 'dreamerv3',
            'benchmark': benchmark, 'task': config.env.task, 'end': float(config.run.steps),
            'steps': np.array([row['step'] for row in episodes], np.float64),
            'scores': np.array([row['episode/score'] for row in episodes], np.float64)}


def logdir_runs(logdirs):
    """`logdir_run` of each logdir; ValueError names the first that is no run or has no finished episode."""
    runs = [logdir_run(path) for path in logdirs]
    for run in runs:
        if not len(run['steps']):
            raise ValueError(f"{run['path']}: no finished training episode in its metrics.jsonl yet")
    return runs


@functools.lru_cache(maxsize=16)
def _release_table(benchmark, version, reference_dir):
    """The released curves, cached (redrawn every log interval), or None where none were released or the
    repository's tables are absent (an installed package): the figure then just has no release."""
    try:
        return reference.curves(benchmark, version, reference_dir)
    except FileNotFoundError:
        return None


def _run_panel(ax, benchmark, task, group, reference_dir, window):
    """Each run's episode scores (dots) and running mean (line) over the released curve of each version."""
    end = max(max(run['end'], run['steps'][-1]) for run, _ in group)
    versions = sorted({run['version'] for run, _ in group})
    for version, color in zip(versions, _RELEASE_COLORS * len(versions)):
        name = 'release' if len(versions) == 1 else f'{version} release'
        _release(ax, _release_table(benchmark, version, reference_dir), task, end, name, color)
    for run, color in group:
        ax.plot(run['steps'], run['scores'], '.', color=color, ms=3, alpha=0.5)
        ax.plot(run['steps'], running_mean(run['scores'], window), color=color, lw=1.5,
                label=f"{run['name']} ({run['version']})")
    ax.set_xlim(0, end)
    ax.set_xlabel(_steps_label(benchmark.startswith('atari')), fontsize=9)
    ax.set_ylabel(f'episode return\n(dots: episodes, lines: mean of {window})', fontsize=8)
    ax.set_title(f'{benchmark} {task}', fontsize=10)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc='lower right')    # 'best' would search over every plotted point


def runs_figure(runs, reference_dir=None, window=curves.WINDOW, make_figure=_agg_figure):
    """One panel per (benchmark, task) of `runs` (`logdir_runs` dicts), one colour per run.

    `make_figure(figsize)` makes the figure: an Agg one by default, pyplot's `plt.figure` for a window.
    """
    if not runs:
        raise ValueError('no runs to plot')
    panels = {}
    for run, color in zip(runs, _RUN_COLORS * len(runs)):
        panels.setdefault((run['benchmark'], run['task']), []).append((run, color))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = make_figure(figsize=(5.6 * cols, 3.6 * rows))
    for i, ((benchmark, task), group) in enumerate(panels.items()):
        _run_panel(fig.add_subplot(rows, cols, i + 1), benchmark, task, group, reference_dir, window)
    fig.tight_layout()
    return fig


class LiveCurves:
    """The trainer's `<logdir>/curves.png`: `runs_figure` of its own run, redrawn by `update()`.

    A plot must never stop training: any failure prints one warning per run, and later calls try again.
    The cost of a redraw grows with metrics.jsonl, and a fast run with short log intervals would spend much
    of its time plotting; so a redraw is skipped while the last one took more than `share` of the time
    since. `update(final=True)` always draws, unless nothing was logged since the last drawing.
    """

    def __init__(self, logdir, share=0.05, reference_dir=None):
        self.logdir, self.share, self.reference_dir = pathlib.Path(logdir), share, reference_dir
        self.path = self.logdir / CURVES_PNG
        self.cost = 0.0             # seconds the last attempt took
        self.tried_at = None        # time.monotonic() at its end
        self.drawn_size = None      # metrics.jsonl's size when last drawn
        self.warned = False

    def update(self, final=False):
        """Redraw curves.png if due; True if it was redrawn."""
        start = time.monotonic()
        if not final and self.tried_at is not None and self.cost > self.share * (start - self.tried_at):
            return False
        try:
            drawn = self._draw()
        except Exception as error:       # any failure at all: training matters more than its picture
            self._warn(error)
            drawn = False
        self.tried_at = time.monotonic()
        self.cost = self.tried_at - start
        return drawn

    def _draw(self):
        size = os.path.getsize(self.logdir / runlib.METRICS_FILE)
        if size == self.drawn_size:
            return False
        run = logdir_run(self.logdir)
        if not len(run['steps']):    # no episode finished yet (prefill): nothing to draw, not a fault
            return False
        save_png(runs_figure([run], self.reference_dir), self.path)
        self.drawn_size = size
        return True

    def _warn(self, error):
        if not self.warned:
            self.warned = True
            text = ' '.join(str(error).split())     # one line, whatever the error's message holds
            print(f'warning: cannot draw {self.path} ({type(error).__name__}: {text}); training goes on, '
                  'later plotting errors of this run are not shown', flush=True)


def logdirs_figure(logdirs, out=None, show=False, reference_dir=None, window=curves.WINDOW):
    """Overlay the runs in `logdirs` (`runs_figure`); write the PNG at `out` if given, open a window if
    `show`. Returns `out`. ValueError names a path that holds no run or no finished episode."""
    runs = logdir_runs(logdirs)
    if not show:
        return save_png(runs_figure(runs, reference_dir, window), out)
    import matplotlib.pyplot as plt     # the interactive backend matplotlib picks, not Agg
    fig = runs_figure(runs, reference_dir, window, plt.figure)
    if out:
        save_png(fig, out)
    plt.show()
    return out


def report(logdir, benchmark, out, version='dreamerv3', reference_dir=None, reps=2000, normaliser=None):
    """Write the figures and summary.md of `benchmark`'s runs under `logdir` into `out`.

    Without a logdir, only the paper's curves, aggregates and tables are drawn. `normaliser` replaces
    the protocol's Atari table (e.g. 'dreamerv2_record' for DreamerV2's record-normalised scores).
    """
    out = pathlib.Path(out)
    os.makedirs(out, exist_ok=True)
    proto = aggregate.protocol(benchmark, version)
    if normaliser:
        proto = dataclasses.replace(proto, normaliser=normaliser)
    runs = []
    if logdir is not None:
        runs = [r for r in runlib.find_runs(logdir, benchmark, version) if r['xs']]
        if not runs:
            raise ValueError(f'no {version} {benchmark} runs with finished episodes under {logdir}')
    table = reference.curves(benchmark, version, reference_dir)
    baselines = reference.atari_baselines(proto.normaliser, reference_dir) if proto.normaliser else None
    if runs or table:
        learning_curves(runs, table, proto, out / 'curves.png')
        aggregate_curves(runs, table, proto, out / 'aggregate.png', baselines)
    result = {'runs': len(runs)}
    if benchmark == 'crafter':
        crafter_ref = reference.crafter(reference_dir)
        crafter = aggregate.crafter_summary(runs) if runs else None
        crafter_bars(crafter, crafter_ref, out / 'crafter_success.png')
        lines = summary.crafter_summary_lines(crafter, crafter_ref)
        result['crafter'] = crafter
    else:
        lines, result['aggregates'] = summary.score_summary(runs, table, proto, benchmark, version, baselines,
                                                            reps)
    (out / 'summary.md').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return result
