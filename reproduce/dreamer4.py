"""Dreamer 4 offline on DMC cartpole vision: data, tokenizer, dynamics, then BC and RL in imagination.

    python reproduce/dreamer4.py --logdir=~/runs/dreamer4                   # the CPU default size
    python reproduce/dreamer4.py --configs=debug --logdir=/tmp/d4            # about a minute end to end

Phases run in order in one logdir (dreamer_tf/dreamer4/pipeline.py): data collection with scripted and
random policies (actions kept on ~10% of episodes), tokenizer, dynamics, behaviour cloning, RL in
imagination. Each is resumable: the same command continues a killed run and skips finished phases.
Results print at the end of each phase and go to <logdir>/metrics.jsonl as eval/<phase>/<name>; the
open-loop strip (truth / 4-step / 64-step) is <logdir>/dynamics_openloop.png.

Flags are the other reproduce scripts' (dreamer_tf/cli.py): --task picks a DMC cartpole task (the
scripted controller balances a cartpole), --steps sets the offline env steps (whole episodes),
--configs/--set/--seed/--override_config as there; --version can only be dreamer4.
"""

import math
import os
import sys

from absl import app, flags, logging

from dreamer_tf import cli, quiet  # noqa: F401  (cli defines the flags the reproduce scripts share)
from dreamer_tf import config as configlib

FLAGS = flags.FLAGS
VERSION = 'dreamer4'
TASKS = ('cartpole_balance', 'cartpole_balance_sparse')


def resolve():
    """The frozen config for the flags; ConfigError names a bad key or value and what is allowed."""
    if FLAGS.version != VERSION:
        raise configlib.ConfigError(f"--version={FLAGS.version}: this script runs only '{VERSION}'")
    if FLAGS.seeds:
        raise configlib.ConfigError('--seeds: sweeps are not supported here; run one --seed per logdir')
    if FLAGS.task not in TASKS:
        raise configlib.ConfigError(f"--task={FLAGS.task}: the scripted data needs one of {', '.join(TASKS)}")
    overlays = [name for name in FLAGS.configs.split(',') if name]
    overrides = [f'data.task={FLAGS.task}', f'seed={FLAGS.seed}'] + list(FLAGS.set)
    config = configlib.load(VERSION, overlays, overrides)
    if FLAGS.steps is not None:
        if FLAGS.steps < 1:
            raise configlib.ConfigError(f'--steps={FLAGS.steps}: must be a positive number of env steps')
        episodes = math.ceil(FLAGS.steps / config.data.length)
        config = configlib.load(VERSION, overlays, overrides + [f'data.episodes={episodes}'])
    return config


def check_logdir(config, logdir):
    """Save config.yaml, or refuse a logdir whose saved config differs (unless --override_config)."""
    path = os.path.join(logdir, 'config.yaml')
    if os.path.exists(path) and configlib.Config.from_file(path).to_dict() != config.to_dict():
        if not FLAGS.override_config:
            raise configlib.ConfigError(f'{logdir} holds a run with another config ({path}); use a new '
                                        '--logdir, or --override_config to continue it with this one')
    os.makedirs(logdir, exist_ok=True)
    config.save(path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    quiet.start(FLAGS.verbose)   # before anything imports TensorFlow
    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)
    logdir = os.path.abspath(os.path.expanduser(FLAGS.logdir))
    try:
        config = resolve()
        check_logdir(config, logdir)
    except (ValueError, OSError) as error:   # ConfigError is a ValueError
        _exit(error, 2)
    from dreamer_tf.checkpoints import CheckpointError, NonFiniteError
    from dreamer_tf.dreamer4.pipeline import Pipeline
    try:
        Pipeline(config, logdir, log=lambda line: print(line, flush=True)).run()
    except (CheckpointError, NonFiniteError, OSError) as error:
        _exit(error, 1)


def _exit(error, status):
    print(f'error: {error}', file=sys.stderr)
    sys.exit(status)


if __name__ == '__main__':
    FLAGS.set_default('task', TASKS[0])
    FLAGS.set_default('version', VERSION)
    app.run(main)
