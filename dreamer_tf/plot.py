"""Overlay the learning curves of run logdirs in one figure.

    python -m dreamer_tf.plot runs/v3_cartpole runs/v1_cartpole runs/gym_cartpole --out=cartpole.png
    python -m dreamer_tf.plot runs/v3_cartpole --show

One panel per (benchmark, task), one colour per run (labelled by its logdir's name and version): each
finished training episode's score as a dot, the mean of the last 10 as a line, and the released curve of
the run's version where the paper released one (none for gym). Every training run also keeps such a
figure of itself in `<logdir>/curves.png`. Bad input exits with status 2 and one line naming the path.
"""

import argparse
import sys

from dreamer_tf.results import curves, plots


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m dreamer_tf.plot', description=__doc__.split('\n')[0])
    parser.add_argument('logdirs', nargs='+', metavar='LOGDIR',
                        help="a run's logdir (config.yaml, metrics.jsonl)")
    parser.add_argument('--out', default=None,
                        help='the PNG to write (default: curves.png here, unless --show)')
    parser.add_argument('--show', action='store_true', help='open the figure in a window')
    parser.add_argument('--window', type=int, default=curves.WINDOW, help='episodes in each running mean')
    parser.add_argument('--reference', default=None, help='reference tables (default: results/reference)')
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f'--window={args.window}: a running mean needs at least 1 episode')
    return args


def main(argv=None):
    args = parse_args(argv)
    out = args.out or (None if args.show else plots.CURVES_PNG)
    try:
        plots.logdirs_figure(args.logdirs, out, args.show, args.reference, args.window)
    except (ValueError, OSError) as error:     # bad paths and unreadable files: a message, no traceback
        print(f'error: {error}', file=sys.stderr)
        return 2
    if out:
        print(out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
