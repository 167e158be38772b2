"""Dreamer 4 (Hafner, Yan, Lillicrap 2025) at laptop scale: a causal tokenizer, an interactive dynamics
model trained by shortcut forcing, and the agent's behaviour-cloning, reward and PMPO objectives.

Modules: transformer (masks and the space/time transformer), tokenizer, shortcut (the shortcut forcing
equations as pure functions), dynamics, agent (heads and losses), model (builds all from a config).
Tensors are batch-major, [B, T, ...], as in the rest of the library.
"""

from dreamer_tf.dreamer4.agent import (AgentHeads, bc_loss, categorical_kl, mtp_bc_loss, mtp_targets,
                                      pmpo_loss)
from dreamer_tf.dreamer4.dynamics import Dynamics
from dreamer_tf.dreamer4.model import build
from dreamer_tf.dreamer4.tokenizer import Tokenizer

__all__ = ['AgentHeads', 'Dynamics', 'Tokenizer', 'bc_loss', 'build', 'categorical_kl', 'mtp_bc_loss',
           'mtp_targets', 'pmpo_loss']
