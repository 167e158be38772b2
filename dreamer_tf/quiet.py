"""A quiet start: TensorFlow's native (C++) logging kept off the console unless --verbose.

Two loggers write from TensorFlow's C++ side. TensorFlow's own (`2026-01-01 10:00:00.1: I file.cc:12] ..`:
oneDNN and cpu_feature notices, `failed call to cuInit`, the XLA seed warning) obeys
TF_CPP_MIN_LOG_LEVEL, read once when TensorFlow is imported. The XLA and CUDA code logs through absl
(`E0000 00:00:1796.7  21623 cuda_dnn.cc:8310] Unable to register cuDNN factory`, the XLA service
lines), which writes everything logged before `absl::InitializeLog()` to stderr whatever the level
(tensorflow/tensorflow#100442) and which no one calls. So `start()` sets the level and puts a filter
on file descriptor 2 that drops native log lines of severity I, W and E and passes everything else.
Python's own stderr (warnings, tracebacks) bypasses the filter, and a real GPU stays visible:
nothing hides devices.

Run as a script, this file is the filter itself: stdin to stdout, line by line.
"""

import os
import re
import subprocess
import sys

# Native log lines below FATAL: absl's `E0000 00:00:1796.75  21623 cuda_dnn.cc:8310] ` and
# TensorFlow's `2026-12-03 10:15:04.724412: I tensorflow/core/util/port.cc:153] `; the source file is
# C++, which keeps absl-py's Python log lines (same prefix, a .py file) out of the match.
NATIVE_LOG = re.compile(
    r'(?:[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ |\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: [IWE] )'
    r'[\w./-]+\.(?:cc|cpp|h):\d+\] ')
# Lines that belong to a native log line: absl's pre-init notice and cpu_feature_guard's second line.
NATIVE_EXTRA = ('WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
                'To enable the following instructions: ')

_filter = None   # the filter process; kept so that it is not garbage-collected while running


def is_native_log(line):
    """Whether `line` is a TensorFlow / absl / XLA C++ log line below FATAL (or part of one)."""
    return bool(NATIVE_LOG.match(line)) or line.startswith(NATIVE_EXTRA)


def start(verbose=False):
    """Silence TensorFlow's native start-up logging; call before TensorFlow is imported.

    With `verbose` nothing changes. An explicit TF_CPP_MIN_LOG_LEVEL in the environment is kept.
    """
    if verbose:
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    if os.name == 'posix' and _filter is None:
        _filter_native_stderr()


def _filter_native_stderr():
    """Route fd 2 through a filter process; Python's sys.stderr keeps the original stream."""
    global _filter
    sys.stderr.flush()
    try:
        original = os.dup(2)
        read, write = os.pipe()
    except OSError:   # no usable stderr (a daemon): nothing to keep quiet
        return
    # A separate process, not a thread, so that the lines before a crash still get through.
    _filter = subprocess.Popen([sys.executable, '-I', '-S', os.path.abspath(__file__)],
                               stdin=read, stdout=original, close_fds=True)
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = open(original, 'w', buffering=1, encoding=sys.stderr.encoding,  # noqa: SIM115
                      errors='backslashreplace')


def _forward(source, sink):
    """Copy the lines of `source` to `sink` (binary streams), leaving out native log lines."""
    for line in source:
        if not is_native_log(line.decode('utf-8', 'replace')):
            sink.write(line)
            sink.flush()


if __name__ == '__main__':
    _forward(sys.stdin.buffer, sys.stdout.buffer)
