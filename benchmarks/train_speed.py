"""Speed of the compiled train step (any version) on real environment data, against the authors' figures.

    python benchmarks/train_speed.py                       # the issue's cases, float32 and bfloat16
    python benchmarks/train_speed.py --cases=dmc_proprio:size1m --precisions=float32 --jit=both
    python benchmarks/train_speed.py --out=speed.json      # also write every figure as JSON
    python benchmarks/train_speed.py --version=dreamerv1 --cases=dmc_proprio --precisions=float32

For each case (benchmark overlay : size preset) and precision, a fresh child process fills a replay
with random-action episodes of the benchmark's task, builds the agent, compiles the train step
(timed: compile + first update), runs `--warmup` updates, then times `--updates` more and reports the
median. The child also reports:

- parameters (trainable, from `Agent.summary`);
- peak resident memory of the process (ru_maxrss: model, replay, compiler, everything);
- FLOPs per update, counted: one update runs eagerly with an op callback that adds up the
  multiply-adds of every MatMul, BatchMatMul, Einsum and convolution (forward, backward and
  optimiser) from the shapes it actually executed, loop iterations included;
- achieved FLOP/s = counted FLOPs / median seconds, against this machine's measured matmul peak
  (2048 x 2048 x 2048 in the same precision, measured by the parent).

The authors' JAX release on this 2-core machine (SPEC, float32): atari100k 5.3 s per update at size1m
and 24.2 s at size12m, dmc_proprio size1m 0.88 s. Ratios are printed as authors / ours.
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list('cases', ['atari100k:size1m', 'atari100k:size12m', 'dmc_proprio:size1m'],
                  'benchmark:size pairs; the benchmark overlay sets the task below.')
flags.DEFINE_list('precisions', ['float32', 'bfloat16'], "Compute precisions to time ('auto': the "
                  "config's auto choice for this machine).")
flags.DEFINE_enum('jit', 'config', ['config', 'true', 'false', 'both'],
                  "XLA for the train step: the config's choice (jit: auto decided for this machine and "
                  "the case's observations, as a run decides it), forced on/off, or both.")
flags.DEFINE_string('version', 'dreamerv3', 'Agent version.')
flags.DEFINE_list('set', [], 'Extra key=value overrides for every case.')
flags.DEFINE_integer('warmup', 2, 'Updates run (and not timed) after compiling.')
flags.DEFINE_integer('updates', 10, 'Timed updates; the median is reported.')
flags.DEFINE_integer('fill', 2000, 'Random-action env steps put into the replay first.')
flags.DEFINE_bool('flops', True, 'Count FLOPs with one eager update (slow for large models).')
flags.DEFINE_string('out', None, 'Write the results as JSON to this path.')
flags.DEFINE_string('child', None, 'Internal: run one case given as JSON and print its result.')

# One task per benchmark: what the replay is filled with.
TASKS = {'atari100k': 'pong', 'atari': 'pong', 'dmc_proprio': 'cartpole_balance',
         'dmc_vision': 'cartpole_swingup', 'crafter': 'reward', 'gym': 'CartPole-v1'}
# Seconds per update of the authors' DreamerV3 release on this machine, float32 (SPEC).
AUTHORS = {('atari100k', 'size1m'): 5.3, ('atari100k', 'size12m'): 24.2,
           ('dmc_proprio', 'size1m'): 0.88}


# -- counted FLOPs ---------------------------------------------------------------------------------

def _attr(attrs, name, default=None):
    """Op attributes arrive as a flat (name, value, name, value, ...) tuple."""
    if attrs is None:
        return default
    pairs = dict(zip(attrs[::2], attrs[1::2]))
    return pairs.get(name, default)


def _einsum_flops(equation, inputs):
    """2 x the product of every index size of a two-operand einsum (one multiply-add each)."""
    lhs = equation.split('->')[0].split(',')
    sizes = {}
    for term, x in zip(lhs, inputs):
        for letter, size in zip(term.replace('...', ''), x.shape[-len(term.replace('...', '')):]):
            sizes[letter] = int(size)
    batch = 1
    if '...' in lhs[0]:
        explicit = len(lhs[0].replace('...', ''))
        batch = int(np.prod(inputs[0].shape[:len(inputs[0].shape) - explicit]))
    return 2 * batch * int(np.prod(list(sizes.values())))


def op_flops(op_type, inputs, attrs, outputs):
    """FLOPs (2 per multiply-add) of one executed op; 0 for ops that are not contractions."""
    if op_type == 'MatMul':
        a, b = inputs[0].shape, inputs[1].shape
        m = a[1] if _attr(attrs, 'transpose_a') else a[0]
        k = a[0] if _attr(attrs, 'transpose_a') else a[1]
        n = b[0] if _attr(attrs, 'transpose_b') else b[1]
        return 2 * m * k * n
    if op_type in ('BatchMatMulV2', 'BatchMatMulV3', 'BatchMatMul'):
        out = outputs[0].shape
        a = inputs[0].shape
        k = a[-2] if _attr(attrs, 'adj_x') else a[-1]
        return 2 * int(np.prod(out)) * int(k)
    if op_type == 'Einsum':
        equation = _attr(attrs, 'equation')
        if isinstance(equation, bytes):
            equation = equation.decode()
        return _einsum_flops(equation, inputs) if len(inputs) == 2 else 0
    if op_type == 'Conv2D':
        kh, kw, cin, _ = inputs[1].shape
        return 2 * int(np.prod(outputs[0].shape)) * kh * kw * cin
    if op_type in ('Conv2DBackpropInput', 'Conv2DBackpropFilter'):
        # Both cost what the forward convolution cost: out_backprop elements x kernel taps x in.
        # BackpropInput gets (input sizes, filter, grad); BackpropFilter (input, filter sizes, grad).
        grad, kernel = inputs[2], inputs[1]
        kh, kw, cin, _ = kernel.shape if op_type == 'Conv2DBackpropInput' else kernel.numpy()
        return 2 * int(np.prod(grad.shape)) * int(kh) * int(kw) * int(cin)
    return 0


def count_flops(fn, *args):
    """Run `fn(*args)` eagerly and add up the FLOPs of the contractions it executed."""
    import tensorflow as tf
    from tensorflow.python.framework import op_callbacks
    total = {'flops': 0}

    def callback(op_type, inputs, attrs, outputs, op_name=None, graph=None):
        if graph is None:          # eager executions only
            total['flops'] += op_flops(op_type, inputs, attrs, outputs)
        return None

    op_callbacks.add_op_callback(callback)
    try:
        with tf.device('/cpu:0'):
            fn(*args)
    finally:
        op_callbacks.remove_op_callback(callback)
    return total['flops']


def matmul_peak(precision, size=2048, repeats=10):
    """FLOP/s of a square float32 or bfloat16 matmul, the machine's practical peak."""
    import tensorflow as tf
    dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32
    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        mm(a, b).numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


# -- one case (child process) ----------------------------------------------------------------------

def fill_replay(config, env, steps, rng):
    from dreamer_tf.replay import Replay
    from dreamer_tf.driver import random_actions
    replay = Replay(config.batch_length + config.replay_context, steps + 10)
    size = env.act_space.size
    replay.add({**env.reset(), 'action': np.zeros(size, np.float32)})
    for _ in range(steps):
        action = random_actions(env.act_space, rng, 1)[0]
        step = env.step(action)
        replay.add({**step, 'action': action})
        if step['is_last']:
            replay.add({**env.reset(), 'action': np.zeros(size, np.float32)})
    return replay


def run_case(case):
    from dreamer_tf import config as configlib
    from dreamer_tf import envs as envlib
    from dreamer_tf.framework import make_agent, make_train_step, resolve_auto, set_precision
    from dreamer_tf.trainer import replay_batch
    overrides = [f'env.task={TASKS[case["benchmark"]]}', f'precision={case["precision"]}']
    if case['jit'] is not None:
        overrides.append(f'jit={case["jit"]}')
    overlays = [case['benchmark']] + ([case['size']] if case['size'] else [])
    config = configlib.load(case['version'], overlays, overrides + list(case['set']))
    env = envlib.make_env(config.env, config.seed)
    config = resolve_auto(config, env.obs_space)     # as the trainer decides `auto`
    set_precision(config.precision)
    rng = np.random.default_rng(config.seed)
    replay = fill_replay(config, env, case['fill'], rng)
    env.close()
    agent = make_agent(config, env.obs_space, env.act_space)   # float16: with its loss scaling
    train_step = make_train_step(agent, config)
    start = time.perf_counter()
    train_step(replay_batch(replay, config.batch_size, rng))['loss/total'].numpy()
    compile_s = time.perf_counter() - start
    for _ in range(case['warmup']):
        train_step(replay_batch(replay, config.batch_size, rng))['loss/total'].numpy()
    times = []
    for _ in range(case['updates']):
        batch = replay_batch(replay, config.batch_size, rng)
        start = time.perf_counter()
        train_step(batch)['loss/total'].numpy()
        times.append(time.perf_counter() - start)
    result = dict(case, jit=config.jit, precision=config.precision, params=agent.summary()['total'],
                  compile_s=compile_s, median_s=float(np.median(times)), min_s=float(np.min(times)),
                  max_s=float(np.max(times)), traces=int(train_step.experimental_get_tracing_count()))
    # Peak memory before the eager FLOP count, which holds its own intermediates.
    result['peak_gib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    if case['flops']:
        result['flops'] = count_flops(agent.train_step, replay_batch(replay, config.batch_size, rng))
    return result


# -- parent: run every case in its own process, print the table ------------------------------------

def child_result(case):
    cmd = [sys.executable, os.path.abspath(__file__), '--child', json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    tail = '\n'.join(proc.stderr.strip().splitlines()[-15:])
    raise RuntimeError(f'case {case} failed (exit {proc.returncode}):\n{tail}')


def report(results, peaks):
    print(f'\nmatmul peak: float32 {peaks["float32"] / 1e9:.0f} GFLOP/s, '
          f'bfloat16 {peaks["bfloat16"] / 1e9:.0f} GFLOP/s (2048^3)')
    header = ('case', 'precision', 'xla', 'params', 'compile s', 's/update', 'peak GiB',
              'GFLOP/update', '% of peak', 'authors s', 'authors/ours')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for r in results:
        gflop = r.get('flops', 0) / 1e9
        util = 100 * r.get('flops', 0) / r['median_s'] / peaks[r['precision']]
        authors = AUTHORS.get((r['benchmark'], r['size'])) if r['version'] == 'dreamerv3' else None
        name = f'{r["version"]} {r["benchmark"]}:{r["size"] or "-"}'
        row = (name, r['precision'], 'yes' if r['jit'] else 'no',
               f'{r["params"]:,}', f'{r["compile_s"]:.0f}', f'{r["median_s"]:.2f}',
               f'{r["peak_gib"]:.2f}', f'{gflop:.0f}' if gflop else '-',
               f'{util:.0f}' if gflop else '-', f'{authors}' if authors else '-',
               f'{authors / r["median_s"]:.1f}x' if authors else '-')
        print('| ' + ' | '.join(row) + ' |')


def main(argv):
    del argv
    if FLAGS.child:
        result = run_case(json.loads(FLAGS.child))
        print('RESULT ' + json.dumps(result), flush=True)
        return
    jits = {'config': [None], 'true': [True], 'false': [False], 'both': [True, False]}[FLAGS.jit]
    peaks = {p: matmul_peak(p) for p in ('float32', 'bfloat16')}
    results = []
    for spec in FLAGS.cases:
        benchmark, _, size = spec.partition(':')
        if benchmark not in TASKS:
            raise app.UsageError(f"case '{spec}': benchmark '{benchmark}' is not one of {sorted(TASKS)}")
        for precision in FLAGS.precisions:
            for jit in jits:
                # DreamerV3 cases default to size1m; V1, V2 and the 2023 preset have their own sizes.
                size = size or ('size1m' if FLAGS.version == 'dreamerv3' else '')
                case = dict(benchmark=benchmark, size=size, precision=precision, jit=jit,
                            version=FLAGS.version, set=FLAGS.set, warmup=FLAGS.warmup,
                            updates=FLAGS.updates, fill=FLAGS.fill, flops=FLAGS.flops)
                result = child_result(case)
                results.append(result)
                print(f'{spec} {precision} xla={result["jit"]}: {result["median_s"]:.3f} s/update '
                      f'(compile {result["compile_s"]:.0f} s, traces {result["traces"]})', flush=True)
    report(results, peaks)
    if FLAGS.out:
        with open(FLAGS.out, 'w') as f:
            json.dump({'matmul_peak': peaks, 'results': results}, f, indent=1)


if __name__ == '__main__':
    app.run(main)
