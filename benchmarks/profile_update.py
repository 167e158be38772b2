"""Where one update's time goes: the train step cut into compiled pieces, each timed on its own.

    python benchmarks/profile_update.py --case=dmc_proprio:size1m
    python benchmarks/profile_update.py --case=dmc_proprio:size1m --jit=false --set rssm.deter=256

The pieces nest, so their differences are the parts of the update:

    replay sample        host: sample a batch from the replay and add its keys
    observe              world-model loss forward: encoder, observe scan, decoder/reward/continue heads
    world-model grads    the same with its backward pass
    imagination          + the imagination rollout from every posterior state (core, prior, acting policy)
    loss                 + the heads on the imagined states, returns, actor / critic / slow-critic losses
    grads                + every backward pass (what `Agent.compute_gradients` does)
    update               + the optimiser and the slow-critic EMA (`Agent.train_step`)

Each piece is a tf.function with the case's XLA setting (`jit: auto` decided for this machine and the
case's observations, as a run decides it; or --jit), timed over --updates calls after
--warmup; wall seconds and process CPU seconds (both cores) are reported as medians.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_speed  # noqa: E402  (fill_replay, TASKS)

# --version, --jit (config/true/false), --set, --warmup, --updates and --out are train_speed's flags.
FLAGS = flags.FLAGS
flags.DEFINE_string('case', 'dmc_proprio:size1m', 'benchmark:size')
flags.DEFINE_string('precision', 'float32', "Compute precision ('auto': the config's auto choice).")
flags.DEFINE_integer('threads', 0, 'TensorFlow intra/inter-op threads (0: its default). With 1, CPU '
                     'seconds measure the work alone, even on a busy machine.')


def timed(fn, batches):
    """Median wall and CPU seconds of fn over batches (the first few are warm-up)."""
    walls, cpus = [], []
    for i, batch in enumerate(batches):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(batch)
        np.asarray(out)
        if i >= FLAGS.warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def pieces(agent):
    """name -> function of a batch returning one scalar, each containing the previous one."""
    import tensorflow as tf

    from dreamer_tf import ops

    def observe(data):
        data = dict(data)
        key = data.pop('key')
        losses, _, _ = agent.wm.loss(data, key=key)
        return tf.add_n([tf.reduce_mean(v) for v in losses.values()])

    def wm_grads(data):
        with tf.GradientTape() as tape:
            loss = observe(data)
        return tf.linalg.global_norm(tape.gradient(loss, agent.wm.trainable_variables))

    def imagination(data):
        data = dict(data)
        key = data.pop('key')
        with tf.GradientTape() as tape:
            losses, post, _ = agent.wm.loss(data, key=ops.fold_in(key, 1))
            loss = tf.add_n([tf.reduce_mean(v) for v in losses.values()])
        norm = tf.linalg.global_norm(tape.gradient(loss, agent.wm.trainable_variables))
        feat, actions = agent.ac.imagine(agent.wm.rssm, post, ops.fold_in(key, 2))
        return norm + tf.reduce_mean(feat) + tf.reduce_mean(actions)    # keeps the rollout alive

    def loss(data):
        return agent.loss(data)[0]

    def grads(data):
        return tf.linalg.global_norm(agent.compute_gradients(data)[0])

    def update(data):
        return agent.train_step(data)['loss/total']

    return {'observe': observe, 'world-model grads': wm_grads, 'imagination': imagination, 'loss': loss,
            'grads': grads, 'update': update}


def main(argv):
    del argv
    import tensorflow as tf
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)

    from dreamer_tf import config as configlib
    from dreamer_tf import envs as envlib
    from dreamer_tf.framework import make_agent, resolve_auto, set_precision
    from dreamer_tf.trainer import replay_batch
    benchmark, _, size = FLAGS.case.partition(':')
    overrides = [f'env.task={train_speed.TASKS[benchmark]}', f'precision={FLAGS.precision}']
    if FLAGS.jit in ('true', 'false'):
        overrides.append(f'jit={FLAGS.jit}')
    config = configlib.load(FLAGS.version, [benchmark] + ([size] if size else []), overrides + FLAGS.set)
    env = envlib.make_env(config.env, config.seed)
    config = resolve_auto(config, env.obs_space)     # as the trainer decides `auto`
    set_precision(config.precision)
    rng = np.random.default_rng(config.seed)
    replay = train_speed.fill_replay(config, env, 2000, rng)
    env.close()
    agent = make_agent(config, env.obs_space, env.act_space)   # float16: with its loss scaling
    calls = FLAGS.warmup + FLAGS.updates
    start = time.perf_counter()
    batches = [replay_batch(replay, config.batch_size, rng) for _ in range(calls)]
    results = {'replay sample': ((time.perf_counter() - start) / calls, None)}
    for name, fn in pieces(agent).items():
        compiled = tf.function(fn, jit_compile=config.jit)
        compiled(batches[0])                                    # trace and compile
        results[name] = timed(compiled, batches)
    print(f'{FLAGS.version} {FLAGS.case} {config.precision} xla={config.jit} '
          f'batch {config.batch_size}x{config.batch_length}')
    print('| piece | wall s | CPU s | wall s of the part |')
    print('|---|---|---|---|')
    previous = 0.0
    for name, (wall, cpu) in results.items():
        part = wall if name == 'replay sample' else wall - previous
        previous = previous if name == 'replay sample' else wall
        cpu_text = f'{cpu:.3f}' if cpu is not None else '-'
        print(f'| {name} | {wall:.3f} | {cpu_text} | {part:+.3f} |')
    if FLAGS.out:
        with open(FLAGS.out, 'w') as f:
            json.dump({k: {'wall_s': w, 'cpu_s': c} for k, (w, c) in results.items()}, f, indent=1)


if __name__ == '__main__':
    app.run(main)
