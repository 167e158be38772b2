"""Command-line entry shared by every `reproduce/` script: one set of absl flags, one `main`.

    python reproduce/dmc_proprio.py --task=cartpole_balance --configs=debug --steps=2000 \
        --logdir=/tmp/run --set run.train_ratio=64
"""

import sys

from absl import app, flags, logging

from dreamer_tf import config as configlib

FLAGS = flags.FLAGS
flags.DEFINE_string('task', None, 'Task of the benchmark, e.g. cartpole_balance.')
flags.DEFINE_integer('seed', 0, 'Random seed of the agent, replay and environments.')
flags.DEFINE_integer('steps', None, 'Env steps to train for (overrides the benchmark default).')
flags.DEFINE_string('logdir', None, 'Directory for config, metrics, checkpoints and replay.')
flags.DEFINE_string('configs', '', 'Comma-separated overlays applied after the benchmark, '
                    'e.g. size1m,debug.')
flags.DEFINE_multi_string('set', [], 'Override one key: --set key=value (repeatable).')
flags.DEFINE_string('version', 'dreamerv3', 'Agent version (a configs/<version>.yaml file).')
flags.mark_flags_as_required(['task', 'logdir'])


def resolve(benchmark):
    """The frozen config for the flags: benchmark overlay, then --configs, then --set."""
    overlays = [benchmark] + [c for c in FLAGS.configs.split(',') if c]
    overrides = [f'env.task={FLAGS.task}', f'seed={FLAGS.seed}'] + list(FLAGS.set)
    if FLAGS.steps is not None:
        overrides.append(f'run.steps={FLAGS.steps}')
    return configlib.load(FLAGS.version, overlays, overrides)


def main(benchmark):
    """Parse the flags and train. Bad input exits with its message (status 2), not a traceback."""
    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f'unexpected arguments: {argv[1:]}')
        logging.set_verbosity(logging.WARNING)  # keep TF's checkpoint chatter off the console
        from dreamer_tf.trainer import Trainer
        try:
            trainer = Trainer(resolve(benchmark), FLAGS.logdir)
        except ValueError as error:  # ConfigError, unknown task names, bad env settings
            print(f'error: {error}', file=sys.stderr)
            sys.exit(2)
        try:
            trainer.run()
        finally:
            trainer.close()
    app.run(run)
