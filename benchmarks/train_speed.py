"""Seconds per training update of the compiled DreamerV3 train step, on real environment data.

    python benchmarks/train_speed.py --configs=dmc_proprio,size1m --task=cartpole_balance
    python benchmarks/train_speed.py --configs=dmc_proprio,size1m --precision=bfloat16 --jit=false

Fills a replay with random-action episodes of the task, compiles the train step, runs `--warmup`
updates, then times `--updates` more and prints the median, the compile time and the parameter
count. Figures from this script are the ones quoted in the README.
"""

import time

import numpy as np
from absl import app, flags

from dreamer_tf import config as configlib
from dreamer_tf import envs as envlib
from dreamer_tf.agent import Agent
from dreamer_tf.replay import Replay
from dreamer_tf.trainer import make_train_step, random_actions, set_precision

FLAGS = flags.FLAGS
flags.DEFINE_string('configs', 'dmc_proprio,size1m', 'Overlays of configs/<version>.yaml.')
flags.DEFINE_string('task', 'cartpole_balance', 'Task whose random episodes fill the replay.')
flags.DEFINE_string('version', 'dreamerv3', 'Agent version.')
flags.DEFINE_string('precision', 'float32', 'float32 or bfloat16.')
flags.DEFINE_bool('jit', True, 'XLA-compile the train step.')
flags.DEFINE_integer('warmup', 3, 'Updates run (and not timed) after compiling.')
flags.DEFINE_integer('updates', 10, 'Timed updates; the median is reported.')
flags.DEFINE_integer('fill', 3000, 'Random-action env steps put into the replay first.')


def fill_replay(config, env, steps, rng):
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


def main(argv):
    del argv
    overrides = {'env.task': FLAGS.task, 'precision': FLAGS.precision, 'jit': FLAGS.jit}
    config = configlib.load(FLAGS.version, FLAGS.configs, overrides)
    set_precision(config.precision)
    env = envlib.make_env(config.env, config.seed)
    replay = fill_replay(config, env, FLAGS.fill, np.random.default_rng(config.seed))
    agent = Agent(config, env.obs_space, env.act_space)
    train_step = make_train_step(agent, config)
    start = time.perf_counter()
    train_step(replay.sample(config.batch_size))['loss/total'].numpy()
    compile_time = time.perf_counter() - start
    for _ in range(FLAGS.warmup):
        train_step(replay.sample(config.batch_size))['loss/total'].numpy()
    times = []
    for _ in range(FLAGS.updates):
        batch = replay.sample(config.batch_size)
        start = time.perf_counter()
        train_step(batch)['loss/total'].numpy()
        times.append(time.perf_counter() - start)
    params = agent.summary()['total']
    print(f'configs={FLAGS.configs} task={FLAGS.task} precision={config.precision} '
          f'jit={config.jit} batch={config.batch_size}x{config.batch_length}')
    print(f'params {params:,} | compile+first {compile_time:.1f} s | '
          f'update median {np.median(times):.3f} s (min {np.min(times):.3f}, '
          f'max {np.max(times):.3f}, n={len(times)})')


if __name__ == '__main__':
    app.run(main)
