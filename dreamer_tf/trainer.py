"""The training loop. The only module that knows about tf.function/XLA, precision and checkpoints.

One iteration: the compiled policy acts in every environment, the steps go to the replay, and the
`train_ratio` schedule decides how many compiled train steps run before the next env step.
Counters, logging and checkpoints stay in plain Python around the compiled functions.
"""

import contextlib
import glob
import os
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf import __version__, checkpoints
from dreamer_tf import config as configlib
from dreamer_tf import dream
from dreamer_tf import envs as envlib
from dreamer_tf.agent import Agent
from dreamer_tf.logger import FPS, Logger, Progress
from dreamer_tf.replay import Replay
from dreamer_tf.results import plots

# Compute precisions: parameters, losses and distributions stay float32 in all three; float16 adds
# dynamic loss scaling (Agent.loss_scale).
PRECISIONS = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16', 'float16': 'mixed_float16'}
# Keys a resumed run may change without --override_config: the budget and bookkeeping, not learning.
RESUMABLE_KEYS = ('run.steps', 'run.log_every', 'run.save_every', 'run.save_minutes', 'run.keep_checkpoints')


class NonFiniteError(RuntimeError):
    """Training produced non-finite values: too many skipped updates in a row, or non-finite weights."""


def set_precision(name):
    if name not in PRECISIONS:
        raise configlib.ConfigError(f"precision '{name}' is not one of {sorted(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(PRECISIONS[name])


STRATEGIES = ('none', 'mirrored', 'multi_worker')


def make_strategy(config):
    """The tf.distribute strategy that `distribute.strategy` names.

    none: TensorFlow's default strategy (one device). mirrored: MirroredStrategy over
    `distribute.devices` (all GPUs when empty). multi_worker: MultiWorkerMirroredStrategy, the
    cluster described by the TF_CONFIG environment variable; every worker runs the same command.
    """
    name, devices = config.distribute.strategy, list(config.distribute.devices)
    if name not in STRATEGIES:
        raise configlib.ConfigError(f"distribute.strategy '{name}' is not one of {list(STRATEGIES)}")
    if name == 'none':
        strategy = tf.distribute.get_strategy()
    elif name == 'mirrored':
        strategy = tf.distribute.MirroredStrategy(devices or None)
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise configlib.ConfigError(
            f'batch_size {config.batch_size} does not split evenly over '
            f'{strategy.num_replicas_in_sync} replicas; use a multiple of it')
    return strategy


def worker_index(strategy):
    """This process's task index in a multi-worker cluster (0 everywhere else)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def local_replicas(strategy):
    """Replicas on this worker (1 under the default strategy)."""
    return len(strategy.extended.worker_devices) if is_distributed(strategy) else 1


def is_distributed(strategy):
    return strategy is not None and strategy.num_replicas_in_sync > 1


def make_train_step(agent, config, strategy=None):
    """The compiled update: loss, gradients and optimiser step in one (optionally XLA) function.

    Under a data-parallel strategy each replica computes the gradients of the mean loss of its
    slice of the global batch; their mean is the gradient of the global-batch mean (the slices are
    equal), and the optimiser applies it once, in cross-replica context, to every copy. The
    return normaliser's percentiles see the returns of all replicas.
    """
    if not is_distributed(strategy):
        return tf.function(agent.train_step, jit_compile=config.jit)
    if agent.ac.retnorm is not None:
        agent.ac.retnorm.gather = lambda x: tf.distribute.get_replica_context().all_gather(x, axis=0)
    # The all-gather is a collective, which XLA clusters on the CPU do not compile: the
    # replica function runs as a plain graph.
    compute = tf.function(agent.compute_gradients)

    def mean(value):
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)

    @tf.function
    def step(data):
        before = [tf.identity(v) for v in agent.loss_state]
        grads, metrics = strategy.run(compute, (data,))
        grads = [mean(g) for g in grads]
        metrics = {k: mean(v) for k, v in metrics.items()}
        return agent.apply_if_finite(grads, metrics, before)

    return step


def distribute_batch(strategy, batch):
    """Split a worker's batch (dict of [B_local, ...] arrays) over its local replicas."""
    local = local_replicas(strategy)
    size = len(next(iter(batch.values()))) // local

    def part(context):
        i = context.replica_id_in_sync_group % local
        return {k: tf.constant(v[i * size:(i + 1) * size]) for k, v in batch.items()}

    return strategy.experimental_distribute_values_from_function(part)


def make_policy(agent, config):
    return tf.function(agent.policy, jit_compile=config.jit)


def random_actions(act_space, rng, n):
    """Uniform actions for `n` environments: one-hot for discrete spaces, U[-1, 1] otherwise."""
    if act_space.discrete:
        return np.eye(act_space.size, dtype=np.float32)[rng.integers(0, act_space.size, n)]
    return rng.uniform(-1, 1, (n, act_space.size)).astype(np.float32)


def pop_episode_logs(obs):
    """Remove the env's per-episode statistics (`log/<name>`, e.g. Crafter achievements) from a step."""
    return {key[len('log/'):]: float(obs.pop(key)) for key in [k for k in obs if k.startswith('log/')]}


def replay_batch(replay, size, rng):
    """`size` replayed sequences plus one random key per sequence, from which the loss draws its noise."""
    batch = replay.sample(size)
    batch['key'] = rng.integers(0, 2 ** 32, size, dtype=np.int64)
    return batch


def policy_batch(obs_list, keys):
    """Stack one step dict per environment into the policy's input batch (model keys + is_first)."""
    batch = {k: np.stack([o[k] for o in obs_list]) for k in keys}
    batch['is_first'] = np.array([o['is_first'] for o in obs_list])
    return batch


class Counters(tf.Module):
    """Checkpointed progress: env steps, policy steps, updates, episodes and wall-clock seconds."""

    def __init__(self):
        super().__init__(name='counters')
        self.env_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.policy_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.episodes = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.skipped_updates = tf.Variable(0, dtype=tf.int64, trainable=False)   # non-finite, not applied


def make_checkpoint(agent, counters):
    """What a logdir's checkpoints hold; dreamer_tf.load() restores into the same structure."""
    return tf.train.Checkpoint(agent=agent, counters=counters)


class Trainer:

    def __init__(self, config, logdir, override_config=False):
        self.config = config
        self.logdir = os.path.abspath(os.path.expanduser(logdir))
        os.makedirs(self.logdir, exist_ok=True)
        check_logdir_config(config, self.logdir, override_config)
        # Multi-worker clusters must be set up before TensorFlow runs anything else.
        self.strategy = make_strategy(config)
        seed = invocation_seed(config.seed, os.path.join(self.logdir, 'replay'))
        seed += 100_003 * worker_index(self.strategy)      # each worker collects its own data
        seed_everything(seed, config.deterministic)
        set_precision(config.precision)
        self.rng = np.random.default_rng(seed)
        env_cfg = config.env
        self.envs = [envlib.make_env(env_cfg, seed + i) for i in range(env_cfg.num_envs)]
        self.eval_env = envlib.make_env(env_cfg, seed + 10_000, mode='eval')
        self.act_space = self.envs[0].act_space
        self.replay = Replay(config.batch_length + config.replay_context, config.replay.capacity,
                             os.path.join(self.logdir, 'replay') if config.replay.persist else None,
                             seed=seed, prioritize_ends=config.replay.get('prioritize_ends', False))
        with self.strategy.scope():
            self.agent = Agent(config, self.envs[0].obs_space, self.act_space)
        self.counters = Counters()
        self.checkpoint = make_checkpoint(self.agent, self.counters)
        self.stopped_by = 0              # the signal that stopped run() early, if any
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(self.logdir, 'checkpoints'),
            max_to_keep=config.run.keep_checkpoints)
        self._train_step = make_train_step(self.agent, config, self.strategy)
        self._policy = make_policy(self.agent, config)
        self.logger = Logger(self.logdir)
        self.curves = plots.LiveCurves(self.logdir)         # <logdir>/curves.png
        self.scores = []                                   # finished training episode returns
        self.running = {}                                  # worker -> (return, length) so far
        self.pending = []                                  # train metrics since the last log
        self.nonfinite_streak = 0                          # skipped updates in a row
        self.saved_step = None                             # env step of the checkpoint on disk
        self.saved_clock = time.monotonic()                # when it was written (or the run began)
        self.clock = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------

    def restore(self):
        """Resume from the newest checkpoint and reload the persisted replay episodes."""
        path = checkpoints.restore_newest(self.checkpoint, self.manager.directory)
        if path:
            self.saved_step = self.env_steps
            print(f'Resumed from {path} at step {self.env_steps}.')
        loaded = self.replay.load()
        if loaded:
            print(f'Loaded {loaded} replay steps ({self.replay.num_episodes} episodes).')

    def save(self):
        """Checkpoint the run as ckpt-<env step>; raises instead of saving non-finite variables.

        A step already saved is not written again: rewriting the newest good checkpoint in place is
        the one save that could damage it if interrupted.
        """
        if self.env_steps == self.saved_step:
            return
        state = {**self.agent.weights_by_path,
                 **{f'opt/{i}/{v.name}': v for i, v in enumerate(self.agent.opt.variables)},
                 **{f'loss_state/{v.name}': v for v in self.agent.loss_state}}
        bad = [name for name, v in state.items()
               if tf.as_dtype(v.dtype).is_floating and not bool(tf.reduce_all(tf.math.is_finite(v)))]
        if bad:
            raise NonFiniteError(f'not saving a checkpoint at step {self.env_steps}: {len(bad)} variables '
                                 f'hold NaN or inf (first: {bad[0]}); the checkpoints on disk are untouched')
        checkpoints.save(self.manager, self.env_steps)
        self.saved_step = self.env_steps
        self.saved_clock = time.monotonic()

    def _save_due_by_clock(self):
        """`run.save_minutes` of wall clock since the last save (or the start): a slow long run that
        is killed loses at most that much, whatever its step-based schedule."""
        minutes = self.config.run.save_minutes
        return bool(minutes) and time.monotonic() - self.saved_clock >= 60.0 * minutes

    def close(self):
        for env in self.envs + [self.eval_env]:
            env.close()
        self.logger.close()

    # -- main loop ----------------------------------------------------------------------------

    def run(self):
        """Train to run.steps. A SIGTERM or SIGINT stops it early, saved: `stopped_by` names the signal."""
        cfg = self.config.run
        print(banner(self.config, self.strategy, self.agent, self.logdir), flush=True)
        self.restore()
        self.clock = self.saved_clock = time.monotonic()   # wall-clock counts training, not start-up
        progress = Progress(cfg.steps, start=self.env_steps)
        fps = (FPS(), FPS())             # env steps/s and updates/s
        fps[1].update(int(self.counters.updates.numpy()))   # so the first line already has updates/s
        with stop_signals() as stop:
            logged_at = self._loop(progress, fps, stop)
        # The last step always gets a row (with burst schedules nothing may be pending then).
        if self.pending or logged_at != self.env_steps:
            self._log(progress, fps)
        self.curves.update(final=True)   # the last log may have skipped its redraw (LiveCurves' budget)
        self.save()
        progress.close()
        self.stopped_by = stop.signum
        if stop.signum:
            print(f'Stopped by {signal.Signals(stop.signum).name} at env step {self.env_steps:,}, saved; '
                  'the same command continues the run.', flush=True)

    def _loop(self, progress, fps, stop):
        """Act, store and train until run.steps or a stop signal; returns the step last logged."""
        cfg = self.config.run
        obs = [self._reset(i) for i in range(len(self.envs))]
        state = self.agent.initial_state(len(self.envs))
        next_log, next_eval = self._next(cfg.log_every), self._next(cfg.eval_every)
        next_save, next_report = self._next(cfg.save_every), self._next(cfg.report_every)
        logged_at = None
        while self.env_steps < cfg.steps and not stop.signum:
            action, state = self._act(obs, state)
            steps = envlib.step_all(self.envs, action)   # env processes step concurrently
            obs = [self._env_step(i, action[i], steps[i]) for i in range(len(self.envs))]
            self._train_due()
            step = self.env_steps
            if step >= next_log:
                next_log = self._next(cfg.log_every)
                self._log(progress, fps)
                logged_at = step
            if cfg.eval_every and step >= next_eval:
                next_eval = self._next(cfg.eval_every)
                self.evaluate(cfg.eval_episodes)
            if cfg.report_every and step >= next_report:
                next_report = self._next(cfg.report_every)
                self.report_open_loop()
            if step >= next_save or self._save_due_by_clock():
                next_save = self._next(cfg.save_every)
                self.save()
        return logged_at

    def wall_minutes(self):
        """Training wall-clock so far, summed over every invocation of this logdir."""
        now = time.monotonic()
        self.counters.seconds.assign_add(now - self.clock)
        self.clock = now
        return float(self.counters.seconds.numpy()) / 60.0

    @property
    def env_steps(self):
        return int(self.counters.env_steps.numpy())

    def _next(self, every):
        """The next multiple of `every` strictly after the current step (so resumes line up)."""
        if not every:
            return float('inf')
        return (self.env_steps // every + 1) * every

    # -- acting -------------------------------------------------------------------------------

    def _act(self, obs, state):
        if self.env_steps < self.config.run.prefill:
            return self._random_actions(len(obs)), state
        action, state = self._policy(policy_batch(obs, self.agent.obs_space), state, 'train')
        return action.numpy(), state

    def _random_actions(self, n):
        return random_actions(self.act_space, self.rng, n)

    def _reset(self, worker):
        obs = self.envs[worker].reset()
        self.replay.add({**obs, 'action': np.zeros(self.act_space.size, np.float32)}, worker)
        return obs

    def _env_step(self, worker, action, obs):
        episode_logs = pop_episode_logs(obs)
        if obs['is_first']:
            # A restarted env process: its partial episode is dropped, the replay closes the fragment.
            self.running.pop(worker, None)
            self.replay.add({**obs, 'action': np.zeros(self.act_space.size, np.float32)}, worker)
            return obs
        self.replay.add({**obs, 'action': np.asarray(action, np.float32)}, worker)
        self.counters.policy_steps.assign_add(1)
        self.counters.env_steps.assign_add(self.config.env.action_repeat)
        ret, length = self.running.get(worker, (0.0, 0))
        ret, length = ret + float(obs['reward']), length + 1
        self.running[worker] = (ret, length)
        if obs['is_last']:
            del self.running[worker]
            self._finish_episode(ret, length, episode_logs)
            return self._reset(worker)
        return obs

    def _finish_episode(self, score, length, episode_logs=None):
        self.counters.episodes.assign_add(1)
        self.scores.append(score)
        self.logger.add({'score': score, 'length': length * self.config.env.action_repeat,
                         'wall_minutes': self.wall_minutes(), **(episode_logs or {})}, prefix='episode')
        self.logger.write(self.env_steps)

    # -- learning -----------------------------------------------------------------------------

    def updates_due(self):
        """Updates owed by the train_ratio schedule: (policy steps after prefill) * ratio / (B*T).

        With `run.train_every` = N > 0 (DreamerV1, V2) the updates come in bursts: at the start of
        each period of N policy steps the whole period's N * ratio / (B*T) updates are owed at once
        (V1: 100 updates every 500 policy steps, the first burst right after prefill).
        `run.pretrain` updates are owed on top, from the end of prefill on.
        """
        cfg = self.config
        prefill_policy = cfg.run.prefill // cfg.env.action_repeat
        steps = max(0, int(self.counters.policy_steps.numpy()) - prefill_policy)
        every = cfg.run.get('train_every', 0)
        if every:
            steps = (steps // every + 1) * every
        owed = int(steps * cfg.run.train_ratio / (cfg.batch_size * cfg.batch_length))
        owed += cfg.run.get('pretrain', 0)   # V2: extra updates on the prefill data before acting
        return owed - int(self.counters.updates.numpy())

    def sample_batch(self):
        """A replayed batch plus one random key per sequence, from which the loss draws its noise."""
        # Each worker samples its share of the global batch from its own replay.
        size = self.config.batch_size // self.strategy.num_replicas_in_sync * \
            local_replicas(self.strategy)
        batch = replay_batch(self.replay, size, self.rng)
        if is_distributed(self.strategy):
            return distribute_batch(self.strategy, batch)
        return batch

    def _train_due(self):
        if self.env_steps < self.config.run.prefill or not self.replay.can_sample():
            return
        for _ in range(self.updates_due()):
            metrics = dict(self._train_step(self.sample_batch()))
            self.counters.updates.assign_add(1)
            if float(metrics.pop('skipped')):
                self._skipped_update()
            else:
                self.nonfinite_streak = 0
                self.pending.append(metrics)

    def _skipped_update(self):
        """Count an update the agent skipped for a non-finite loss or gradient; stop after too many."""
        self.counters.skipped_updates.assign_add(1)
        self.nonfinite_streak += 1
        limit = self.config.run.max_nonfinite_updates
        if limit and self.nonfinite_streak >= limit:
            raise NonFiniteError(
                f'{self.nonfinite_streak} updates in a row had a non-finite loss or gradient and were '
                f'skipped (run.max_nonfinite_updates={limit}); stopped at step {self.env_steps} without '
                'saving. Check the environment for NaN/inf observations or rewards, or lower opt.lr.')

    def _log(self, progress, fps):
        for metrics in self.pending:
            self.logger.add({k: float(v) for k, v in metrics.items()}, prefix='train')
        self.pending = []
        updates = int(self.counters.updates.numpy())
        rate, update_rate = fps[0].update(self.env_steps), fps[1].update(updates)
        recent = float(np.mean(self.scores[-10:])) if self.scores else None
        self.logger.add({'updates': updates,
                         'skipped_updates': int(self.counters.skipped_updates.numpy()),
                         'replay_steps': len(self.replay), 'wall_minutes': self.wall_minutes()},
                        prefix='run')
        if rate is not None:
            self.logger.add({'fps': rate}, prefix='run')
        self.logger.write(self.env_steps)
        self.curves.update()
        progress.update(self.env_steps, fps=rate, updates_per_sec=update_rate, score=recent)

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, episodes):
        """Run `episodes` episodes with the actor's mode; log their mean as eval/score."""
        scores = []
        for _ in range(episodes):
            obs, state, score = self.eval_env.reset(), self.agent.initial_state(1), 0.0
            while True:
                batch = policy_batch([obs], self.agent.obs_space)
                action, state = self._policy(batch, state, 'eval')
                obs = self.eval_env.step(action.numpy()[0])
                score = 0.0 if obs['is_first'] else score + float(obs['reward'])  # restarted env
                if obs['is_last']:
                    break
            scores.append(score)
        self.logger.add({'score': float(np.mean(scores)), 'episodes': len(scores)}, prefix='eval')
        self.logger.write(self.env_steps)
        return scores

    def report_open_loop(self, sequences=4, context=5):
        """TensorBoard image `report/open_loop`: replayed frames, the model's open-loop prediction, |error|.

        The world model observes the first `context` steps of each replayed sequence and imagines the
        rest from the recorded actions alone (dreamer_tf.dream.open_loop). Image observations only. The
        sequences come from an RNG of their own, so training batches do not depend on reporting.
        """
        if 'image' not in self.agent.obs_space or not self.replay.can_sample():
            return None
        rng = np.random.default_rng([self.config.seed, self.env_steps])
        data = self.replay.sample(sequences, rng=rng)
        preds = dream.open_loop(self.agent.wm, data, context)
        grid = dream.open_loop_grid(data['image'], preds['image'], context)
        self.logger.image('report/open_loop', grid, self.env_steps)
        return grid


def banner(config, strategy, agent, logdir):
    """The one line a run prints before its progress: what runs, on what, and where it writes."""
    params = agent.summary()['total']     # trainable, as the papers count (no slow critic)
    benchmark = config.overlays[0] if config.overlays else config.env.suite
    return (f'dreamer_tf {__version__} | {config.version} {benchmark} {config.env.task} | '
            f'{device_name(strategy)} | {config.precision} | XLA {"on" if config.jit else "off"} | '
            f'{params:,} parameters | {logdir}')


def device_name(strategy):
    """`CPU`, or the GPU model with a count when the strategy spans several, e.g. `2x NVIDIA H100`."""
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
        return 'CPU'
    name = tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    return f'{replicas}x {name}' if replicas > 1 else name


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TensorFlow; `deterministic` also makes TensorFlow's ops deterministic.

    Op determinism is process-wide and cannot be switched off again. See the README's reliability
    section for what it does and does not make repeatable.
    """
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)   # Python, NumPy and TensorFlow


def invocation_seed(seed, replay_dir):
    """The seed of this invocation's envs and random streams.

    `seed` for a fresh logdir. A logdir that already holds replay episodes is being resumed: seeding it
    the same way would make the resumed run collect again the very episodes (same env starts, same
    prefill actions) that its predecessor stored, so the seed is derived from `seed` and the number
    of stored episodes instead.
    """
    stored = len(glob.glob(os.path.join(glob.escape(replay_dir), '*.npz')))
    if not stored:
        return seed
    return int(np.random.SeedSequence([seed, stored]).generate_state(1)[0] % 2**31)


@contextlib.contextmanager
def stop_signals():
    """While inside, SIGTERM and SIGINT (Ctrl-C, `kill PID`) only set `.signum`, so the run can finish
    the step in hand, save and exit cleanly instead of losing what it did since its last checkpoint.
    A second signal of either kind stops at once. Outside the main thread signals are left alone."""
    class Stop:
        signum = 0
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.signum:
            raise KeyboardInterrupt
        stop.signum = signum
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_logdir_config(config, logdir, override=False):
    """Save config.yaml, or refuse to reuse a logdir whose saved config differs in learning keys.

    With `override` the new config replaces the saved one, which is kept as config.<time>.yaml.
    """
    path = os.path.join(logdir, 'config.yaml')
    if os.path.exists(path):
        saved = configlib.Config.from_file(path).flat()
        new = config.flat()
        # Keys the saved config lacks were added to the library after that run started; the run
        # resumes with their defaults rather than being refused.
        diff = sorted(k for k in saved if saved.get(k) != new.get(k) and k not in RESUMABLE_KEYS)
        details = ', '.join(f'{k}: {saved.get(k)!r} -> {new.get(k)!r}' for k in diff)
        if diff and not override:
            raise configlib.ConfigError(
                f'logdir {logdir} holds a run with a different config ({details}); use a new --logdir '
                'to start a different run, or --override_config to continue this one with the new config')
        if diff:
            backup = os.path.join(logdir, time.strftime('config.%Y%m%dT%H%M%S.yaml'))
            os.replace(path, backup)
            print(f'warning: overriding the config of {logdir} ({details}); the old one is {backup}')
    config.save(path)


def train(config, logdir):
    """Train an agent as `config` says, writing everything under `logdir`; resumes if possible."""
    trainer = Trainer(config, logdir)
    try:
        trainer.run()
    finally:
        trainer.close()
    return trainer
