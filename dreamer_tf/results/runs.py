"""Our runs as `aggregate` run dicts, read from metrics.jsonl.

A sweep writes `<logdir>/<version>/<benchmark>/<task>/<seed>/metrics.jsonl` (dreamer_tf.cli); a single
run writes `<logdir>/metrics.jsonl`. Both are found by `find_runs`. The task, seed, benchmark and step
budget come from the path when it has the sweep layout and from the run's config.yaml otherwise.
Every row with `episode/score` is one finished training episode at env step `step` (Atari: frames);
Crafter rows also hold `episode/achievement_<name>` flags.
"""

from __future__ import annotations

import json
import pathlib

from dreamer_tf import config as configlib

METRICS_FILE = 'metrics.jsonl'     # dreamer_tf.logger's file; not imported from there (it needs TensorFlow)
ACHIEVEMENT_PREFIX = 'episode/achievement_'


def metric_rows(run_dir, keys):
    """The metrics.jsonl rows holding any of `keys` (not null), in file order; a cut last line is skipped."""
    quoted = [f'"{key}"' for key in keys]
    rows = []
    with open(pathlib.Path(run_dir) / METRICS_FILE, encoding='utf-8') as f:
        for line in f:
            if not any(q in line for q in quoted):   # cheap on long runs: parse only lines that can match
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:   # a run killed mid-write; logger.read_metrics allows it too
                continue
            if any(row.get(key) is not None for key in keys):
                rows.append(row)
    return rows


def episode_rows(run_dir):
    """The metrics.jsonl rows that record a finished training episode (a cut last line is skipped)."""
    return metric_rows(run_dir, ['episode/score'])


def benchmark_of(config):
    """The benchmark overlay of a saved config: the first overlay applied, else guessed from env."""
    from dreamer_tf.results.aggregate import PROTOCOLS
    if config.overlays and config.overlays[0] in PROTOCOLS:
        return config.overlays[0]
    env = config.env
    if env.suite == 'dmc':
        return 'dmc_vision' if env.obs == 'vision' else 'dmc_proprio'
    if env.suite == 'atari':
        return 'atari' if env.atari.sticky > 0 else 'atari100k'
    return {'crafter': 'crafter', 'gym': 'gym'}.get(env.suite)   # gym: quick checks, no paper protocol


def read_run(run_dir, task=None, seed=None, benchmark=None, version=None):
    """One run dict: task, seed, benchmark, version, end (its step budget), xs, ys, achievements."""
    run_dir = pathlib.Path(run_dir)
    config_path = run_dir / 'config.yaml'
    config = configlib.Config.from_file(config_path) if config_path.exists() else None
    xs, ys, flags = [], [], {}
    for row in episode_rows(run_dir):
        xs.append(float(row['step']))
        ys.append(float(row['episode/score']))
        for key, value in row.items():
            if key.startswith(ACHIEVEMENT_PREFIX):
                flags.setdefault(key[len(ACHIEVEMENT_PREFIX):], []).append(float(value or 0.0))
    flags = {name: values for name, values in flags.items() if len(values) == len(xs)}
    return {
        'task': task or (config.env.task if config else run_dir.name),
        'seed': seed if seed is not None else (config.seed if config else 0),
        'benchmark': benchmark or (benchmark_of(config) if config else None),
        'version': version or (config.version if config and config.version else 'dreamerv3'),
        'end': float(config.run.steps) if config else (max(xs) if xs else None),
        'xs': xs, 'ys': ys, 'achievements': flags, 'path': str(run_dir),
    }


def find_runs(logdir, benchmark=None, version=None):
    """Every run under `logdir` (or `logdir` itself), optionally only those of `benchmark`/`version`."""
    logdir = pathlib.Path(logdir).expanduser()
    if (logdir / METRICS_FILE).exists():
        paths = [logdir / METRICS_FILE]
    else:
        paths = sorted(logdir.rglob(METRICS_FILE))
    runs = []
    for path in paths:
        parts = path.parent.relative_to(logdir).parts
        if len(parts) >= 4:            # <version>/<benchmark>/<task>/<seed>
            layout = dict(version=parts[-4], benchmark=parts[-3], task=parts[-2])
            seed = int(parts[-1]) if parts[-1].isdigit() else None
            run = read_run(path.parent, seed=seed, **layout)
        else:
            run = read_run(path.parent)
        if benchmark and run['benchmark'] != benchmark:
            continue
        if version and run['version'] != version:
            continue
        runs.append(run)
    return runs
