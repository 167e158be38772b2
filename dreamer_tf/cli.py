"""Command-line entry shared by every `reproduce/` script: one set of absl flags, one `main`.

    python reproduce/dmc_proprio.py --task=cartpole_balance --configs=debug --steps=2000 \
        --logdir=/tmp/run --set run.train_ratio=64

A sweep (`--task=all`, a comma-separated task list, or `--seeds`) trains every (task, seed) one run
after another, each in `<logdir>/<version>/<benchmark>/<task>/<seed>`. `all` is the paper's task list
and the default seeds are the paper's (dreamer_tf.envs.benchmarks). Running the same sweep again skips
finished runs and resumes an interrupted one.
"""

import gc
import os
import pathlib
import sys

from absl import app, flags, logging

from dreamer_tf import config as configlib
from dreamer_tf import quiet

FLAGS = flags.FLAGS
flags.DEFINE_string('task', None, "Task of the benchmark, e.g. cartpole_balance; 'all' or a "
                    'comma-separated list runs a sweep.')
flags.DEFINE_integer('seed', 0, 'Random seed of the agent, replay and environments.')
flags.DEFINE_integer('steps', None, 'Env steps to train for (overrides the benchmark default).')
flags.DEFINE_string('logdir', None, 'Directory for config, metrics, checkpoints and replay.')
flags.DEFINE_string('configs', '', 'Comma-separated overlays applied after the benchmark, '
                    'e.g. size1m,debug.')
flags.DEFINE_multi_string('set', [], 'Override one key: --set key=value (repeatable).')
flags.DEFINE_string('version', 'dreamerv3', 'Agent version (a dreamer_tf/configs/<version>.yaml file).')
flags.DEFINE_list('seeds', [], "Seeds of a sweep, e.g. 0,1,2 (default: the paper's seeds).")
flags.DEFINE_bool('override_config', False, 'Continue a logdir whose saved config differs from this one '
                  '(the old config.yaml is kept as config.<time>.yaml); without it such a logdir is refused.')
flags.DEFINE_bool('verbose', False, "Show TensorFlow's C++ and Python logs (hidden by default).")
flags.mark_flags_as_required(['task', 'logdir'])

# Written into a sweep run's logdir when it finishes; holds run.steps so a longer budget reruns it.
DONE_FILE = 'done'


def resolve(benchmark, task=None, seed=None):
    """The frozen config for the flags: benchmark overlay, then --configs, then --set."""
    task = FLAGS.task if task is None else task
    seed = FLAGS.seed if seed is None else seed
    check_benchmark(FLAGS.version, benchmark)
    overlays = [benchmark] + [c for c in FLAGS.configs.split(',') if c]
    overrides = [f'env.task={task}', f'seed={seed}'] + list(FLAGS.set)
    if FLAGS.steps is not None:
        overrides.append(f'run.steps={FLAGS.steps}')
    return configlib.load(FLAGS.version, overlays, overrides)


def check_benchmark(version, benchmark, configs_dir=None):
    """ConfigError unless `version` exists and defines the `benchmark` overlay."""
    if benchmark not in configlib.available_overlays(version, configs_dir):  # checks the version too
        having = [v for v in configlib.available_versions(configs_dir)
                  if benchmark in configlib.available_overlays(v, configs_dir)]
        raise configlib.ConfigError(
            f"version '{version}' has no '{benchmark}' benchmark; versions that have it: "
            f"{', '.join(having) or 'none'}")


def plan(benchmark, task, seeds, logdir, version, seed=0):
    """[(task, seed, logdir)] of the runs that the flags ask for, in the order they run.

    One named task without --seeds is a single run in `logdir` itself. Otherwise it is a sweep, seed by
    seed over the whole task list, so that a first pass over every task finishes before the next seed.
    """
    tasks = [name.strip() for name in task.split(',') if name.strip()]
    if tasks == ['all'] or len(tasks) > 1 or seeds:
        from dreamer_tf.envs.benchmarks import benchmark_runs
        if tasks == ['all'] or not seeds:
            paper_tasks, paper_seeds = benchmark_runs(version, benchmark)
            tasks = list(paper_tasks) if tasks == ['all'] else tasks
            seeds = seeds or paper_seeds
        return [(name, int(seed), os.path.join(logdir, version, benchmark, name, str(seed)))
                for seed in seeds for name in tasks]
    if not tasks:
        raise ValueError('--task is empty')
    return [(tasks[0], seed, logdir)]


def start_run(benchmark, task, seed, logdir, sweep):
    """The Trainer for one run, or None for a sweep run whose `done` file already covers run.steps."""
    config = resolve(benchmark, task, seed)   # before importing TensorFlow, so bad input fails fast
    done = pathlib.Path(logdir) / DONE_FILE
    if sweep and done.exists() and int(done.read_text() or 0) >= config.run.steps:
        print(f'{logdir}: finished earlier, skipped.')
        return None
    if sweep:
        print(f'--- {task} seed {seed} -> {logdir}', flush=True)
    from dreamer_tf.trainer import Trainer   # TensorFlow loads only when there is something to train
    return Trainer(config, logdir, override_config=FLAGS.override_config)


def main(benchmark):
    """Parse the flags and train. Bad input exits with status 2, a run stopped by a fault (unreadable
    checkpoints, NaN training, disk full) with status 1; either prints one line, not a traceback."""
    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f'unexpected arguments: {argv[1:]}')
        quiet.start(FLAGS.verbose)   # before anything imports TensorFlow
        if not FLAGS.verbose:
            logging.set_verbosity(logging.WARNING)  # keep TF's checkpoint chatter off the console
        _unshadow_packages()
        try:
            runs = plan(benchmark, FLAGS.task, FLAGS.seeds, FLAGS.logdir, FLAGS.version, FLAGS.seed)
        except ValueError as error:
            _exit(error)
        sweep = len(runs) > 1 or runs[0][2] != FLAGS.logdir
        for task, seed, logdir in runs:
            try:
                trainer = start_run(benchmark, task, seed, logdir, sweep)
            except (ValueError, OSError) as error:  # ConfigError, unknown task names, unwritable logdir
                _exit(error)
            if trainer is None:
                continue
            try:
                trainer.run()
            except _run_errors() as error:
                _exit(error, status=1)
            finally:
                trainer.close()
            if trainer.stopped_by:
                sys.exit(128 + trainer.stopped_by)    # the shell's status for a signalled process
            if sweep:
                (pathlib.Path(logdir) / DONE_FILE).write_text(str(trainer.config.run.steps))
                _release_models()
    app.run(run)


def _unshadow_packages():
    """Take the script's own folder off the import path (what `python -P` does).

    `python reproduce/crafter.py` puts reproduce/ first on sys.path, where the script itself would be
    found by `import crafter` instead of the Crafter package. Env processes inherit the fixed path.
    """
    script_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == script_dir:
        sys.path.pop(0)


def _exit(error, status=2):
    print(f'error: {error}', file=sys.stderr)
    sys.exit(status)


def _run_errors():
    """Faults a run reports in one line: unreadable checkpoints, NaN training, disk full or I/O errors."""
    from dreamer_tf.checkpoints import CheckpointError, NonFiniteError
    return (CheckpointError, NonFiniteError, OSError)


def _release_models():
    """Free the finished run's graphs before the next run of a sweep builds its own."""
    import keras
    keras.backend.clear_session()
    gc.collect()
