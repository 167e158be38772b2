"""The small committed record of one run's learning curve, `results/curves/<version>-<benchmark>-<task>.csv`
(`...-<task>-small.csv` for a run of the CPU `small` overlay).

One row per finished training episode, in the order the run reached them:

- `env_step`: env steps when the episode ended (Atari: frames), the `step` of metrics.jsonl;
- `wall_minutes`: training wall-clock so far, summed over every restart of the logdir;
- `score`: mean return of the last `window` (10) episodes, of fewer at the start of the run;
- `updates`: gradient updates at the newest `run/updates` row at or before `env_step` (the trainer logs
  them every `run.log_every` steps, so they lag by less than that); empty before the first such row.

A run restarted from an older checkpoint steps back and logs those steps again; the rows it rolled back
are dropped. A record keeps at most `MAX_ROWS` rows (evenly spaced, the last one always), so it stays a
small file even for runs with many short episodes. `results/record_run.py` writes and plots it.
"""

from __future__ import annotations

import bisect
import csv
import math
import os
import pathlib

import numpy as np

from dreamer_tf.results import runs as runlib

COLUMNS = ('env_step', 'wall_minutes', 'score', 'updates')
SETTINGS = ('small',)    # non-paper overlays whose records carry the overlay's name
WINDOW = 10
MAX_ROWS = 2000
# The repository's results/curves/ (records are data of the repository, not of the package).
DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2] / 'results' / 'curves'
_KEYS = ('episode/score', 'run/updates', 'run/wall_minutes')


def record_name(version, benchmark, task, setting=None):
    """<version>-<benchmark>-<task>[-<setting>].csv; `setting` names a non-paper overlay ('small')."""
    return '-'.join([version, benchmark, task] + ([setting] if setting else [])) + '.csv'


def parse_name(path):
    """(version, benchmark, task) from a record's file name (see parse_full_name)."""
    return parse_full_name(path)[:3]


def parse_full_name(path):
    """(version, benchmark, task, setting or None) from a record's file name.

    Versions and benchmarks hold no '-', tasks may (gym's CartPole-v1); a last part in SETTINGS is
    the setting.
    """
    parts = pathlib.Path(path).stem.split('-')
    setting = parts.pop() if len(parts) >= 4 and parts[-1] in SETTINGS else None
    if len(parts) < 3 or not all(parts):
        raise ValueError(f'{path}: a record is named <version>-<benchmark>-<task>[-<setting>].csv')
    return parts[0], parts[1], '-'.join(parts[2:]), setting


def timeline(rows):
    """`rows` without those a restart rolled back: a step below the last drops every row at or after it."""
    kept = []
    for row in rows:
        if kept and row['step'] < kept[-1]['step']:
            while kept and kept[-1]['step'] >= row['step']:
                kept.pop()
        kept.append(row)
    return kept


def _latest(steps, values, step):
    """The newest of `values` logged at or before `step`, or None before the first."""
    index = bisect.bisect_right(steps, step)
    return values[index - 1] if index else None


def _thin(rows, max_rows):
    if len(rows) <= max_rows:
        return rows
    keep = np.unique(np.linspace(0, len(rows) - 1, max_rows).round().astype(int))   # holds the last
    return [rows[i] for i in keep]


def record(run_dir, window=WINDOW, max_rows=MAX_ROWS):
    """The record rows of the run in `run_dir` (its metrics.jsonl), as dicts of COLUMNS."""
    rows = timeline(runlib.metric_rows(run_dir, _KEYS))
    logged = [r for r in rows if r.get('run/updates') is not None]
    steps = [r['step'] for r in logged]
    scores, out = [], []
    for row in rows:
        if row.get('episode/score') is None:
            continue
        scores.append(float(row['episode/score']))
        run_row = _latest(steps, logged, row['step']) or {}
        wall = row.get('episode/wall_minutes', run_row.get('run/wall_minutes'))   # older runs: run row
        out.append({'env_step': int(row['step']), 'wall_minutes': wall,
                    'score': float(np.mean(scores[-window:])), 'updates': run_row.get('run/updates')})
    return _thin(out, max_rows)


def update_speed(run_dir, window=WINDOW):
    """Seconds per update of a run, from its logged `run/updates` and `run/wall_minutes`.

    The interval starts at the first log point with updates done, so compiling and the prefill are
    left out. Returns a dict with env_steps, updates, wall_minutes, seconds_per_update (None before two
    such log points) and score (the last `window`-episode mean, None before the first episode).
    """
    rows = timeline(runlib.metric_rows(run_dir, _KEYS))
    logged = [r for r in rows if r.get('run/updates') and r.get('run/wall_minutes') is not None]
    scores = [float(r['episode/score']) for r in rows if r.get('episode/score') is not None]
    speed = None
    if len(logged) >= 2 and logged[-1]['run/updates'] > logged[0]['run/updates']:
        minutes = logged[-1]['run/wall_minutes'] - logged[0]['run/wall_minutes']
        speed = 60 * minutes / (logged[-1]['run/updates'] - logged[0]['run/updates'])
    last = logged[-1] if logged else {}
    return {'env_steps': int(rows[-1]['step']) if rows else 0, 'updates': last.get('run/updates'),
            'wall_minutes': last.get('run/wall_minutes'), 'seconds_per_update': speed,
            'score': float(np.mean(scores[-window:])) if scores else None}


def _cell(name, value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ''
    if name in ('env_step', 'updates'):
        return str(int(value))
    return f'{value:.2f}' if name == 'wall_minutes' else f'{value:.3f}'


def write_record(rows, path):
    """Write `rows` as CSV at `path`, through a temporary file so a reader never sees half of it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([[_cell(name, row[name]) for name in COLUMNS] for row in rows])
    os.replace(tmp, path)
    return path


def read_record(path):
    """{column: float array} of a record; empty cells read as NaN."""
    with open(path, encoding='utf-8', newline='') as f:
        rows = list(csv.DictReader(f))
    if rows and set(COLUMNS) - set(rows[0]):
        raise ValueError(f'{path}: a record has the columns {", ".join(COLUMNS)}')
    return {name: np.array([float(r[name]) if r[name] else np.nan for r in rows], np.float64)
            for name in COLUMNS}


def record_run(logdir, out_dir=None, window=WINDOW, setting=None):
    """Write the record of the one run in `logdir` into `out_dir`; returns (path, run dict of runs.py).

    `setting` ('small') marks a run of a non-paper overlay in the file name.
    """
    found = runlib.find_runs(logdir)
    if len(found) != 1:
        raise ValueError(f'{logdir}: expected the logdir of one run, found {len(found)} runs')
    run = found[0]
    if not run['benchmark']:
        raise ValueError(f"{logdir}: cannot tell the run's benchmark (no config.yaml, or an unknown suite)")
    rows = record(run['path'], window)
    if not rows:
        raise ValueError(f'{logdir}: no finished training episode yet')
    name = record_name(run['version'], run['benchmark'], run['task'], setting)
    return write_record(rows, pathlib.Path(out_dir or DEFAULT_DIR) / name), run
