"""The public Python API: build a config, train on it, and load the trained agent back.

    import dreamer_tf
    config = dreamer_tf.make_config('dreamerv3', 'gym', overlays=['small'], **{'run.steps': 8000})
    dreamer_tf.train(config, 'runs/cartpole')
    agent = dreamer_tf.load('runs/cartpole')       # newest readable checkpoint + saved config
    env = agent.make_env()
    obs, state = env.reset(), None
    action, state = agent.act(obs, state)          # one environment, compiled policy

Everything here is a thin layer over config.py, trainer.py and checkpoints.py; the reproduce/
scripts and the `dreamer-evaluate` / `dreamer-dream` commands go through the same functions.
"""

import os

import numpy as np

from dreamer_tf import checkpoints, driver, framework
from dreamer_tf import config as configlib
from dreamer_tf import envs as envlib
from dreamer_tf import trainer as trainerlib

__all__ = ['LoadError', 'TrainedAgent', 'load', 'make_config', 'train']


class LoadError(ValueError):
    """A logdir that cannot be loaded: missing, no saved config, or no readable checkpoint."""


def make_config(version='dreamerv3', benchmark=None, overlays=(), **overrides):
    """The resolved config: `version` defaults, the `benchmark` overlay, `overlays`, then `overrides`.

    Overrides are dotted keys or nested dicts, checked like `--set`:
        make_config('dreamerv3', 'dmc_proprio', ['size1m'], **{'env.task': 'walker_walk'})
        make_config('dreamerv3', 'gym', run={'steps': 1000}, seed=1)

    `jit` and `precision` stay `auto` (the default) here: `train` decides them for the machine and the
    environment's observations when the run starts, and a resumed run keeps what its start decided.
    """
    overlays = [overlays] if isinstance(overlays, str) else list(overlays)
    return configlib.load(version, ([benchmark] if benchmark else []) + overlays, overrides)


def train(config, logdir):
    """Train as `config` says, writing config, metrics, checkpoints and replay under `logdir`.

    Running it again on the same logdir resumes from the newest checkpoint. Returns the finished
    trainer (its `agent`, `counters` and `logdir`).
    """
    return trainerlib.train(config, logdir)


class TrainedAgent:
    """A restored agent with its config, ready to act.

    `agent` is the underlying Agent; `policy` is its compiled batch policy, `act` the same for a
    single environment's step dict (as returned by Env.reset/step).
    """

    def __init__(self, agent, config, logdir, checkpoint, env_steps):
        self.agent = agent
        self.config = config
        self.logdir = logdir
        self.checkpoint = checkpoint      # the checkpoint prefix that was restored
        self.env_steps = env_steps        # env steps the agent was trained for
        self._policy = framework.make_policy(agent, config)

    @property
    def obs_space(self):
        return self.agent.obs_space

    @property
    def act_space(self):
        return self.agent.act_space

    def summary(self):
        """Trainable parameters per module and in total, e.g. {'encoder': ..., 'total': ...}."""
        return self.agent.summary()

    def initial_state(self, batch_size=1):
        return self.agent.initial_state(batch_size)

    def policy(self, obs, state=None, mode='eval'):
        """Compiled Agent.policy for a batch: obs dict of [N, ...] with `is_first` [N].

        mode 'eval' takes the actor's mode, 'explore' samples it. state None starts fresh.
        Returns (action [N, A] tensor, state).
        """
        if state is None:
            state = self.agent.initial_state(len(obs['is_first']))
        return self._policy(obs, state, mode)

    def act(self, obs, state=None, mode='eval'):
        """One step in one environment: obs is a step dict; returns (action numpy [A], state)."""
        batch = driver.policy_batch([obs], self.agent.obs_space)
        action, state = self.policy(batch, state, mode)
        return np.asarray(action)[0], state

    def make_env(self, mode='eval', seed=None, render=False):
        """The agent's own environment from its saved config; seed defaults to the trainer's eval seed."""
        seed = self.config.seed + 10_000 if seed is None else seed
        return envlib.make_env(_local_env(self.config), seed, mode=mode, render=render)

    def __repr__(self):
        return (f'TrainedAgent({self.logdir!r}, task={self.config.env.task!r}, '
                f'env_steps={self.env_steps}, params={self.summary()["total"]})')


def _local_env(config):
    """The env section with `parallel` off: one evaluation env gains nothing from a worker process."""
    env = config.env.to_dict()
    if 'parallel' in env:
        env['parallel'] = False
    return env


def load(logdir, warn=print):
    """The agent of a training logdir, restored from its newest readable checkpoint.

    Reads `<logdir>/config.yaml`, builds the agent for that config's environment and restores
    `<logdir>/checkpoints`, falling back past corrupt checkpoints (each reported through `warn`).
    Raises LoadError or checkpoints.CheckpointError (both ValueErrors) with a message that says
    what is missing.
    """
    logdir = os.path.abspath(os.path.expanduser(os.fspath(logdir)))
    if not os.path.isdir(logdir):
        raise LoadError(f'logdir {logdir} does not exist')
    path = os.path.join(logdir, 'config.yaml')
    if not os.path.isfile(path):
        raise LoadError(f'{logdir} has no config.yaml, so it is not a dreamer_tf training logdir')
    config = configlib.Config.from_file(path)
    directory = os.path.join(logdir, 'checkpoints')
    if not checkpoints.list_checkpoints(directory):
        raise LoadError(f'{logdir} has no checkpoint in {directory}; train first (the trainer saves '
                        'every run.save_every env steps or run.save_minutes, and at the end of a run)')
    env = envlib.make_env(_local_env(config), config.seed, mode='eval')
    obs_space, act_space = env.obs_space, env.act_space
    env.close()
    # The trainer saves decided values; only a config.yaml written by hand still says `auto`.
    config = framework.resolve_auto(config, obs_space)
    framework.set_precision(config.precision)
    agent = framework.make_agent(config, obs_space, act_space)   # as the trainer built it
    counters = trainerlib.Counters()
    restored = checkpoints.restore_newest(trainerlib.make_checkpoint(agent, counters), directory, warn)
    return TrainedAgent(agent, config, logdir, restored, int(counters.env_steps.numpy()))
