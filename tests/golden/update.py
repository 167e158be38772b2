"""The exactly reproducible part of the golden check: three updates from fixed weights on a fixed batch.

A seeded multi-update training run is chaotic: a last-bit difference in one matmul (oneDNN picks
other kernels on AVX2, AVX-512 and AMX CPUs) grows through hundreds of updates until small metrics
differ by 100 %. Three updates from the same initial weights on the same batch keep such differences
near float32 rounding, so their losses, gradient norms and weights can be compared tightly, and any
change of the math (a loss scale, a stop-gradient, a free-nats value) moves them far beyond that.

    python tests/golden/update.py --version=dreamerv3          # print the record
    python tests/golden/update.py --check                      # compare every version to its file

`record(version)` is what tests/golden/refresh.py stores under 'update' in each golden file.
"""

import argparse
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
VERSIONS = ('dreamerv3', 'dreamerv2', 'dreamerv1')
# Observed across oneDNN ISA limits (AVX2, AVX512_CORE, default) and with oneDNN off: relative
# differences below 1e-5. A planted math change moves some entry by 1e-2 or more.
TOLERANCE = {'rtol': 1e-4, 'atol': 1e-6}
# Two observation/action setups: vector obs with discrete actions (the gym overlay), and 64x64 images
# with continuous actions (the DMC vision overlay), so both encoders, decoders and actor kinds count.
SETUPS = {'vector-discrete': ('gym', {'vector': (4,)}, (True, 2)),
          'image-continuous': ('dmc_vision', {'image': (64, 64, 3)}, (False, 2))}
BATCH, SEED = 3, 0
UPDATES = 3     # DreamerV3's warm-up makes the first update zero, so the third sees moved weights


def golden_path(version):
    return HERE / ('training.json' if version == 'dreamerv3' else f'training_{version}.json')


def make_batch(obs_shapes, discrete, act_dim, length, seed):
    """A fixed replay batch [B, length, ...] with an episode boundary inside, plus per-sequence keys."""
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = (BATCH, length)
    data = {}
    for key, obs in obs_shapes.items():
        if key == 'image':
            data[key] = rng.integers(0, 256, shape + obs).astype(np.uint8)
        else:
            data[key] = rng.standard_normal(shape + obs).astype(np.float32)
    if discrete:
        data['action'] = np.eye(act_dim, dtype=np.float32)[rng.integers(0, act_dim, shape)]
    else:
        data['action'] = rng.uniform(-1, 1, shape + (act_dim,)).astype(np.float32)
    data['reward'] = rng.standard_normal(shape).astype(np.float32)
    data['is_first'] = np.zeros(shape, bool)
    data['is_first'][:, 0] = True
    data['is_first'][0, length // 2] = True                  # a new episode starts mid-sequence
    data['is_terminal'] = np.zeros(shape, bool)
    data['is_terminal'][0, length // 2 - 1] = True
    data['is_last'] = data['is_terminal'].copy()
    data['key'] = rng.integers(0, 2 ** 32, BATCH, dtype=np.int64)
    return data


def module_parts(agent):
    """Top-level networks by name, for per-module gradient and weight norms."""
    wm = agent.wm
    parts = {'encoder': wm.encoder, 'rssm': wm.rssm, 'decoder': wm.decoder, 'reward': wm.reward,
             'cont': wm.cont, 'actor': agent.ac.actor, 'critic': agent.ac.critic}
    return {name: layer for name, layer in parts.items() if layer is not None}


def norm(arrays):
    import numpy as np
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def record_setup(version, setup, overrides=None):
    """Losses, metrics, per-module gradient norms and weights of three eager updates on a fixed batch."""
    import keras
    import numpy as np
    import tensorflow as tf

    import dreamer_tf
    from dreamer_tf.agent import Agent
    from dreamer_tf.envs import ActionSpec
    from gymnasium import spaces

    benchmark, obs_shapes, (discrete, act_dim) = SETUPS[setup]
    config = dreamer_tf.make_config(version, benchmark, ['debug'], seed=SEED, **(overrides or {}))
    keras.utils.set_random_seed(SEED)
    obs_space = {k: spaces.Box(0, 255, s, np.uint8) if k == 'image' else
                 spaces.Box(-np.inf, np.inf, s, np.float32) for k, s in obs_shapes.items()}
    agent = Agent(config, obs_space, ActionSpec(discrete=discrete, size=act_dim))
    data = make_batch(obs_shapes, discrete, act_dim, config.batch_length + config.replay_context, SEED)
    data = {k: tf.constant(v) for k, v in data.items()}
    parts = module_parts(agent)
    ids = {name: {id(v) for v in layer.trainable_variables} for name, layer in parts.items()}
    before = {name: [v.numpy() for v in layer.trainable_variables] for name, layer in parts.items()}
    out = {}
    for update in range(1, UPDATES + 1):
        grads, metrics = agent.compute_gradients(data)
        for name in parts:
            chosen = [g for g, v in zip(grads, agent.train_vars) if id(v) in ids[name]]
            out[f'{update}/grad_norm/{name}'] = norm([g.numpy() for g in chosen])
        metrics.update(agent.apply_gradients(grads))
        out.update({f'{update}/{k}': float(v) for k, v in metrics.items() if np.ndim(v) == 0})
    for name, layer in parts.items():
        after = [v.numpy() for v in layer.trainable_variables]
        out[f'weight_norm/{name}'] = norm(after)
        out[f'weight_change/{name}'] = norm([a - b for a, b in zip(after, before[name])])
        # A few single weights: the first entries of the module's first and last kernels.
        out[f'weight/{name}/first'] = [float(x) for x in after[0].reshape(-1)[:3]]
        out[f'weight/{name}/last'] = [float(x) for x in after[-1].reshape(-1)[:3]]
    return out


def record(version, overrides=None):
    """{setup: record} for every setup."""
    return {setup: record_setup(version, setup, overrides) for setup in SETUPS}


def differences(golden, fresh, rtol, atol):
    """One line per entry that moved beyond rtol/atol, appeared or vanished."""
    import numpy as np
    lines = []
    for setup in sorted(set(golden) | set(fresh)):
        old, new = golden.get(setup, {}), fresh.get(setup, {})
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                lines.append(f'{setup} {key}: only in the {"new record" if key in new else "golden file"}')
                continue
            a, b = np.asarray(old[key], float), np.asarray(new[key], float)
            if a.shape != b.shape or not np.allclose(b, a, rtol=rtol, atol=atol, equal_nan=True):
                lines.append(f'{setup} {key}: golden {old[key]}, now {new[key]}')
    return lines


def check(versions):
    """Lines describing every difference between a fresh record and the golden files."""
    lines = []
    for version in versions:
        golden = json.loads(golden_path(version).read_text())['update']
        lines += [f'{version} {line}' for line in differences(golden, record(version), **TOLERANCE)]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--version', default='dreamerv3')
    parser.add_argument('--check', action='store_true', help='compare every version to its golden file')
    args = parser.parse_args(argv)
    os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if not args.check:
        print(json.dumps(record(args.version), indent=1))
        return 0
    lines = check(VERSIONS)
    print('\n'.join(lines) if lines else f'{len(VERSIONS)} versions match their golden updates')
    return 1 if lines else 0


if __name__ == '__main__':
    sys.exit(main())
