"""Logger: averaging, metrics.jsonl format and recovery, TensorBoard events, console progress."""

import glob
import io
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf.logger import FPS, Logger, Progress, read_metrics


class FakeClock:

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_repeated_values_are_averaged(tmp_path):
    with Logger(tmp_path, use_tensorboard=False) as logger:
        logger.add({'loss': 1.0, 'lr': 3})
        logger.add({'loss': np.float32(2.0)})
        logger.add({'loss': tf.constant(6.0)})
        logger.write(10)
    assert read_metrics(tmp_path) == [{'step': 10, 'loss': (1.0 + 2.0 + 6.0) / 3, 'lr': 3.0}]


def test_prefix_and_scalar(tmp_path):
    with Logger(tmp_path, use_tensorboard=False) as logger:
        logger.add({'loss': 0.5}, prefix='train')
        logger.scalar('eval/score', 100)
        logger.write(1)
    assert read_metrics(tmp_path) == [{'step': 1, 'train/loss': 0.5, 'eval/score': 100.0}]


def test_one_json_object_per_line_and_accumulator_cleared(tmp_path):
    with Logger(tmp_path, use_tensorboard=False) as logger:
        logger.add({'a': 1.0})
        logger.write(5)
        logger.write(6)  # Nothing accumulated since the last write: no line.
        logger.add({'b': 2.0})
        logger.write(7)
    lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{'step': 5, 'a': 1.0}, {'step': 7, 'b': 2.0}]


def test_non_finite_written_as_null(tmp_path):
    with Logger(tmp_path, use_tensorboard=False) as logger:
        logger.add({'bad': float('nan'), 'big': float('inf'), 'ok': 1.0})
        logger.write(3)
    line = (tmp_path / 'metrics.jsonl').read_text().strip()
    assert json.loads(line) == {'step': 3, 'bad': None, 'big': None, 'ok': 1.0}
    row = read_metrics(tmp_path)[0]
    assert math.isnan(row['bad']) and math.isnan(row['big']) and row['ok'] == 1.0


def test_rejects_non_scalars_and_reserved_name(tmp_path):
    with Logger(tmp_path, use_tensorboard=False) as logger:
        with pytest.raises(ValueError, match='scalar'):
            logger.add({'vec': np.ones(3)})
        with pytest.raises(ValueError, match='reserved'):
            logger.add({'step': 1})


def test_reopen_appends(tmp_path):
    with Logger(tmp_path, use_tensorboard=False) as logger:
        logger.add({'a': 1.0})
        logger.write(1)
    with Logger(tmp_path, use_tensorboard=False) as logger:
        logger.add({'a': 2.0})
        logger.write(2)
    assert [row['step'] for row in read_metrics(tmp_path)] == [1, 2]


def test_truncated_last_line_is_skipped_and_repaired(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a":')
    assert read_metrics(tmp_path) == [{'step': 1, 'a': 1.0}]
    # A resumed run must not glue its first line onto the broken one.
    with Logger(tmp_path, use_tensorboard=False) as logger:
        logger.add({'a': 3.0})
        logger.write(3)
    assert read_metrics(tmp_path) == [{'step': 1, 'a': 1.0}, {'step': 3, 'a': 3.0}]


def test_corrupt_middle_line_raises(tmp_path):
    (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n{oops\n{"step": 2}\n')
    with pytest.raises(ValueError, match=':2:'):
        read_metrics(tmp_path)


def test_tensorboard_event_holds_scalar(tmp_path):
    with Logger(tmp_path) as logger:
        logger.add({'loss': 1.0}, prefix='train')
        logger.add({'loss': 3.0}, prefix='train')
        logger.write(42)
    events = glob.glob(os.path.join(str(tmp_path), 'events.out.tfevents.*'))
    assert len(events) == 1
    found = []
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            found.append((event.step, value.tag, float(tf.make_ndarray(value.tensor))))
    assert found == [(42, 'train/loss', 2.0)]


def test_progress_format():
    clock = FakeClock()
    progress = Progress(50000, clock=clock)
    clock.now = 100.0
    # The ETA comes from the given rate: 38,000 steps left at 152 steps/s is 250 s.
    line = progress.format(12000, fps=152.0, updates_per_sec=4.48, score=512.34)
    assert line == '12,000/50,000 env steps | 152 env steps/s, 4.5 updates/s, score 512.3 | ETA 04:10'
    # Without a rate, tqdm's average since the start: 12,000 steps in 100 s, 38,000 left is 317 s.
    assert progress.format(12000) == '12,000/50,000 env steps | 120 env steps/s | ETA 05:16'


def test_progress_rates_count_a_resumed_run_from_its_first_step():
    clock = FakeClock()
    progress = Progress(50000, start=40000, clock=clock)
    clock.now = 50.0
    # 2,000 steps in 50 s is 40 steps/s; 8,000 left is 200 s.
    assert progress.format(42000) == '42,000/50,000 env steps | 40.0 env steps/s | ETA 03:20'


def test_progress_prints_lines_at_most_every_interval(capsys):
    clock = FakeClock()
    progress = Progress(100, min_interval=10.0, clock=clock)
    clock.now = 1.0
    progress.update(1, fps=5.0)
    clock.now = 5.0
    progress.update(2)  # Too soon after the first line.
    clock.now = 11.0
    progress.update(3, fps=2.0, score=1.0)
    progress.update(100, fps=1.0)  # The final step is always shown.
    assert capsys.readouterr().out.splitlines() == [
        '1/100 env steps | 5.00 env steps/s | ETA 00:19',
        '3/100 env steps | 2.00 env steps/s, score 1.0 | ETA 00:48',
        '100/100 env steps | 1.00 env steps/s | ETA 00:00']


def test_progress_redraws_a_tqdm_bar_on_tty(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    terminal = Terminal()
    monkeypatch.setattr('sys.stdout', terminal)
    progress = Progress(1000)
    progress.update(100, updates_per_sec=2.0, score=3.0)
    progress.update(1000)
    progress.close()
    text = terminal.getvalue()
    first = next(part for part in text.split('\r') if '100/1,000' in part)   # tqdm drew 0/1,000 first
    last = text.split('\r')[-1]
    assert first.startswith(' 10%|') and '| 100/1,000 env steps |' in first and 'ETA' in first
    assert '2.0 updates/s, score 3.0' in first
    assert last.startswith('100%|') and '1,000/1,000 env steps' in last and last.endswith('\n')


def test_fps_between_calls():
    clock = FakeClock()
    fps = FPS(clock=clock)
    assert fps.update(0) is None
    clock.now = 2.0
    assert fps.update(300) == 150.0
    clock.now = 3.0
    assert fps.update(400) == 100.0
