"""Checkpoint files on disk: corrupt, truncated or half-written checkpoints never cost the last good one.

Every fault here is real: files are truncated or overwritten on disk, and a full disk is a real
write error from the kernel (RLIMIT_FSIZE makes writes past a size fail with EFBIG, which reaches
TensorFlow's writer exactly like ENOSPC would).
"""

import contextlib
import errno
import os
import resource
import signal

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import checkpoints

SIZE = 50_000          # floats per variable: each checkpoint's data file is about 400 kB


def make_state(value):
    state = tf.Module()
    state.weights = tf.Variable(tf.fill([SIZE], float(value)))
    state.moments = [tf.Variable(tf.fill([SIZE], float(value) * 2))]
    state.step = tf.Variable(int(value), dtype=tf.int64)
    return state


def value_of(state):
    assert np.all(state.weights.numpy() == state.weights.numpy()[0])
    assert np.all(state.moments[0].numpy() == 2 * state.weights.numpy()[0])
    assert int(state.step.numpy()) == state.weights.numpy()[0]
    return int(state.step.numpy())


@pytest.fixture
def saved(tmp_path):
    """A directory with checkpoints 1, 2 and 3 whose variables all hold 1, 2 and 3."""
    state = make_state(0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(state=state), str(tmp_path), max_to_keep=3)
    for number in (1, 2, 3):
        for var in (state.weights, state.moments[0], state.step):
            var.assign(tf.cast(tf.fill(var.shape, number * (2 if var is state.moments[0] else 1)), var.dtype))
        checkpoints.save(manager, number)
    return tmp_path


def restore(directory):
    """(value restored, warnings) for a fresh state restored from `directory`."""
    warnings = []
    state = make_state(-1)
    path = checkpoints.restore_newest(tf.train.Checkpoint(state=state), str(directory), warnings.append)
    return (value_of(state) if path else None), warnings


def files(directory):
    return {name: (directory / name).read_bytes() for name in os.listdir(directory)
            if (directory / name).is_file()}


def test_restores_the_newest(saved):
    assert [os.path.basename(p) for p in checkpoints.list_checkpoints(str(saved))] == \
        ['ckpt-1', 'ckpt-2', 'ckpt-3']
    assert restore(saved) == (3, [])


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def flip_bytes(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(255 - b for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    'data truncated to half': lambda d: truncate(d / 'ckpt-3.data-00000-of-00001'),
    'data emptied': lambda d: truncate(d / 'ckpt-3.data-00000-of-00001', 0),
    'data bytes flipped': lambda d: flip_bytes(d / 'ckpt-3.data-00000-of-00001'),
    'data deleted': lambda d: (d / 'ckpt-3.data-00000-of-00001').unlink(),
    'index truncated to half': lambda d: truncate(d / 'ckpt-3.index'),
    'index emptied': lambda d: truncate(d / 'ckpt-3.index', 0),
    'index overwritten with text': lambda d: (d / 'ckpt-3.index').write_bytes(b'not a checkpoint index'),
}


@pytest.mark.parametrize('corruption', list(CORRUPTIONS))
def test_corrupt_newest_falls_back_to_the_previous_with_a_warning(saved, corruption):
    CORRUPTIONS[corruption](saved)
    value, warnings = restore(saved)
    assert value == 2
    assert len(warnings) == 1 and 'ckpt-3' in warnings[0] and 'could not be read' in warnings[0]


def test_two_corrupt_checkpoints_fall_back_twice(saved):
    truncate(saved / 'ckpt-3.data-00000-of-00001')
    flip_bytes(saved / 'ckpt-2.data-00000-of-00001')
    value, warnings = restore(saved)
    assert value == 1 and len(warnings) == 2


def test_all_corrupt_is_an_error_naming_each(saved):
    for number in (1, 2, 3):
        truncate(saved / f'ckpt-{number}.index')
    with pytest.raises(checkpoints.CheckpointError, match='no readable checkpoint') as error:
        restore(saved)
    for number in (1, 2, 3):
        assert f'ckpt-{number}' in str(error.value)


STATE_FILE_FAULTS = {
    'garbage': lambda p: p.write_bytes(b'\x00\xff garbage {{{ not a proto'),
    'cut mid-line': lambda p: truncate(p, 0.3),
    'emptied': lambda p: truncate(p, 0),
    'deleted': lambda p: p.unlink(),
    'names missing files': lambda p: p.write_text('model_checkpoint_path: "ckpt-9"\n'
                                                 'all_model_checkpoint_paths: "ckpt-9"\n'),
}


@pytest.mark.parametrize('fault', list(STATE_FILE_FAULTS))
def test_damaged_state_file_falls_back_to_the_files_on_disk(saved, fault):
    STATE_FILE_FAULTS[fault](saved / 'checkpoint')
    assert [os.path.basename(p) for p in checkpoints.list_checkpoints(str(saved))][-1] == 'ckpt-3'
    assert restore(saved)[0] == 3


def test_damaged_state_file_and_corrupt_newest_still_fall_back(saved):
    (saved / 'checkpoint').write_bytes(b'\x00garbage')
    truncate(saved / 'ckpt-3.data-00000-of-00001')
    assert restore(saved)[0] == 2


def test_uncommitted_checkpoint_is_tried_only_after_the_committed_ones(saved):
    # A save killed before its commit: ckpt-4's files exist, the state file does not name them.
    for suffix in ('.index', '.data-00000-of-00001'):
        (saved / f'ckpt-4{suffix}').write_bytes((saved / f'ckpt-3{suffix}').read_bytes()[:100])
    names = [os.path.basename(p) for p in checkpoints.list_checkpoints(str(saved))]
    assert names == ['ckpt-4', 'ckpt-1', 'ckpt-2', 'ckpt-3']
    assert restore(saved) == (3, [])


@contextlib.contextmanager
def file_size_limit(limit):
    """Writes past `limit` bytes of any file fail with EFBIG (a full disk, as far as the writer sees)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # fail the write, don't kill us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_disk_full_during_save_keeps_the_last_good_checkpoint(saved):
    state = make_state(4)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(state=state), str(saved), max_to_keep=3)
    before = files(saved)
    with file_size_limit(64_000), pytest.raises(OSError, match='cannot write checkpoint') as error:
        checkpoints.save(manager, 4)
    message = str(error.value)
    assert 'ckpt-4' in message and 'File too large' in message and 'ckpt-3 is intact' in message
    assert isinstance(error.value.__cause__, tf.errors.OpError)
    assert files(saved) == before, 'a failed save changed or left files'
    assert sorted(os.listdir(saved)) == sorted(before), 'partial files were left behind'
    assert restore(saved) == (3, [])
    # With space again, the same manager saves normally and the new checkpoint is the newest.
    checkpoints.save(manager, 4)
    assert restore(saved) == (4, [])


def test_disk_full_while_replacing_a_checkpoint_of_the_same_number(saved):
    # After a fallback past a corrupt ckpt-3, the resumed run later saves ckpt-3 again.
    truncate(saved / 'ckpt-3.data-00000-of-00001')
    state = make_state(3)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(state=state), str(saved), max_to_keep=3)
    with file_size_limit(64_000), pytest.raises(OSError, match='cannot write checkpoint'):
        checkpoints.save(manager, 3)
    assert restore(saved)[0] == 2
    checkpoints.save(manager, 3)
    assert restore(saved) == (3, [])


def test_efbig_is_what_the_limit_raises(tmp_path):
    # Guards the premise of the disk-full tests: the limit makes a plain write fail, not the process.
    with file_size_limit(1000), pytest.raises(OSError) as error:
        (tmp_path / 'big').write_bytes(b'x' * 5000)
    assert error.value.errno == errno.EFBIG


# ---------------------------------------------------------------------------------------------
# A save refuses non-finite variables
# ---------------------------------------------------------------------------------------------

def test_non_finite_lists_only_floating_variables_with_nan_or_inf():
    variables = {'finite': tf.Variable([1.0, -2.0]), 'nan': tf.Variable([0.0, np.nan]),
                 'inf': tf.Variable([[-np.inf]]), 'count': tf.Variable(3, dtype=tf.int64)}
    assert checkpoints.non_finite(variables) == ['nan', 'inf']


def test_save_refuses_non_finite_variables_and_keeps_the_last_good_checkpoint(tmp_path):
    state = make_state(4)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(state=state), str(tmp_path), max_to_keep=3)
    named = {'weights': state.weights, 'moments/0': state.moments[0], 'step': state.step}
    checkpoints.save_finite(manager, 4, named)
    before = files(tmp_path)
    state.moments[0].assign(tf.fill([SIZE], np.inf))
    message = r'not saving a checkpoint at step 5: 1 variables hold NaN or inf \(first: moments/0\)'
    with pytest.raises(checkpoints.NonFiniteError, match=message):
        checkpoints.save_finite(manager, 5, named)
    assert files(tmp_path) == before
    assert restore(tmp_path) == (4, [])
