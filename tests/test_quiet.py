"""Quiet start: which stderr lines the filter drops, and that it does so in a real process."""

import os
import pathlib
import subprocess
import sys

import pytest

from dreamer_tf.quiet import is_native_log

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Lines the quickstart printed on a CPU machine before the quiet start (TF 2.18.1).
NATIVE = [
    '2026-12-03 10:15:04.724412: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.',
    '2026-12-03 10:15:04.725198: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find '
    'cuda drivers on your machine, GPU will not be used.',
    '2026-12-03 10:15:04.738525: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:477] Unable '
    'to register cuFFT factory: Attempting to register factory for plugin cuFFT',
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
    'E0000 00:00:1796292904.754428   21623 cuda_dnn.cc:8310] Unable to register cuDNN factory',
    'E0000 00:00:1796292904.758674   21623 cuda_blas.cc:1418] Unable to register cuBLAS factory',
    '2026-12-03 10:15:04.776434: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow '
    'binary is optimized to use available CPU instructions in performance-critical operations.',
    'To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow '
    'with the appropriate compiler flags.',
    '2026-12-03 10:15:06.529772: E external/local_xla/xla/stream_executor/cuda/cuda_driver.cc:152] '
    'failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)',
    'I0000 00:00:1796292914.826560   21623 service.cc:148] XLA service 0x5593976c61a0 initialized',
    'I0000 00:00:1796292914.826617   21623 service.cc:156]   StreamExecutor device (0): Host',
    '2026-12-03 10:15:14.845304: W tensorflow/compiler/tf2xla/kernels/random_ops.cc:61] Warning: Using '
    'tf.random.uniform with XLA compilation will ignore seeds',
    'I0000 00:00:1796292916.056025   21623 device_compiler.h:188] Compiled cluster using XLA!',
]
# Lines that must get through: Python's own logging and warnings, fatal native errors, our output.
KEPT = [
    'W1203 10:15:04.123456 140234 checkpoint_management.py:12] absl-py logs from Python',
    'F0000 00:00:1796292914.826560   21623 cuda_driver.cc:10] a fatal native error',
    "/work/dreamer_tf/replay.py:383: UserWarning: skipping unreadable replay file 'a.npz'",
    'warning: checkpoint ckpt-600 could not be read (truncated); trying an older one',
    'Traceback (most recent call last):',
    '1,000/8,000 env steps | 1.05k env steps/s, score 22.9 | ETA 00:06',
]


@pytest.mark.parametrize('line', NATIVE)
def test_native_log_lines_are_dropped(line):
    assert is_native_log(line)


@pytest.mark.parametrize('line', KEPT)
def test_other_lines_are_kept(line):
    assert not is_native_log(line)


# Imports TensorFlow after the quiet start and compiles with XLA (the service and cluster lines), then
# writes a Python warning and a non-log native line, which must still show.
SCRIPT = '''
import os, sys, warnings
from dreamer_tf import quiet
quiet.start(verbose=sys.argv[1] == 'verbose')
import tensorflow as tf
tf.function(lambda x: x * 2 + tf.random.uniform([2], seed=1), jit_compile=True)(tf.ones(2))
warnings.warn('a real warning')
os.write(2, b'native text that is not a log line\\n')
'''


@pytest.mark.parametrize('mode', ['quiet', 'verbose'])
def test_tensorflow_start_is_quiet_unless_verbose(mode):
    env = {key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'}
    env['PYTHONPATH'] = str(ROOT)
    result = subprocess.run([sys.executable, '-c', SCRIPT, mode], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert 'UserWarning: a real warning' in result.stderr
    assert 'native text that is not a log line' in lines
    native = [line for line in lines if is_native_log(line)]
    # XLA's compile always logs through absl, so the verbose run shows that the filter had work to do.
    assert (native == []) if mode == 'quiet' else any('XLA' in line for line in native), native
