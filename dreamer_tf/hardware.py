"""What the machine offers, and the `auto` choices of XLA and precision that follow from it.

On a GPU both follow the paper's runs: XLA everywhere and bfloat16. On a CPU they follow what
benchmarks/train_speed.py measured: XLA for vector observations but not for images (XLA's CPU
convolutions ran about 5x slower than oneDNN's), and float32, since bfloat16 ran slower than float32
on CPUs without AMX. bfloat16 is chosen on a CPU with AMX, where its matmuls are native (not measured
here: no AMX machine has been lent).

`jit: auto` and `precision: auto` are the defaults (configs/base.yaml). framework.resolve_auto applies
these rules when a run starts; the trainer saves the decision in the logdir's config.yaml, and a resumed
run keeps it (trainer.check_logdir_config).
"""

import functools

import tensorflow as tf


@functools.cache
def cpu_flags(path='/proc/cpuinfo'):
    """The CPU's feature flags (Linux), or an empty set where they cannot be read."""
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.partition(':')[2].split())
    except OSError:
        pass
    return frozenset()


def has_amx():
    return 'amx_bf16' in cpu_flags()


def has_gpu():
    return bool(tf.config.list_physical_devices('GPU'))


def resolve_jit(jit, image_obs, gpu):
    """`jit: auto|true|false` as a bool."""
    if jit != 'auto':
        return bool(jit)
    return gpu or not image_obs


def resolve_precision(precision, gpu, amx):
    """`precision: auto|float32|bfloat16|float16` as a concrete precision."""
    if precision != 'auto':
        return precision
    return 'bfloat16' if gpu or amx else 'float32'
