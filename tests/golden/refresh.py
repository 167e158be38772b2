"""Write a version's golden file: three exact updates on a fixed batch, and a seeded tiny training run.

    python tests/golden/refresh.py                    # rewrite tests/golden/training.json
    python tests/golden/refresh.py --out=/tmp/x.json  # write elsewhere (what the test does)
    python tests/golden/refresh.py --version=dreamerv1  # tests/golden/training_dreamerv1.json
    python tests/golden/refresh.py --part=run --out=/tmp/x.json   # only the training run

Refresh the golden file when a change is meant to alter training numerically (a loss reformulation,
a different initialiser, a new RNG stream), and say so in the commit message; the tests print which
numbers moved and by how much.

'update' (tests/golden/update.py) holds losses, gradient norms and weights of three updates from fixed
weights on a fixed batch. They reproduce to float32 rounding on any x86 CPU and oneDNN kernel choice,
so tests/test_golden.py compares them tightly: this is what catches a change of the math.

'run' holds the metrics of a seeded training run. Over hundreds of updates a last-bit difference
between CPUs grows until metrics near zero differ by 100 %, so the test only checks it within bounds
that rounding cannot cross: the same logged steps and metric names, finite values, every metric
within RUN_TOLERANCE, and the episodes' count and mean score within EPISODE_RTOL. The run: DreamerV3
with the debug overlay on gymnasium CartPole-v1,
seed 0, TensorFlow op determinism on (`deterministic: true`), no XLA (the debug overlay's jit: false),
CPU only, 600 env steps: 200 of random prefill, then one update per 2 policy steps (200 updates,
train ratio 32 with batch 4 x 16), metrics averaged every 100 steps. `--version` runs the same
protocol for DreamerV1 or DreamerV2 (their debug overlays train in bursts: every 50 or 10 policy
steps) into `training_<version>.json`.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile

from update import TOLERANCE, golden_path, record

OVERRIDES = {
    'env.task': 'CartPole-v1', 'seed': 0, 'deterministic': True, 'run.steps': 600, 'run.prefill': 200,
    'run.train_ratio': 32.0, 'run.log_every': 100, 'run.save_every': 100_000, 'replay.persist': False,
}
# Observed across AVX2, AVX-512 and AMX kernels: metrics above 0.01 within 0.1 %; those near zero
# (returns, values, advantages of an untrained reward head) anywhere within +-0.005.
RUN_TOLERANCE = {'rtol': 0.02, 'atol': 0.01}
EPISODE_RTOL = 0.25


def train_and_collect(version='dreamerv3'):
    """Run the golden training in a temporary logdir; {step: train metrics} and the episode scores."""
    import numpy as np
    import tensorflow as tf

    import dreamer_tf
    from dreamer_tf.logger import read_metrics
    config = dreamer_tf.make_config(version, 'gym', ['debug'], **OVERRIDES)
    with tempfile.TemporaryDirectory() as logdir:
        dreamer_tf.train(config, logdir)
        rows = read_metrics(logdir)
    train = {str(row['step']): {k: v for k, v in row.items() if k.startswith('train/')}
             for row in rows if 'train/loss/total' in row}
    episodes = [[row['step'], row['episode/score']] for row in rows if 'episode/score' in row]
    versions = {'python': platform.python_version(), 'tensorflow': tf.__version__, 'numpy': np.__version__,
                'machine': platform.machine()}
    return {'train': train, 'episodes': episodes, 'versions': versions}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--version', default='dreamerv3', help='dreamerv3 (default), dreamerv1, dreamerv2')
    parser.add_argument('--out', type=pathlib.Path, default=None, help='default: the version\'s golden file')
    parser.add_argument('--part', default='all', choices=['all', 'update', 'run'])
    args = parser.parse_args(argv)
    args.out = args.out or golden_path(args.version)
    os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')       # CPU only, also where a GPU exists
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    # A partial refresh keeps the other part of an existing file.
    golden = json.loads(args.out.read_text()) if args.part != 'all' and args.out.exists() else {}
    golden.update({
        'about': 'Golden numbers of tests/golden/refresh.py, checked by tests/test_golden.py. Refresh: '
                 f'python tests/golden/refresh.py --version={args.version}',
        'config': {'version': args.version, 'benchmark': 'gym', 'overlays': ['debug'],
                   'overrides': OVERRIDES},
    })
    if args.part in ('all', 'update'):      # first: the run below turns op determinism on for good
        golden.update(update_tolerance=TOLERANCE, update=record(args.version))
    if args.part in ('all', 'run'):
        golden.update(run_tolerance=RUN_TOLERANCE, episode_rtol=EPISODE_RTOL,
                      run=train_and_collect(args.version))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, indent=1) + '\n', encoding='utf-8')
    print(f'{args.out}: {", ".join(k for k in ("update", "run") if k in golden)}')


if __name__ == '__main__':
    sys.exit(main())
