"""Data parallelism: MirroredStrategy over two logical CPUs matches one device for the same global batch.

The process is split into two logical CPU devices before TensorFlow initialises its devices, so this
module runs its checks in a fresh subprocess (pytest has already initialised TensorFlow).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dreamer_tf import config as configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIRRORED_CHECK = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from gymnasium import spaces
    from dreamer_tf import config as configlib
    from dreamer_tf.agent import Agent
    from dreamer_tf.envs import ActionSpec
    from dreamer_tf.framework import make_agent, make_replicas, make_strategy, make_train_step

    jit = sys.argv[1] == 'true'
    sets = ['batch_size=4', 'batch_length=6', f'jit={str(jit).lower()}']
    one = configlib.load('dreamerv3', ['debug'], sets)
    two = configlib.load('dreamerv3', ['debug'], sets + ['distribute.strategy=mirrored',
                                                         "distribute.devices=['/cpu:0', '/cpu:1']"])
    obs_space = {'vector': spaces.Box(-np.inf, np.inf, (5,), np.float32)}
    act_space = ActionSpec(discrete=False, size=2)
    single = Agent(one, obs_space, act_space)
    strategy = make_strategy(two)
    assert strategy.num_replicas_in_sync == 2
    mirrored = make_agent(two, obs_space, act_space, strategy)
    # Same starting point: copy every weight and optimiser/normaliser variable.
    for path, var in single.weights_by_path.items():
        mirrored.weights_by_path[path].assign(var)
    for a, b in zip(single.opt.variables, mirrored.opt.variables, strict=True):
        b.assign(a)

    rng = np.random.default_rng(0)
    def batch():
        shape = (4, 7)
        data = {'vector': rng.standard_normal(shape + (5,)).astype(np.float32),
                'action': rng.uniform(-1, 1, shape + (2,)).astype(np.float32),
                'reward': rng.standard_normal(shape).astype(np.float32),
                'is_first': np.zeros(shape, bool), 'is_last': np.zeros(shape, bool),
                'is_terminal': np.zeros(shape, bool),
                'key': rng.integers(0, 2 ** 32, 4, dtype=np.int64)}
        data['is_first'][:, 0] = True
        data['is_terminal'][1, 4] = data['is_last'][1, 4] = True
        data['is_first'][1, 5] = True
        return data

    step_one = make_train_step(single, one)
    step_two = make_train_step(mirrored, two, strategy)
    out = {'metrics': [], 'weights': None}
    for _ in range(3):
        data = batch()
        m1 = step_one({k: tf.constant(v) for k, v in data.items()})
        m2 = step_two(make_replicas(strategy).split(data))
        out['metrics'].append({k: [float(m1[k]), float(m2[k])] for k in m1})
    diffs = {}
    for path, var in single.weights_by_path.items():
        var2 = mirrored.weights_by_path[path]
        copies = strategy.experimental_local_results(getattr(var2, '_value', var2))   # Keras wraps it
        diffs[path] = [float(np.max(np.abs(var.numpy() - c.numpy()))) for c in copies]
        scale = float(np.max(np.abs(var.numpy())))
        diffs[path].append(scale)
    out['weights'] = diffs
    out['retnorm'] = [[float(single.ac.retnorm.hi.numpy()), float(mirrored.ac.retnorm.hi.numpy())]]
    out['step'] = [int(single.opt.step.numpy()), int(mirrored.opt.step.numpy())]
    try:
        make_strategy(two.update({'batch_size': 3}))
        out['odd_batch'] = 'accepted'
    except configlib.ConfigError as error:
        out['odd_batch'] = str(error)
    print('RESULT ' + json.dumps(out))
''')


def run_check(script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run([sys.executable, '-c', script, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    raise AssertionError(f'check failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}')


def test_mirrored_two_cpus_match_one_device():
    # jit on: the one-device step is XLA-compiled and the replicas' is not, so this also checks
    # that the keyed noise gives the same samples with and without XLA.
    out = run_check(MIRRORED_CHECK, 'true')
    assert out['step'] == [3, 3]
    assert 'batch_size 3 does not split evenly over 2 replicas' in out['odd_batch']
    for update in out['metrics']:
        for name, (one, two) in update.items():
            if np.isnan(one):
                assert np.isnan(two), name
                continue
            assert two == pytest.approx(one, rel=1e-4, abs=1e-5), name
    for path, values in out['weights'].items():
        *diffs, scale = values
        assert len(diffs) == 2, path                       # one copy per logical CPU
        assert max(diffs) <= 1e-5 * max(1.0, scale), (path, diffs, scale)
    (hi_one, hi_two), = out['retnorm']
    assert hi_two == pytest.approx(hi_one, rel=1e-5)


def test_one_replica_takes_any_batch_and_unknown_strategies_are_refused():
    from dreamer_tf.framework import make_strategy
    config = configlib.load('dreamerv3', ['debug'], ['batch_size=3', 'distribute.strategy=none'])
    assert make_strategy(config).num_replicas_in_sync == 1    # one replica: anything splits
    with pytest.raises(configlib.ConfigError, match="'distribute.strategy': got 'ring'"):
        configlib.load('dreamerv3', ['debug'], ['distribute.strategy=ring'])


def free_ports(n):
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(('localhost', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def checkpoint_tensors(logdir):
    import tensorflow as tf
    from dreamer_tf import checkpoints
    path = checkpoints.list_checkpoints(os.path.join(logdir, 'checkpoints'))[-1]
    reader = tf.train.load_checkpoint(path)
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith('agent/')
             and 'OPTIMIZER_SLOT' not in n]
    return {n: reader.get_tensor(n) for n in names}


def test_multi_worker_two_processes_agree_on_the_weights(tmp_path):
    """Two workers on localhost (TF_CONFIG), each with its own envs, seeds and replay, train the
    debug agent together; their final checkpoints must hold the same weights."""
    ports = free_ports(2)
    cluster = {'worker': [f'localhost:{p}' for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}})
        env = dict(os.environ, TF_CONFIG=tf_config, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
        cmd = [sys.executable, os.path.join(ROOT, 'reproduce', 'gym_classic.py'), '--task=CartPole-v1',
               '--configs=debug', '--steps=300', f'--logdir={tmp_path / f"worker{index}"}',
               '--set', 'distribute.strategy=multi_worker', '--set', 'replay.persist=false']
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    first, second = (checkpoint_tensors(tmp_path / f'worker{i}') for i in range(2))
    assert first.keys() == second.keys() and len(first) > 20
    for name in first:
        np.testing.assert_allclose(first[name], second[name], rtol=1e-6, atol=1e-7, err_msg=name)
    # Training happened: (300 - 200 prefill) * 32 / 64 = 50 updates on each worker.
    steps = [v for n, v in first.items() if n.startswith('agent/opt/step')]
    assert [int(v) for v in steps] == [50], sorted(first)[:5]
    # The workers saw different episodes (their seeds differ), so agreeing is the all-reduce's doing.
    scores = []
    for index in range(2):
        with open(tmp_path / f'worker{index}' / 'metrics.jsonl') as f:
            scores.append([json.loads(line).get('episode/score') for line in f
                           if 'episode/score' in line])
    assert scores[0] != scores[1]
