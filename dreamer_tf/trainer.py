"""The training loop: composes the framework (devices), the driver (envs), the schedules, the
checkpoints and the logger, in plain Python around the compiled train step and policy."""

import contextlib
import glob
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf import __version__, checkpoints
from dreamer_tf import config as configlib
from dreamer_tf import dream
from dreamer_tf import envs as envlib
from dreamer_tf.checkpoints import NonFiniteError
from dreamer_tf.driver import Driver, eval_scores, policy_batch, random_actions
from dreamer_tf.framework import (AUTO_KEYS, device_name, make_agent, make_policy, make_replicas,
                                  make_strategy, make_train_step, resolve_auto, set_precision, worker_index)
from dreamer_tf.logger import FPS, Logger, Progress
from dreamer_tf.replay import Replay
from dreamer_tf.results import plots
from dreamer_tf.schedules import Clock, Every, Ratio

# Keys a resumed run may change without --override_config: the budget and bookkeeping, not learning, and
# XLA: with or without it an update is the same function of weights, batch and keys (README "Reproducible
# noise"), so a run moved to another machine may switch it (`--set jit=true`). A `jit: auto` still keeps
# the saved choice (check_logdir_config). Precision changes the math, so it is not here.
RESUMABLE_KEYS = ('run.steps', 'run.log_every', 'run.save_every', 'run.save_minutes', 'run.keep_checkpoints',
                  'jit')


def replay_batch(replay, size, rng):
    """`size` replayed sequences plus one random key per sequence, from which the loss draws its noise."""
    batch = replay.sample(size)
    batch['key'] = rng.integers(0, 2 ** 32, size, dtype=np.int64)
    return batch


def nonfinite_cause(metrics, skip_names=()):
    """The metrics of a skipped update that are not finite, e.g. 'non-finite loss/rep, ret'; the
    optimiser's own metrics (NaN by design when skipping) are left out."""
    bad = sorted(name for name, value in metrics.items()
                 if name not in skip_names and not np.all(np.isfinite(np.asarray(value, np.float64))))
    return f'non-finite {", ".join(bad)}' if bad else 'finite losses, non-finite gradient norm'


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


def checkpoint_state(agent):
    """{name: variable} of the agent's state that a checkpoint must hold finite."""
    return {**agent.weights_by_path,
            **{f'opt/{i}/{v.name}': v for i, v in enumerate(agent.opt.variables)},
            **{f'loss_state/{v.name}': v for v in agent.loss_state}}


class Trainer:

    def __init__(self, config, logdir, override_config=False):
        self.logdir = os.path.abspath(os.path.expanduser(logdir))
        os.makedirs(self.logdir, exist_ok=True)
        self.auto = tuple(key for key in AUTO_KEYS if config[key] == 'auto')   # marked in the banner
        # A resumed run takes its saved jit and precision where this config says auto.
        config = check_logdir_config(config, self.logdir, override_config)
        # Multi-worker clusters must be set up before TensorFlow runs anything else.
        self.strategy = make_strategy(config)
        self.replicas = make_replicas(self.strategy)
        seed = invocation_seed(config.seed, os.path.join(self.logdir, 'replay'))
        seed += 100_003 * worker_index(self.strategy)      # each worker collects its own data
        seed_everything(seed, config.deterministic)
        self.rng = np.random.default_rng(seed)
        env_cfg, run = config.env, config.run
        self.envs = [envlib.make_env(env_cfg, seed + i) for i in range(env_cfg.num_envs)]
        self.eval_env = envlib.make_env(env_cfg, seed + 10_000, mode='eval')
        self.act_space = self.envs[0].act_space
        # The rest of `auto` decided once, for this machine and these observations; config.yaml holds
        # the decision, which every resume keeps.
        self.config = config = resolve_auto(config, self.envs[0].obs_space)
        config.save(os.path.join(self.logdir, 'config.yaml'))
        set_precision(config.precision)
        self.replay = Replay(config.batch_length + config.replay_context, config.replay.capacity,
                             os.path.join(self.logdir, 'replay') if config.replay.persist else None,
                             seed=seed, prioritize_ends=config.replay.prioritize_ends)
        self.agent = make_agent(config, self.envs[0].obs_space, self.act_space, self.strategy)
        self.counters = Counters()
        self.checkpoint = make_checkpoint(self.agent, self.counters)
        self.stopped_by = 0              # the signal that stopped run() early, if any
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(self.logdir, 'checkpoints'), max_to_keep=run.keep_checkpoints)
        self._train_step = make_train_step(self.agent, config, self.strategy)
        self._policy = make_policy(self.agent, config)
        self.logger = Logger(self.logdir)
        self.curves = plots.LiveCurves(self.logdir)         # <logdir>/curves.png
        self.driver = Driver(self.envs, self.replay, self.counters, env_cfg.action_repeat, self._log_episode)
        self.ratio = Ratio(run.train_ratio, config.batch_size * config.batch_length, run.train_every,
                           run.pretrain)
        self.pending = []                                  # train metrics since the last log
        self.nonfinite_streak = 0                          # skipped updates in a row
        self.saved_step = None                             # env step of the checkpoint on disk
        self.save_clock = Clock(run.save_minutes)          # a killed slow run loses at most this
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

        A step already saved is not rewritten: an interrupted rewrite could damage the newest good one.
        """
        if self.env_steps == self.saved_step:
            return
        checkpoints.save_finite(self.manager, self.env_steps, checkpoint_state(self.agent))
        self.saved_step = self.env_steps
        self.save_clock.reset()

    def close(self):
        for env in self.envs + [self.eval_env]:
            env.close()
        self.logger.close()

    # -- main loop ----------------------------------------------------------------------------

    def run(self):
        """Train to run.steps. A SIGTERM or SIGINT stops it early, saved: `stopped_by` names the signal."""
        print(banner(self.config, self.strategy, self.agent, self.logdir, self.auto), flush=True)
        self.restore()
        self.clock = time.monotonic()     # wall-clock counts training, not start-up
        self.save_clock.reset()
        progress = Progress(self.config.run.steps, start=self.env_steps)
        fps = (FPS(), FPS())             # env steps/s and updates/s
        fps[1].update(self._count('updates'))   # so the first line already has updates/s
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
        cfg, step = self.config.run, self.env_steps
        log, evaluate = Every(cfg.log_every, step), Every(cfg.eval_every, step)
        report, save = Every(cfg.report_every, step), Every(cfg.save_every, step)
        self.driver.reset(self.agent.initial_state)
        logged_at = None
        while self.env_steps < cfg.steps and not stop.signum:
            self.driver.step(self._act)
            self._train_due()
            step = self.env_steps
            if log(step):
                self._log(progress, fps)
                logged_at = step
            if evaluate(step):
                self.evaluate(cfg.eval_episodes)
            if report(step):
                self.report_open_loop()
            if save(step) or self.save_clock():
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
        return self._count('env_steps')

    def _count(self, name):
        return int(getattr(self.counters, name).numpy())

    # -- acting -------------------------------------------------------------------------------

    def _act(self, obs, state):
        """Uniform random actions during prefill (no model run), then the policy's samples."""
        if self.env_steps < self.config.run.prefill:
            return random_actions(self.act_space, self.rng, len(obs)), state
        action, state = self._policy(policy_batch(obs, self.agent.obs_space), state, 'train')
        return action.numpy(), state

    def _log_episode(self, score, length, episode_logs):
        self.logger.add({'score': score, 'length': length, 'wall_minutes': self.wall_minutes(),
                         **episode_logs}, prefix='episode')
        self.logger.write(self.env_steps)

    # -- learning -----------------------------------------------------------------------------

    def updates_due(self):
        """Updates the train ratio owes, counting policy steps from the end of prefill."""
        prefill = self.config.run.prefill // self.config.env.action_repeat
        return self.ratio(self._count('policy_steps') - prefill, self._count('updates'))

    def sample_batch(self):
        """This worker's share of the global batch, with one noise key per sequence."""
        batch = replay_batch(self.replay, self.replicas.share(self.config.batch_size), self.rng)
        return self.replicas.split(batch)

    def _train_due(self):
        if self.env_steps < self.config.run.prefill or not self.replay.can_sample():
            return
        for _ in range(self.updates_due()):
            metrics = dict(self._train_step(self.sample_batch()))
            self.counters.updates.assign_add(1)
            if float(metrics.pop('skipped')):
                self._skipped_update(metrics)
            else:
                self.nonfinite_streak = 0
                self.pending.append(metrics)

    def _skipped_update(self, metrics):
        """Count an update the agent skipped for a non-finite loss or gradient, say which; stop after too
        many."""
        self.counters.skipped_updates.assign_add(1)
        print(f'warning: update {self._count("updates")} at step {self.env_steps} skipped: '
              f'{nonfinite_cause(metrics, self.agent.opt.metric_names)}', file=sys.stderr, flush=True)
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
        updates = self._count('updates')
        rate, update_rate = fps[0].update(self.env_steps), fps[1].update(updates)
        scores = self.driver.scores
        recent = float(np.mean(scores[-10:])) if scores else None
        self.logger.add({'updates': updates, 'skipped_updates': self._count('skipped_updates'),
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
        scores = eval_scores(self.eval_env, self._policy, self.agent.initial_state, self.agent.obs_space,
                             episodes)
        self.logger.add({'score': float(np.mean(scores)), 'episodes': len(scores)}, prefix='eval')
        self.logger.write(self.env_steps)
        return scores

    def report_open_loop(self, sequences=4, context=5):
        """TensorBoard image `report/open_loop`: replayed frames, the model's open-loop prediction, |error|.

        Image observations only. The sequences come from an RNG of their own, so training batches do
        not depend on reporting (dreamer_tf.dream.open_loop).
        """
        if 'image' not in self.agent.obs_space or not self.replay.can_sample():
            return None
        rng = np.random.default_rng([self.config.seed, self.env_steps])
        data = self.replay.sample(sequences, rng=rng)
        preds = dream.open_loop(self.agent.wm, data, context)
        grid = dream.open_loop_grid(data['image'], preds['image'], context)
        self.logger.image('report/open_loop', grid, self.env_steps)
        return grid


def banner(config, strategy, agent, logdir, auto=()):
    """The one line a run prints before its progress: what runs, on what, and where it writes.

    `config` holds the decided precision and jit; the keys named in `auto` are marked `(auto)`."""
    params = agent.summary()['total']     # trainable, as the papers count (no slow critic)
    benchmark = config.overlays[0] if config.overlays else config.env.suite

    def chosen(key, text):
        return f'{text} (auto)' if key in auto else text
    return (f'dreamer_tf {__version__} | {config.version} {benchmark} {config.env.task} | '
            f'{device_name(strategy)} | {chosen("precision", config.precision)} | '
            f'{chosen("jit", "XLA on" if config.jit else "XLA off")} | {params:,} parameters | {logdir}')


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TensorFlow; `deterministic` makes TensorFlow's ops deterministic for
    the rest of the process (README, reliability)."""
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)   # Python, NumPy and TensorFlow


def invocation_seed(seed, replay_dir):
    """`seed` for a fresh logdir; a resumed one derives it from the stored episode count, or it would
    collect its predecessor's episodes (same env starts, same prefill actions) again."""
    stored = len(glob.glob(os.path.join(glob.escape(replay_dir), '*.npz')))
    if not stored:
        return seed
    return int(np.random.SeedSequence([seed, stored]).generate_state(1)[0] % 2**31)


@contextlib.contextmanager
def stop_signals():
    """While inside, SIGTERM and SIGINT only set `.signum`, so the run finishes its step and saves
    instead of losing what it did since its last checkpoint; a second signal stops at once. Signals
    are left alone outside the main thread."""
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
    """The config to continue `logdir` with; refuses a logdir whose saved config differs in learning keys.

    `auto` means decided once, when the run starts: a key of AUTO_KEYS (jit, precision) that is `auto`
    in `config` takes the saved config's value, so a run started on a CPU keeps its precision when it
    is resumed on a GPU. An explicit value that differs from the saved one is a difference. With
    `override` the new config replaces the saved one, which is kept as config.<time>.yaml. The caller
    saves the config it runs (the Trainer, once it has decided the remaining `auto`s).
    """
    path = os.path.join(logdir, 'config.yaml')
    if os.path.exists(path):
        saved = configlib.Config.from_file(path).flat()
        decided = {key: saved[key] for key in AUTO_KEYS
                   if config[key] == 'auto' and saved.get(key, 'auto') != 'auto'}
        config = config.update(decided) if decided else config
        new = config.flat()
        # A key the saved config lacks is newer than the run, which resumes with its default.
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
    return config


def train(config, logdir):
    """Train an agent as `config` says, writing everything under `logdir`; resumes if possible."""
    trainer = Trainer(config, logdir)
    try:
        trainer.run()
    finally:
        trainer.close()
    return trainer
