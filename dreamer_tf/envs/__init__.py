"""Environment adapters: every suite behind one Dreamer-facing `Env`.

    env = make_env({'suite': 'dmc', 'task': 'cartpole_balance', 'obs': 'proprio',
                    'size': [64, 64], 'action_repeat': 1, 'time_limit': 0}, seed=0)
    step = env.reset()          # {'vector', 'reward', 'is_first', 'is_last', 'is_terminal'}
    step = env.step(action)     # action: float32 vector of env.act_space.size

See base.py for the observation/action conventions and dmc.py for the
rendering requirements of vision tasks.
"""

from __future__ import annotations

from typing import Any, Mapping

from dreamer_tf.envs.base import ActionSpec, Env
from dreamer_tf.envs.config import EnvConfig, check_mode, parse_env_config
from dreamer_tf.envs.dmc import DMC_PROPRIO_TASKS, DMC_TASKS, DMC_VISION_TASKS, RenderingUnavailable

__all__ = [
    'ActionSpec', 'DMC_PROPRIO_TASKS', 'DMC_TASKS', 'DMC_VISION_TASKS', 'Env', 'EnvConfig',
    'RenderingUnavailable', 'make_env', 'parse_env_config',
]


def make_env(env_config: Mapping[str, Any], seed: int, mode: str = 'train') -> Env:
    """Builds the adapted environment described by an `env` config section.

    `seed` fixes the whole episode sequence. `mode` is 'train' or 'eval'; the
    two are identical for the current suites and the switch exists for suites
    whose evaluation protocol differs (e.g. Atari's sticky actions).
    """
    check_mode(mode)
    config = parse_env_config(env_config)
    if config.suite == 'dmc':
        from dreamer_tf.envs.dmc import make_dmc
        inner = make_dmc(config.task, seed=seed, obs=config.obs, size=config.size)
        # The paper's vision agent sees pixels only; proprio sees no pixels.
        inputs = ('image',) if config.obs == 'vision' else ('vector',)
    else:
        from dreamer_tf.envs.classic import make_classic
        inner = make_classic(config.task, obs=config.obs)
        inputs = ('vector', 'image')
    try:
        return Env(inner, seed=seed, action_repeat=config.action_repeat,
                   time_limit=config.time_limit, inputs=inputs)
    except Exception:
        inner.close()  # do not leak a GL context or simulator on a bad space
        raise
