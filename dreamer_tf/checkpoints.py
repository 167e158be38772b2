"""Checkpoints on disk: which ones exist, a save that never damages the last good one, and a restore
that falls back past a corrupt newest one.

The manager renames its small `checkpoint` state file into place only after the data and index files
are written, so that rename is the commit point of a save. Damage found later (truncation, bit rot)
fails TensorFlow's per-tensor CRC on restore; an unreadable state file falls back to the `*.index`
files on disk.
"""

import glob
import os
import re
import shutil

import tensorflow as tf
from google.protobuf.message import DecodeError

# What a damaged checkpoint raises on restore (a short file: IndexError; a garbled graph: DecodeError).
_READ_ERRORS = (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError, DecodeError)
# tf.train.CheckpointManager's file prefix: <directory>/ckpt-<number>.index and .data-*.
CHECKPOINT_NAME = 'ckpt'


class CheckpointError(ValueError):
    """No checkpoint in a directory could be restored (or there was none)."""


class NonFiniteError(RuntimeError):
    """Training produced non-finite values: too many skipped updates in a row, or non-finite weights."""


def list_checkpoints(directory):
    """Checkpoint prefixes in `directory`, oldest first.

    The manager's state file gives the order. Checkpoints on disk that it does not name (a save
    interrupted before its commit, or a state file that is missing or unreadable) come first, by
    number, so they are only tried once every committed one has failed.
    """
    listed = _state_paths(directory)
    found = [os.path.normpath(p[:-len('.index')]) for p in glob.glob(os.path.join(directory, '*.index'))]
    unlisted = sorted((p for p in found if p not in listed), key=_number)
    return [p for p in unlisted + listed if os.path.exists(p + '.index')]


def _state_paths(directory):
    """The prefixes that the `checkpoint` state file names, oldest first ([] if it cannot be read)."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError, UnicodeDecodeError):
        state = None
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    return [os.path.normpath(os.path.join(directory, p)) for p in paths if p]


def _number(prefix):
    match = re.search(r'-(\d+)$', prefix)
    return int(match.group(1)) if match else -1


def restore_newest(checkpoint, directory, warn=print):
    """Restore `checkpoint` from the newest readable checkpoint in `directory`.

    Returns the prefix restored, or None when the directory holds no checkpoint. Raises
    CheckpointError when checkpoints exist but none of them can be read.
    """
    paths = list_checkpoints(directory)
    failures = []
    for path in reversed(paths):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except _READ_ERRORS as error:
            reason = _reason(error)
            failures.append(f'{os.path.basename(path)}: {reason}')
            warn(f'warning: checkpoint {path} could not be read ({reason}); trying an older one')
            continue
        return path
    if failures:
        raise CheckpointError(f'no readable checkpoint in {directory}; tried ' + '; '.join(failures))
    return None


def save(manager, number):
    """Write checkpoint `number` through `manager` and return its prefix.

    If the write fails (disk full, I/O error), the files it left behind are removed unless the state
    file already names that prefix, and an OSError says what failed. The checkpoints committed before
    stay as they were.
    """
    try:
        return manager.save(checkpoint_number=number)
    except (tf.errors.OpError, OSError) as error:
        prefix = os.path.normpath(os.path.join(manager.directory, f'{CHECKPOINT_NAME}-{number}'))
        if prefix not in _state_paths(manager.directory):
            _remove_partial(prefix)
        committed = [p for p in _state_paths(manager.directory) if p != prefix]
        kept = f'the last good checkpoint {committed[-1]} is intact' if committed else 'no earlier checkpoint'
        raise OSError(f'cannot write checkpoint {prefix} ({_reason(error)}); {kept}') from error


def non_finite(variables):
    """The names in {name: variable} of floating-point variables that hold NaN or inf."""
    return [name for name, v in variables.items()
            if tf.as_dtype(v.dtype).is_floating and not bool(tf.reduce_all(tf.math.is_finite(v)))]


def save_finite(manager, number, variables):
    """`save`, unless a variable of {name: variable} holds NaN or inf: then NonFiniteError, and
    nothing is written, so the last good checkpoint stays the newest."""
    bad = non_finite(variables)
    if bad:
        raise NonFiniteError(f'not saving a checkpoint at step {number}: {len(bad)} variables hold NaN '
                             f'or inf (first: {bad[0]}); the checkpoints on disk are untouched')
    return save(manager, number)


def _reason(error):
    """The first line of an error's message, without TensorFlow's `{{function_node ...}}` prefix."""
    text = re.sub(r'\{\{.*?\}\}\s*', '', str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _remove_partial(prefix):
    for path in glob.glob(glob.escape(prefix) + '.*') + glob.glob(glob.escape(prefix) + '_temp*'):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
