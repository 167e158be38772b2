"""Builds Dreamer 4's three networks from one resolved `dreamer4` config (configs/dreamer4.yaml)."""

import types

from dreamer_tf.dreamer4.agent import AgentHeads
from dreamer_tf.dreamer4.dynamics import Dynamics
from dreamer_tf.dreamer4.tokenizer import Tokenizer


def build(config):
    """(tokenizer, dynamics, heads) as a namespace; the dynamics reads the tokenizer's latent shape."""
    tok = config.tokenizer
    tokenizer = Tokenizer(**tok, name='tokenizer')
    layer = _without(config.dynamics, 'sample_steps')
    dynamics = Dynamics(tok.latents, tok.bottleneck, config.actions, **layer, name='dynamics')
    heads = AgentHeads(config.dynamics.dim, config.actions, **config.heads, name='heads')
    return types.SimpleNamespace(tokenizer=tokenizer, dynamics=dynamics, heads=heads)


def _without(section, *keys):
    """A config section as a dict, less the keys that are settings of a caller, not of the layer."""
    return {key: value for key, value in section.items() if key not in keys}
