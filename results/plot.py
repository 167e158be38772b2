"""Learning curves, aggregate curves and a Markdown summary of our runs against the papers'.

    python results/plot.py --logdir=runs/sweep --benchmark=atari100k --out=results/atari100k
    python results/plot.py --logdir=runs/walker_walk --benchmark=dmc_proprio --out=/tmp/walker
    python results/plot.py --benchmark=dmc_vision --version=dreamerv1 --out=/tmp/v1   # the paper only

`--logdir` is a sweep (<logdir>/<version>/<benchmark>/<task>/<seed>/metrics.jsonl) or a single run's
logdir. Writes curves.png, aggregate.png (and crafter_success.png for Crafter) and summary.md into
`--out`, and profiles.png: rliable's performance profiles of ours and the paper and the probability
that a run of ours beats one of the paper's (aggregates and intervals in summary.md). See
results/README.md for what each paper figure and table needs.
"""

import argparse
import sys

from dreamer_tf.results import aggregate, compare, plots


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--logdir', default=None, help='a sweep or a single run; omit for the paper only')
    parser.add_argument('--benchmark', required=True, choices=sorted(aggregate.PROTOCOLS))
    parser.add_argument('--version', default='dreamerv3', help='dreamerv3 (default), dreamerv2, dreamerv1')
    parser.add_argument('--out', required=True, help='folder for the PNGs and summary.md')
    parser.add_argument('--reference', default=None, help='reference tables (default: results/reference)')
    parser.add_argument('--reps', type=int, default=2000, help='bootstrap resamples for the intervals')
    parser.add_argument('--normaliser', default=None,
                        help='Atari table in results/reference/atari_baselines.json: dreamerv3_gamer '
                             '(default), dreamerv2_gamer, dreamerv2_record')
    args = parser.parse_args(argv)
    try:
        options = (args.version, args.reference, args.reps, args.normaliser)
        result = plots.report(args.logdir, args.benchmark, args.out, *options)
        section = compare.report(args.logdir, args.benchmark, args.out, *options)
    except (ValueError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if section:
        with open(f'{args.out}/summary.md', 'a', encoding='utf-8') as f:
            f.write('\n' + '\n'.join(section) + '\n')
    print(f"{args.out}/summary.md ({result['runs']} runs)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
