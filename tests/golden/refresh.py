"""Train the seeded tiny run behind tests/test_golden.py and write its metrics (the golden file).

    python tests/golden/refresh.py                    # rewrite tests/golden/training.json
    python tests/golden/refresh.py --out=/tmp/x.json  # write elsewhere (what the test does)
    python tests/golden/refresh.py --version=dreamerv1  # tests/golden/training_dreamerv1.json

Refresh the golden file when a change is meant to alter training numerically (a loss reformulation,
a different initialiser, a new RNG stream), and say so in the commit message; the test prints which
metrics moved and by how much. The run: DreamerV3 with the debug overlay on gymnasium CartPole-v1,
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

GOLDEN = pathlib.Path(__file__).resolve().parent / 'training.json'
OVERRIDES = {
    'env.task': 'CartPole-v1', 'seed': 0, 'deterministic': True, 'run.steps': 600, 'run.prefill': 200,
    'run.train_ratio': 32.0, 'run.log_every': 100, 'run.save_every': 100_000, 'replay.persist': False,
}
# Losses and training statistics must agree to this relative tolerance (float32 sums over a few hundred
# updates on one CPU build reproduce exactly; the slack covers other CPUs' instruction sets).
TOLERANCE = {'rtol': 1e-3, 'atol': 1e-6}


def golden_path(version):
    return GOLDEN if version == 'dreamerv3' else GOLDEN.with_name(f'training_{version}.json')


def train_and_collect(version='dreamerv3'):
    """Run the golden training in a temporary logdir; {step: train metrics} and the episode scores."""
    os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')       # CPU only, also where a GPU exists
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
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
    args = parser.parse_args(argv)
    args.out = args.out or golden_path(args.version)
    result = train_and_collect(args.version)
    golden = {
        'about': 'Metrics of the seeded tiny training run of tests/golden/refresh.py; checked by '
                 f'tests/test_golden.py. Refresh: python tests/golden/refresh.py --version={args.version}',
        'config': {'version': args.version, 'benchmark': 'gym', 'overlays': ['debug'],
                   'overrides': OVERRIDES},
        'tolerance': TOLERANCE, **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, indent=1) + '\n', encoding='utf-8')
    print(f"{args.out}: {len(result['train'])} logged steps, {len(result['episodes'])} episodes")


if __name__ == '__main__':
    sys.exit(main())
