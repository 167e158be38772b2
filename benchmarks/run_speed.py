"""Seconds per update and score of a training run so far, from its logdir's metrics.jsonl.

    python benchmarks/run_speed.py --logdir=~/dreamer_runs/paper/cartpole_balance

The interval starts at the first log point with updates done, so compile time and prefill are left out;
pauses and other load on the machine while the run trained are in it.
"""

import os
import sys

from absl import app, flags

from dreamer_tf.results import curves

FLAGS = flags.FLAGS
flags.DEFINE_string('logdir', None, "A run's logdir.", required=True)


def main(argv):
    del argv
    logdir = os.path.expanduser(FLAGS.logdir)
    if not os.path.isfile(os.path.join(logdir, 'metrics.jsonl')):
        print(f'--logdir: {logdir} has no metrics.jsonl (not a training logdir, or nothing logged yet)',
              file=sys.stderr)
        sys.exit(2)
    speed = curves.update_speed(logdir)
    per_update = speed['seconds_per_update']
    score = speed['score']
    print(f"{logdir}: {speed['env_steps']} env steps, {int(speed['updates'] or 0)} updates, "
          f"{'n/a' if per_update is None else f'{per_update:.3f}'} s/update, "
          f"{'no episode yet' if score is None else f'score {score:.1f} (10-episode mean)'}")


if __name__ == '__main__':
    app.run(main)
