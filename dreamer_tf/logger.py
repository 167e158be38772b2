"""Metrics output: averaged scalars to `<logdir>/metrics.jsonl` and TensorBoard, plus a console status line.

metrics.jsonl holds one JSON object per line: `{"step": 1000, "train/loss": 0.52, ...}`. Plain JSON has
no NaN or infinity, so a non-finite average is written as `null`; `read_metrics` turns it back into NaN.
"""

import json
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf
import tqdm

METRICS_FILE = 'metrics.jsonl'


def _to_float(name, value):
    """A Python float from a float, numpy value or scalar tensor; anything with more elements is an error."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    array = np.asarray(value)
    numeric = np.issubdtype(array.dtype, np.number) or array.dtype == bool
    if array.size != 1 or not numeric:
        raise ValueError(f"Metric '{name}' must be a numeric scalar, got {type(value).__name__} "
                         f"of shape {array.shape} and dtype {array.dtype}")
    return float(array.reshape(()))


def _repair_tail(path):
    """Cut a partial last line (a run killed mid-write) so appended lines start on a line of their own."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, 'rb+') as f:
        data = f.read()
        if data.endswith(b'\n'):
            return
        f.truncate(data.rfind(b'\n') + 1)


class Logger:
    """Accumulates scalars between writes and writes their averages at a step.

    A logdir that already has metrics.jsonl is appended to, so a resumed run continues its file.
    """

    def __init__(self, logdir, use_tensorboard=True):
        self.logdir = str(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        path = os.path.join(self.logdir, METRICS_FILE)
        _repair_tail(path)
        self._file = open(path, 'a', encoding='utf-8')
        self._writer = tf.summary.create_file_writer(self.logdir) if use_tensorboard else None
        self._sums = {}
        self._counts = {}

    def add(self, metrics, prefix=None):
        """Accumulate a dict of scalars under `prefix/key`; repeated keys are averaged on write."""
        for key, value in metrics.items():
            name = f'{prefix}/{key}' if prefix else str(key)
            if name == 'step':
                raise ValueError(
                    "Metric name 'step' is reserved for the step column of metrics.jsonl")
            value = _to_float(name, value)
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1

    def scalar(self, name, value):
        self.add({name: value})

    def image(self, name, image, step):
        """Write a uint8 image [H, W, C] to TensorBoard now (images do not go to metrics.jsonl)."""
        if self._writer is None:
            return
        with self._writer.as_default():
            tf.summary.image(name, np.asarray(image, np.uint8)[None], step=int(step))
        self._writer.flush()

    def write(self, step):
        """Write the averages of everything added since the last write at `step`, then reset."""
        if not self._sums:
            return
        step = int(step)
        means = {name: total / self._counts[name] for name, total in self._sums.items()}
        row = {'step': step}
        row.update({name: value if math.isfinite(value) else None for name, value in means.items()})
        # allow_nan=False guarantees the line stays valid JSON for other readers.
        self._file.write(json.dumps(row, allow_nan=False) + '\n')
        self._file.flush()
        if self._writer is not None:
            with self._writer.as_default():
                for name, value in means.items():
                    tf.summary.scalar(name, value, step=step)
            self._writer.flush()
        self._sums.clear()
        self._counts.clear()

    def close(self):
        """Close the files; values not yet written are dropped, as they have no step."""
        if not self._file.closed:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_metrics(logdir):
    """The rows of `<logdir>/metrics.jsonl` as dicts; nulls (non-finite values) come back as NaN.

    A truncated last line is skipped; a malformed line elsewhere means real corruption and raises.
    """
    path = os.path.join(str(logdir), METRICS_FILE)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    lines = text.split('\n')
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # No newline after it: the writer was killed mid-line.
                break
            raise ValueError(f'{path}:{number}: malformed metrics line {line[:80]!r}') from None
        rows.append({key: math.nan if value is None else value for key, value in row.items()})
    return rows


class FPS:
    """Steps per second between successive `update` calls."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._last = None

    def update(self, step):
        """The rate since the previous call, or None on the first call (no interval yet)."""
        now = self._clock()
        last, self._last = self._last, (step, now)
        if last is None or now <= last[1]:
            return None
        return (step - last[0]) / (now - last[1])


class Progress:
    """One console line: env steps done and total, env steps/s, updates/s, the mean score of the last
    10 episodes and the ETA, e.g. `12,000/50,000 env steps | 143 env steps/s, 4.5 updates/s, score 512.3 |
    ETA 04:26`, all formatted by tqdm.

    On a terminal a tqdm bar is redrawn in place. When stdout is a file or pipe (CI, cluster logs) the
    same text is printed as a plain line at most every `min_interval` seconds, and at the last step.
    """

    def __init__(self, total_steps, start=0, min_interval=10.0, clock=time.monotonic):
        self.total_steps = int(total_steps)
        self.start = int(start)              # a resumed run's first step, so rates count this run only
        self.min_interval = float(min_interval)
        self._clock = clock
        self._began = clock()
        self._last_print = None
        self._bar = None

    def format(self, step, fps=None, updates_per_sec=None, score=None):
        """The plain line for `step`; the ETA comes from `fps` (or the average rate when it is None)."""
        return tqdm.tqdm.format_meter(
            int(step), self.total_steps, self._clock() - self._began, rate=fps, initial=self.start,
            unit=' env steps', unit_scale=True, bar_format=LINE,
            postfix=_postfix(updates_per_sec, score))

    def update(self, step, fps=None, updates_per_sec=None, score=None):
        # sys.stdout is looked up per call so that redirection after construction (tests, notebooks) holds.
        if _is_tty(sys.stdout):
            self._redraw(step, updates_per_sec, score)
            return
        now = self._clock()
        final = int(step) >= self.total_steps
        if not final and self._last_print is not None and now - self._last_print < self.min_interval:
            return
        self._last_print = now
        sys.stdout.write(self.format(step, fps, updates_per_sec, score) + '\n')
        sys.stdout.flush()

    def _redraw(self, step, updates_per_sec, score):
        if self._bar is None:   # made on first use: tqdm draws as soon as it exists
            self._bar = tqdm.tqdm(total=self.total_steps, initial=self.start, unit=' env steps',
                                  unit_scale=True, bar_format='{percentage:3.0f}%|{bar:16}| ' + LINE,
                                  file=sys.stdout, dynamic_ncols=True, mininterval=0)
        self._bar.set_postfix_str(_postfix(updates_per_sec, score) or '', refresh=False)
        self._bar.update(int(step) - self._bar.n)

    def close(self):
        """End the in-place line so that later output starts on a fresh line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# tqdm's format fields; `n` and `total` unformatted so that step counts read 12,000 rather than 12.0k.
LINE = '{n:,}/{total:,} env steps | {rate_fmt}{postfix} | ETA {remaining}'


def _postfix(updates_per_sec, score):
    parts = []
    if updates_per_sec is not None:
        parts.append(f'{updates_per_sec:.1f} updates/s')
    if score is not None:
        parts.append(f'score {score:.1f}')
    return ', '.join(parts) or None


def _is_tty(stream):
    isatty = getattr(stream, 'isatty', None)
    return bool(isatty and isatty())

