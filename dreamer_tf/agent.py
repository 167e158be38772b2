"""DreamerV3 agent: world model + actor-critic + one optimiser. Pure math, no devices.

The trainer compiles `policy` and `train_step`; this module only defines what they compute.
"""

import tensorflow as tf

from dreamer_tf import nets
from dreamer_tf.behavior import ActorCritic
from dreamer_tf.optim import LaProp
from dreamer_tf.world_model import WorldModel

sg = tf.stop_gradient


class Agent(tf.Module):

    def __init__(self, config, obs_space, act_space, name='agent'):
        super().__init__(name=name)
        self.config = config
        self.obs_space, self.act_space = dict(obs_space), act_space
        self.wm = WorldModel(config, obs_space, act_space.size, name='wm')
        self.ac = ActorCritic(config, self.wm.rssm.feat_dim, act_space, name='ac')
        self.train_vars = self.wm.trainable_variables + self.ac.actor.trainable_variables + \
            self.ac.critic.trainable_variables
        self.opt = LaProp(self.train_vars, **config.opt)
        # Keras 3 layers kept in Python lists are invisible to tf.train.Checkpoint, so every
        # network weight is also tracked here under a unique path (what checkpoints save).
        layers = {'wm': self.wm, 'actor': self.ac.actor, 'critic': self.ac.critic,
                  'slow_critic': self.ac.slow_critic}
        self.weights_by_path = {}
        for name, layer in layers.items():
            named = nets.named_weights(layer, name + '/')
            if len(named) != len(layer.weights):
                raise ValueError(f'{name}: {len(layer.weights)} weights but {len(named)} named')
            self.weights_by_path.update(named)

    # -- acting -------------------------------------------------------------------------------

    def initial_state(self, batch_size):
        """Policy carry: the latent state and the previous action of each environment."""
        return dict(latent=self.wm.rssm.initial(batch_size),
                    action=tf.zeros([batch_size, self.act_space.size]))

    def policy(self, obs, state, mode='train'):
        """One acting step for a batch of environments.

        obs: dict of [N, ...] observations with `is_first` [N]; mode 'train' samples the actor,
        'eval' takes its mode. Returns (action [N, A], state). (Prefill's uniform random actions
        come from the trainer, which does not run the model for them.)
        """
        embed = self.wm.encoder(obs)
        latent, _ = self.wm.rssm.obs_step(state['latent'], state['action'], embed, obs['is_first'])
        dist = self.ac.actor(self.wm.rssm.get_feat(latent))
        if mode not in ('train', 'eval'):
            raise ValueError(f"policy mode '{mode}' is not one of ['eval', 'train']")
        action = dist.mode() if mode == 'eval' else dist.sample()
        if not self.act_space.discrete:
            action = tf.clip_by_value(action, -1.0, 1.0)
        action = sg(action)
        return action, dict(latent=latent, action=action)

    # -- learning -----------------------------------------------------------------------------

    def loss(self, data):
        """Total loss of one replayed batch: the scaled means of every loss term."""
        wm_losses, post, metrics = self.wm.loss(data)
        ctx = self.config.replay_context
        rest = {k: v[:, ctx:] for k, v in data.items()}
        ac_losses, ac_metrics = self.ac.loss(self.wm, post, rest)
        metrics.update(ac_metrics)
        total = 0.0
        scales = self.config.loss
        for name, value in {**wm_losses, **ac_losses}.items():
            mean = tf.reduce_mean(value)
            scale = self.wm.loss_scale(name) if name in wm_losses else scales[name]
            total += scale * mean
            metrics[f'loss/{name}'] = mean
        metrics['loss/total'] = total
        return total, metrics

    def compute_gradients(self, data):
        with tf.GradientTape() as tape:
            total, metrics = self.loss(data)
        grads = tape.gradient(total, self.train_vars)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.train_vars)]
        return grads, metrics

    def apply_gradients(self, grads):
        metrics = self.opt.apply(grads)
        self.ac.update_slow_critic(self.opt.step)
        return metrics

    def train_step(self, data):
        grads, metrics = self.compute_gradients(data)
        metrics.update(self.apply_gradients(grads))
        return metrics

    def summary(self):
        parts = {'encoder': self.wm.encoder, 'rssm': self.wm.rssm, 'decoder': self.wm.decoder,
                 'reward': self.wm.reward, 'cont': self.wm.cont, 'actor': self.ac.actor,
                 'critic': self.ac.critic}
        counts = {k: nets.count_params(v) for k, v in parts.items()}
        counts['total'] = sum(counts.values())
        return counts
