"""Declared values of the config keys: a range for every number, the allowed values of every choice.

The first full-match pattern of a key rules. config.load checks them after resolving, so a bad value stops
a run before its logdir exists.
"""

import re

# The allowed range of every numeric key, by full-match pattern; the first matching pattern rules.
_AT_LEAST_1 = ('an integer >= 1', lambda v: v >= 1)
_NONNEGATIVE = ('a number >= 0', lambda v: v >= 0)
_POSITIVE = ('a number > 0', lambda v: v > 0)
_PROBABILITY = ('a number in [0, 1]', lambda v: 0 <= v <= 1)
_DISCOUNT = ('a number in (0, 1]', lambda v: 0 < v <= 1)
_BETA = ('a number in [0, 1)', lambda v: 0 <= v < 1)
_PERCENT = ('a number in [0, 100]', lambda v: 0 <= v <= 100)
RANGES = (
    (r'batch_size|batch_length|replay\.capacity|env\.(num_envs|action_repeat)', _AT_LEAST_1),
    (r'rssm\.(deter|hidden|stoch|classes|blocks|imag_unroll)', _AT_LEAST_1),
    (r'.*\.(units|depth|kernel|bins|minres)', _AT_LEAST_1),
    (r'behavior\.(horizon|imag_length)', _AT_LEAST_1),
    (r'run\.(steps|log_every|eval_episodes|keep_checkpoints|max_nonfinite_updates)', _AT_LEAST_1),
    (r'run\.train_ratio|.*\.(lr|eps)|opt\.(agc|pmin)|env\.step_timeout|retnorm\.limit', _POSITIVE),
    (r'actor\.(minstd|maxstd|mean_scale)|rssm\.min_std', _POSITIVE),
    (r'.*\.unimix|loss\.kl_balance|behavior\.(return_lambda|slow_critic_rate|actor_grad_.*)',
     _PROBABILITY),
    (r'env\.atari\.sticky|retnorm\.rate', _PROBABILITY),
    (r'behavior\.discount', _DISCOUNT),
    (r'opt\.beta[12]', _BETA),
    (r'retnorm\.perc(lo|hi)', _PERCENT),
    (r'loss\..*|.*\.(layers|outscale|init_std|wd|clip)|rssm\.(img|obs|dyn)_layers', _NONNEGATIVE),
    (r'decoder\.bspace|behavior\.(actent|expl_noise|slow_critic_every|slowreg)', _NONNEGATIVE),
    (r'run\.(train_every|prefill|pretrain|eval_every|report_every|save_every|save_minutes)', _NONNEGATIVE),
    (r'opt\.warmup|run\.actor_after', _NONNEGATIVE),
    (r'env\.(time_limit|atari\.noops)|replay_context|seed', _NONNEGATIVE),
)


def _table(text):
    """Rows of 'pattern value value ...' -> ((pattern, (value, ...)), ...)."""
    return tuple((row.split()[0], tuple(row.split()[1:])) for row in text.strip().splitlines())


# The allowed values of every choice (string) key but env.task: full-match pattern, then the values. A
# key whose choices include `true` and `false` is a switch that also takes a string (config._coerce):
# YAML's true/false are bools there, and `auto` is decided when a run starts (framework.resolve_auto).
CHOICES = _table(r"""
precision                   auto float32 bfloat16 float16
jit                         auto true false
distribute\.strategy        none mirrored multi_worker
env\.suite                  dmc gym atari crafter
env\.obs                    proprio vision
env\.atari\.actions         minimal full
env\.atari\.lives           unused reset
rssm\.latent                categorical gaussian
rssm\.core                  block_gru norm_gru gru
.*\.norm                    rms layer none
.*\.act                     silu elu relu tanh none
loss\.kl_form               dyn_rep balance v1
loss\.reward_transform      none tanh
encoder\.style              v3 strided
decoder\.style              v3 transposed
decoder\.vector_dist        mse normal
(reward_head|critic)\.dist  twohot unit_normal mse
actor\.dist_cont            normal trunc_normal tanh_normal
behavior\.gamma_from        horizon discount
behavior\.return_critic     online slow
behavior\.weight            inclusive exclusive
behavior\.return_form       next current
behavior\.first_discount    model replay
behavior\.return_norm       percentile none
""")


def _first_match(table, key):
    return next((rule for pattern, rule in table if re.fullmatch(pattern, key)), None)


def value_range(key):
    """(description, check) of a numeric key's allowed values, or None when no range is declared."""
    return _first_match(RANGES, key)


def value_choices(key):
    """The allowed values of a choice key, or None when any string goes."""
    return _first_match(CHOICES, key)


def is_switch(key):
    """Whether `key` is a switch that also takes strings: a bool, or one of its other choices (`auto`)."""
    allowed = value_choices(key)
    return bool(allowed) and {'true', 'false'} <= set(allowed)


def violation(key, value):
    """'allowed: ...' when `value` lies outside the declared values of `key`, else None."""
    if isinstance(value, str):
        allowed = value_choices(key)
        return f"one of {', '.join(allowed)}" if allowed and value not in allowed else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rule = value_range(key)
        return rule[0] if rule and not rule[1](value) else None
    return None
