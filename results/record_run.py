"""Write one run's learning-curve record (CSV) and plot it against the released curve (PNG).

    python results/record_run.py --logdir=~/dreamer_runs/paper/cartpole_balance
    python results/record_run.py --csv=results/curves/dreamerv3-dmc_proprio-cartpole_balance.csv \
        --steps=100000
    python results/record_run.py --logdir=runs/quickstart --setting=small   # -> results/curves/small.png

With `--logdir` (one run's logdir) it writes `<out>/<version>-<benchmark>-<task>.csv` from the run's
metrics.jsonl (dreamer_tf.results.curves) and the PNG beside it; the x-axis ends at the run's budget
(`run.steps` of its config.yaml). With `--csv` it re-plots a committed record without the logdir; give
`--steps` there, as the CSV does not hold the budget. See results/README.md.
"""

import argparse
import pathlib
import sys

from dreamer_tf.results import curves, plots


def _paths(args):
    """(csv path, x-axis end) for either mode; writes the CSV in the --logdir mode."""
    if args.csv:
        return pathlib.Path(args.csv).expanduser(), args.steps
    out = pathlib.Path(args.out).expanduser() if args.out else None
    path, run = curves.record_run(args.logdir, out, args.window, args.setting)
    return path, args.steps or run['end']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--logdir', default=None, help="one run's logdir (config.yaml, metrics.jsonl)")
    source.add_argument('--csv', default=None, help='re-plot a record written before, without its logdir')
    parser.add_argument('--out', default=None, help='folder for the CSV and PNG (default: results/curves)')
    parser.add_argument('--steps', type=float, default=None,
                        help="x-axis end in env steps (default: the run's budget; with --csv the last "
                             'step rounded up to the curve grid)')
    parser.add_argument('--window', type=int, default=curves.WINDOW, help='episodes in each score mean')
    parser.add_argument('--reference', default=None, help='reference tables (default: results/reference)')
    parser.add_argument('--setting', default=None,
                        help="a non-paper overlay the run used ('small'): the record is named "
                             '<version>-<benchmark>-<task>-<setting>.csv and all records of that setting '
                             'are plotted together in <out>/<setting>.png (no released curve exists)')
    args = parser.parse_args(argv)
    try:
        path, end = _paths(args)
        if args.setting:
            png = plots.settings_figure(sorted(path.parent.glob(f'*-{args.setting}.csv')),
                                        path.parent / f'{args.setting}.png', args.window)
        else:
            png = plots.record_figure(path, path.with_suffix('.png'), end, args.reference, args.window)
    except (ValueError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f'{path}\n{png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
