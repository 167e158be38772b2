"""The only module that knows devices: precision, loss scaling, tf.distribute replicas and XLA.

The agent gets what it needs through its constructor (a loss scaling, a gather over the batch) and
one `Agent.train_step` serves one device and many: `Replicas.run` is where they differ. `jit: auto`
and `precision: auto` are decided here too (`resolve_auto`, with dreamer_tf/hardware.py's rules).
"""

import functools

import keras
import tensorflow as tf

from dreamer_tf import config as configlib
from dreamer_tf import hardware
from dreamer_tf.agent import Agent, Unscaled
from dreamer_tf.optim import DynamicLossScale

# Parameters, losses and distributions stay float32 in all three.
PRECISIONS = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16', 'float16': 'mixed_float16'}
MEAN = tf.distribute.ReduceOp.MEAN
# Keys whose `auto` is decided for the machine and the observations when a run starts (resolve_auto).
AUTO_KEYS = ('jit', 'precision')


def resolve_auto(config, obs_space, gpu=None, amx=None):
    """`config` with `jit` a bool and `precision` a compute dtype: each `auto` decided for this machine
    (a GPU, a CPU with AMX: dreamer_tf/hardware.py) and these observations (images: an `image` key in
    `obs_space`). Explicit values pass through; `gpu` and `amx` default to what the machine has."""
    if all(config[key] != 'auto' for key in AUTO_KEYS):
        return config
    gpu = hardware.has_gpu() if gpu is None else gpu
    amx = hardware.has_amx() if amx is None else amx
    return config.update({'jit': hardware.resolve_jit(config.jit, 'image' in obs_space, gpu),
                          'precision': hardware.resolve_precision(config.precision, gpu, amx)})


def set_precision(name):
    if name == 'auto':
        raise configlib.ConfigError("precision 'auto' is decided by framework.resolve_auto first")
    if name not in PRECISIONS:
        raise configlib.ConfigError(f"precision '{name}' is not one of {sorted(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(PRECISIONS[name])


class ScaledLoss(DynamicLossScale):
    """float16's loss scaling: gradients below float16's range would flush to zero unscaled."""

    def scale_loss(self, loss):
        return loss * self.scale

    def unscale(self, grads):
        return [g / self.scale for g in grads]

    def skipped(self, finite):
        """An overflow above scale 1 only halves the scale; at scale 1 it is a real skip."""
        skipped = 1.0 - tf.cast(finite, tf.float32)
        overflow = skipped * tf.cast(self.scale > 1.0, tf.float32)
        self.update(finite)
        return skipped - overflow, {'loss_scale': tf.identity(self.scale), 'overflow': overflow}


def loss_scaling(precision):
    """bfloat16 has float32's exponent range, so only float16 scales its loss."""
    return ScaledLoss() if precision == 'float16' else Unscaled()


def make_strategy(config):
    """none: one device. mirrored: `distribute.devices` (all GPUs when empty). multi_worker: the
    cluster in TF_CONFIG, every worker running the same command (config.py checks the choice)."""
    name, devices = config.distribute.strategy, list(config.distribute.devices)
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


def is_distributed(strategy):
    return strategy is not None and strategy.num_replicas_in_sync > 1


class OneDevice:
    """Everything runs in place on the one device."""

    compiles = True
    gather = staticmethod(tf.identity)

    def run(self, fn, data):
        return fn(data)

    def share(self, batch_size):
        return batch_size

    def split(self, batch):
        return batch


class DataParallel:
    """Each replica takes an equal slice of the global batch, so the mean of the replicas' gradients
    is the gradient of the global-batch mean; the optimiser applies it once, cross-replica."""

    # XLA clusters on the CPU do not compile the all-gather collective.
    compiles = False

    def __init__(self, strategy):
        self.strategy = strategy
        self.local = len(strategy.extended.worker_devices)

    @staticmethod
    def gather(x):
        """The rows of x from every replica, so batch statistics see the global batch."""
        return tf.distribute.get_replica_context().all_gather(x, axis=0)

    def run(self, fn, data):
        """fn on every replica's slice; the mean of its outputs over the replicas."""
        out = self.strategy.run(tf.function(fn), (data,))
        return tf.nest.map_structure(lambda v: self.strategy.reduce(MEAN, v, axis=None), out)

    def share(self, batch_size):
        """This worker's share of the global batch: its local replicas' slices."""
        return batch_size // self.strategy.num_replicas_in_sync * self.local

    def split(self, batch):
        """A worker's batch (dict of [B_local, ...] arrays) over its local replicas."""
        size = len(next(iter(batch.values()))) // self.local

        def part(context):
            i = context.replica_id_in_sync_group % self.local
            return {k: tf.constant(v[i * size:(i + 1) * size]) for k, v in batch.items()}

        return self.strategy.experimental_distribute_values_from_function(part)


def make_replicas(strategy=None):
    return DataParallel(strategy) if is_distributed(strategy) else OneDevice()


def make_agent(config, obs_space, act_space, strategy=None):
    """The agent built in the strategy's scope, with this precision's loss scaling and the
    replicas' gather."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        return Agent(config, obs_space, act_space, loss_scale=loss_scaling(config.precision),
                     gather=make_replicas(strategy).gather)


def make_train_step(agent, config, strategy=None):
    """The compiled update: loss, gradients and optimiser step in one function."""
    replicas = make_replicas(strategy)
    step = functools.partial(agent.train_step, run=replicas.run)
    return tf.function(step, jit_compile=_jit(config) and replicas.compiles)


def make_policy(agent, config):
    return tf.function(agent.policy, jit_compile=_jit(config))


def _jit(config):
    if not isinstance(config.jit, bool):
        raise configlib.ConfigError(f"jit {config.jit!r} is decided by framework.resolve_auto first")
    return config.jit


def device_name(strategy):
    """`CPU`, or the GPU model with a count when the strategy spans several, e.g. `2x NVIDIA H100`."""
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
        return 'CPU'
    name = tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    return f'{replicas}x {name}' if replicas > 1 else name
