"""Reliability: non-finite updates, a full disk, runs killed with SIGKILL, and determinism.

The faults are real wherever they can be caused without root: NaNs go through the real compiled
update, processes are killed with SIGKILL, and a full disk is a real write error (RLIMIT_FSIZE, see
tests/test_checkpoints.py). Checkpoint corruption is in tests/test_checkpoints.py, bad command
lines in tests/test_reproduce.py.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

from dreamer_tf import checkpoints
from dreamer_tf import config as configlib
from dreamer_tf.agent import Agent
from dreamer_tf.envs import ActionSpec
from dreamer_tf.logger import read_metrics
from dreamer_tf.replay import Replay
from dreamer_tf.checkpoints import NonFiniteError
from dreamer_tf.framework import make_train_step
from dreamer_tf.trainer import Trainer
from test_checkpoints import file_size_limit

ROOT = pathlib.Path(__file__).resolve().parent.parent
GYM = ROOT / 'reproduce' / 'gym_classic.py'
# Unbuffered, so that what a run printed before SIGKILL is in its output file.
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '2', 'PYTHONUNBUFFERED': '1'}


def debug_config(**overrides):
    sets = {'env.suite': 'gym', 'env.task': 'CartPole-v1', **overrides}
    return configlib.load('dreamerv3', ['debug'], [f'{k}={v}' for k, v in sets.items()])


# ---------------------------------------------------------------------------------------------
# Non-finite updates
# ---------------------------------------------------------------------------------------------

def agent_batch(rng, batch=2, length=6, size=4, actions=2):
    """A replay batch [B, 1 + T] for a vector observation of `size` and discrete actions."""
    shape = (batch, 1 + length)
    data = {'vector': rng.standard_normal(shape + (size,)).astype(np.float32),
            'action': np.eye(actions, dtype=np.float32)[rng.integers(0, actions, shape)],
            'reward': rng.standard_normal(shape).astype(np.float32),
            'is_first': np.zeros(shape, bool), 'is_last': np.zeros(shape, bool),
            'is_terminal': np.zeros(shape, bool)}
    data['is_first'][:, 0] = True
    return data


def agent_state(agent):
    """Every variable an update may touch, by name: weights, optimiser, slow critic, normaliser."""
    state = {f'weight/{k}': v for k, v in agent.weights_by_path.items()}
    state.update({f'opt/mu/{i}': v for i, v in enumerate(agent.opt.mu)})
    state.update({f'opt/nu/{i}': v for i, v in enumerate(agent.opt.nu)})
    state.update({'opt/step': agent.opt.step, 'retnorm/lo': agent.ac.retnorm.lo,
                  'retnorm/hi': agent.ac.retnorm.hi})
    return {k: np.array(v.numpy()) for k, v in state.items()}


def assert_same_state(before, after):
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


POISONS = {
    'nan reward': lambda d: d['reward'].__setitem__((0, 3), np.nan),
    'nan observation': lambda d: d['vector'].__setitem__((1, 2, 0), np.nan),
    'inf observation': lambda d: d['vector'].__setitem__((0, 4, 1), np.inf),
}


@pytest.fixture(scope='module')
def compiled_agent():
    config = configlib.load('dreamerv3', ['debug'], ['opt.warmup=0'])
    obs_space = {'vector': spaces.Box(-np.inf, np.inf, (4,), np.float32)}
    agent = Agent(config, obs_space, ActionSpec(discrete=True, size=2))
    return agent, make_train_step(agent, config)    # compiled, as the trainer runs it


@pytest.mark.parametrize('poison', list(POISONS))
def test_non_finite_batch_skips_the_update_and_touches_nothing(compiled_agent, poison):
    agent, step = compiled_agent
    rng = np.random.default_rng(len(poison))
    assert float(step(agent_batch(rng))['skipped']) == 0.0
    before = agent_state(agent)
    bad = agent_batch(rng)
    POISONS[poison](bad)
    metrics = step(bad)
    assert float(metrics['skipped']) == 1.0
    assert not np.isfinite(float(metrics['loss/total']))
    # Nothing moved: not the weights, the moments, the step, the slow critic or the return normaliser
    # (which the loss itself updates, and which a NaN observation would otherwise poison).
    assert_same_state(before, agent_state(agent))
    # The next finite batch updates again, from exactly where the skipped one left off.
    assert float(step(agent_batch(rng))['skipped']) == 0.0
    after = agent_state(agent)
    assert int(after['opt/step']) == int(before['opt/step']) + 1
    assert all(np.isfinite(value).all() for value in after.values())
    for name in ('weight/critic/mlp/linears0/kernel', 'weight/slow_critic/mlp/linears0/kernel',
                 'opt/nu/0', 'retnorm/hi'):
        assert not np.array_equal(after[name], before[name]), name


def all_finite(prefix):
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == 'f' and not np.isfinite(value).all():
            return False
    return True


def test_trainer_counts_skips_and_stops_after_too_many_in_a_row(tmp_path, capsys):
    # debug: one update per 2 policy steps after a 200-step prefill. Batches 20-39 carry a NaN reward
    # in every odd batch (10 skips, never 3 in a row), and from batch 40 on in every batch: batches
    # 39, 40 and 41 make 3 in a row, which stops the run. Updates attempted: 42; skipped: 10 + 2 = 12.
    config = debug_config(**{'run.steps': 800, 'run.save_every': 50, 'run.log_every': 20,
                             'run.max_nonfinite_updates': 3, 'opt.warmup': 0})
    trainer = Trainer(config, tmp_path)
    sample, calls, snapshots = trainer.replay.sample, [], {}

    def poisoned_sample(batch_size):
        batch, index = sample(batch_size), len(calls)
        calls.append(index)
        if index == 39:
            snapshots['before_streak'] = agent_state(trainer.agent)
        if (20 <= index < 40 and index % 2) or index >= 40:
            batch['reward'][0, 5] = np.nan
        return batch

    trainer.replay.sample = poisoned_sample
    try:
        with pytest.raises(NonFiniteError, match=r'3 updates in a row .*run\.max_nonfinite_updates=3'):
            trainer.run()
        assert len(calls) == 42
        assert int(trainer.counters.updates.numpy()) == 42
        assert int(trainer.counters.skipped_updates.numpy()) == 12
        assert int(trainer.agent.opt.step.numpy()) == 42 - 12
        assert_same_state(snapshots['before_streak'], agent_state(trainer.agent))
        stop_step = trainer.env_steps
    finally:
        trainer.close()
    saved = checkpoints.list_checkpoints(str(tmp_path / 'checkpoints'))
    assert saved and all(all_finite(prefix) for prefix in saved)
    assert max(int(p.rsplit('-', 1)[1]) for p in saved) < stop_step, 'a checkpoint was saved at the stop'
    rows = read_metrics(tmp_path)
    losses = [row['train/loss/total'] for row in rows if 'train/loss/total' in row]
    assert losses and np.isfinite(losses).all(), 'skipped updates leaked NaN into the logged losses'
    assert max(row.get('run/skipped_updates', 0) for row in rows) >= 10
    warnings = [line for line in capsys.readouterr().err.splitlines() if 'skipped: ' in line]
    assert len(warnings) == 12 and all('loss/rew' in line for line in warnings)   # the poisoned reward


def test_nonfinite_cause_names_the_bad_metrics_but_not_the_optimisers():
    from dreamer_tf.trainer import nonfinite_cause
    metrics = {'loss/rep': 1.0, 'loss/rew': float('nan'), 'ret': np.float32(np.inf),
               'model/grad_norm': np.nan}
    assert nonfinite_cause(metrics, ('model/grad_norm',)) == 'non-finite loss/rew, ret'
    assert nonfinite_cause({'loss/rep': 1.0, 'model/grad_norm': np.nan}, ('model/grad_norm',)) == \
        'finite losses, non-finite gradient norm'


def test_trainer_refuses_to_save_non_finite_weights(tmp_path):
    trainer = Trainer(debug_config(), tmp_path)
    try:
        trainer.counters.env_steps.assign(100)
        trainer.agent.ac.retnorm.hi.assign(np.nan)
        with pytest.raises(NonFiniteError, match='not saving a checkpoint at step 100'):
            trainer.save()
    finally:
        trainer.close()
    assert checkpoints.list_checkpoints(str(tmp_path / 'checkpoints')) == []


# ---------------------------------------------------------------------------------------------
# A full disk while the replay writes an episode
# ---------------------------------------------------------------------------------------------

def add_episode(replay, length, value):
    for t in range(length):
        replay.add({'vector': np.full(64, value + t, np.float32), 'reward': np.float32(t),
                    'is_first': t == 0, 'is_last': t == length - 1})


def test_disk_full_while_writing_replay_keeps_the_written_episodes(tmp_path):
    replay = Replay(8, 10_000, str(tmp_path))
    for value in range(3):
        add_episode(replay, 50, 1000 * value)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    with file_size_limit(4096), pytest.raises(OSError, match='cannot write replay episode') as error:
        add_episode(replay, 50, 5000)            # 50 x 64 floats: 12.8 kB, past the limit
    assert 'File too large' in str(error.value) and str(tmp_path) in str(error.value)
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before, 'the failed write changed a file or left a partial one'
    # With space again, writing continues, and a restart reloads each written episode once.
    add_episode(replay, 50, 6000)
    reloaded = Replay(8, 10_000, str(tmp_path))
    assert reloaded.load() == 4 * 50 and reloaded.num_episodes == 4


# ---------------------------------------------------------------------------------------------
# Kill and resume
# ---------------------------------------------------------------------------------------------

# 1000 env steps of CartPole: 400 of random prefill, then one update per 8 policy steps (ratio 8 with
# debug's 4 x 16 batches); checkpoints at 300, 600, 900 and 1000; metrics every 200 steps.
PREFILL, RATIO = 400, 8
KILL_FLAGS = ['--task=CartPole-v1', '--configs=debug', '--steps=1000', '--set', f'run.prefill={PREFILL}',
              '--set', 'run.save_every=300', '--set', f'run.train_ratio={RATIO}']
EPISODE_NAME = re.compile(r'^\d+-\d{8}T\d{6}-[0-9a-f]{32}-(\d+)\.npz$')


class Run:
    """One invocation of reproduce/gym_classic.py in the background, output to files."""

    def __init__(self, logdir, args, name):
        self.out = logdir.parent / f'{name}.out'
        self.err = logdir.parent / f'{name}.err'
        with open(self.out, 'w') as out, open(self.err, 'w') as err:
            self.proc = subprocess.Popen([sys.executable, str(GYM), f'--logdir={logdir}', *args],
                                         stdout=out, stderr=err, env=ENV, cwd=ROOT)

    def wait_until(self, condition, timeout=400):
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f'the run ended (status {self.proc.returncode}) before the kill point:\n'
                            + self.err.read_text()[-3000:])
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail('the kill point was not reached in time:\n' + self.err.read_text()[-3000:])
            time.sleep(0.02)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def finish(self, timeout=400):
        self.proc.wait(timeout=timeout)
        return self.proc.returncode

    @property
    def stdout(self):
        return self.out.read_text()


def episode_files(logdir):
    """{name: sha256} of the finished episode files (temporary files of a killed write are not)."""
    directory = logdir / 'replay'
    if not directory.exists():
        return {}
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in os.listdir(directory) if EPISODE_NAME.match(name)}


def committed(logdir):
    """(prefix, number) of the newest checkpoint the state file names, or (None, 0)."""
    paths = checkpoints.list_checkpoints(str(logdir / 'checkpoints'))
    return (paths[-1], int(paths[-1].rsplit('-', 1)[1])) if paths else (None, 0)


def metric_rows(logdir):
    return read_metrics(logdir) if (logdir / 'metrics.jsonl').exists() else []


def counters_of(prefix):
    reader = tf.train.load_checkpoint(prefix)
    values = {name: int(reader.get_tensor(f'counters/{name}/.ATTRIBUTES/VARIABLE_VALUE'))
              for name in ('env_steps', 'policy_steps', 'updates', 'episodes', 'skipped_updates')}
    values['opt_step'] = int(reader.get_tensor('agent/opt/step/.ATTRIBUTES/VARIABLE_VALUE'))
    return values


def check_counters(prefix, files):
    """The counters of one checkpoint agree with each other and with the replay on disk."""
    c = counters_of(prefix)
    assert c['env_steps'] == c['policy_steps'] == int(prefix.rsplit('-', 1)[1])   # action repeat 1
    assert c['updates'] == max(0, c['policy_steps'] - PREFILL) * RATIO // 64      # the ratio schedule
    assert c['opt_step'] == c['updates'] - c['skipped_updates'] and c['skipped_updates'] == 0
    assert c['episodes'] <= len(files), 'the checkpoint counts episodes that are not in the replay'
    return c


def check_resumed(run, state):
    """The run resumed from the newest committed checkpoint and loaded every episode file once."""
    prefix, number = state['checkpoint']
    if prefix:
        assert f'Resumed from {prefix} at step {number}.' in run.stdout
    else:
        assert 'Resumed from' not in run.stdout
    steps = sum(int(EPISODE_NAME.match(name)[1]) for name in state['files'])
    assert f'Loaded {steps} replay steps ({len(state["files"])} episodes).' in run.stdout


def check_episodes_accounted(before, after, rows_before, rows_after, killed):
    """Every episode the run finished was written exactly once, and nothing earlier was touched."""
    for name, digest in before.items():
        assert after.get(name) == digest, f'{name} was lost or rewritten'
    written = len(after) - len(before)
    finished = sum('episode/score' in row for row in rows_after[rows_before:])
    # A kill between an episode's rename and its metrics line leaves one file more than lines.
    assert finished <= written <= finished + killed


def check_restored_state(logdir, prefix, tmp_path):
    """Everything the checkpoint holds comes back: restore a copy, write it out, compare every tensor."""
    copy = tmp_path / 'restored'
    shutil.copytree(logdir, copy)
    trainer = Trainer(configlib.Config.from_file(copy / 'config.yaml'), copy)
    try:
        trainer.restore()
        (tmp_path / 'rewritten').mkdir()
        written = trainer.checkpoint.write(str(tmp_path / 'rewritten' / 'ckpt'))
        stats = trainer.replay.stats()
    finally:
        trainer.close()
    original, rewritten = tf.train.load_checkpoint(prefix), tf.train.load_checkpoint(written)
    keys = set(original.get_variable_to_shape_map()) - {'_CHECKPOINTABLE_OBJECT_GRAPH'}
    assert keys == set(rewritten.get_variable_to_shape_map()) - {'_CHECKPOINTABLE_OBJECT_GRAPH'}
    for part in ('agent/train_vars/', 'slow_critic', 'opt/mu/', 'opt/nu/', 'opt/step', 'retnorm/lo',
                 'counters/updates', 'counters/episodes'):
        assert any(part in key for key in keys), part
    for key in keys:
        np.testing.assert_array_equal(rewritten.get_tensor(key), original.get_tensor(key), err_msg=key)
    return stats


def test_killed_runs_resume_with_nothing_lost(tmp_path):
    logdir = tmp_path / 'run'
    kill_points = {
        'prefill': lambda: len(episode_files(logdir)) >= 4,
        'mid-training': lambda: committed(logdir)[1] >= 600 and max(
            (row['step'] for row in metric_rows(logdir)), default=0) >= 800,
        'after a checkpoint': lambda: committed(logdir)[1] >= 900,
    }
    states = []                     # what each kill left behind
    for index, (name, reached) in enumerate(kill_points.items()):
        rows_before = len(metric_rows(logdir))
        run = Run(logdir, KILL_FLAGS, f'run{index}')
        run.wait_until(reached)
        run.kill()
        state = {'name': name, 'files': episode_files(logdir), 'checkpoint': committed(logdir)}
        if states:
            check_resumed(run, states[-1])
            check_episodes_accounted(states[-1]['files'], state['files'], rows_before,
                                     metric_rows(logdir), killed=1)
        if state['checkpoint'][0]:
            check_counters(state['checkpoint'][0], state['files'])
        states.append(state)
    assert states[1]['checkpoint'][1] == 600 and states[2]['checkpoint'][1] == 900

    stats = check_restored_state(logdir, states[-1]['checkpoint'][0], tmp_path)
    assert stats['loaded_episodes'] == len(states[-1]['files'])

    rows_before = len(metric_rows(logdir))
    last = Run(logdir, KILL_FLAGS, 'final')
    assert last.finish() == 0, last.err.read_text()[-3000:]
    check_resumed(last, states[-1])
    files = episode_files(logdir)
    check_episodes_accounted(states[-1]['files'], files, rows_before, metric_rows(logdir), killed=0)
    final = check_counters(committed(logdir)[0], files)
    assert committed(logdir)[1] == 1000
    resumed_from = counters_of(states[-1]['checkpoint'][0])
    assert len(files) - len(states[-1]['files']) == final['episodes'] - resumed_from['episodes']
    # No episode is stored twice (each holds its own random start), and each is one whole episode.
    contents = set()
    for name in files:
        with np.load(logdir / 'replay' / name) as data:
            assert data['is_first'][0] and data['is_last'][-1]
            assert data['is_first'].sum() == 1 and data['is_last'].sum() == 1
            contents.add(hashlib.sha256(data['vector'].tobytes()).hexdigest())
    assert len(contents) == len(files)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_run_saves_where_it_stopped_and_resumes_there(sig, tmp_path):
    """`kill PID` or Ctrl-C between checkpoints loses nothing: the run saves the step it reached,
    exits with 128 + the signal, and the same command continues from that step."""
    logdir = tmp_path / 'run'
    run = Run(logdir, KILL_FLAGS, 'signalled')
    # Past the first scheduled checkpoint (300) and well before the next one (600).
    run.wait_until(lambda: committed(logdir)[1] >= 300 and max(
        (row['step'] for row in metric_rows(logdir)), default=0) >= 400)
    run.proc.send_signal(sig)
    assert run.finish() == 128 + sig, run.err.read_text()[-3000:]
    assert f'Stopped by {signal.Signals(sig).name}' in run.stdout
    prefix, number = committed(logdir)
    assert 400 <= number < 1000 and number != 600          # saved where it stopped, off schedule
    assert counters_of(prefix)['env_steps'] == number
    assert max(row['step'] for row in metric_rows(logdir)) == number   # its last row is logged too
    state = {'checkpoint': (prefix, number), 'files': episode_files(logdir)}
    again = Run(logdir, KILL_FLAGS, 'continued')
    assert again.finish() == 0, again.err.read_text()[-3000:]
    check_resumed(again, state)
    assert committed(logdir)[1] == 1000


# ---------------------------------------------------------------------------------------------
# Determinism, and faults of a finished run's logdir
# ---------------------------------------------------------------------------------------------

DETERMINISTIC_FLAGS = ['--task=CartPole-v1', '--configs=debug', '--steps=500', '--seed=3',
                       '--set', 'deterministic=true', '--set', 'run.save_every=100',
                       '--set', 'run.log_every=100']
# Wall-clock metrics differ between any two runs.
TIMING = ('run/fps', 'run/wall_minutes', 'episode/wall_minutes')


def run_script(logdir, args, timeout=600):
    cmd = [sys.executable, str(GYM), f'--logdir={logdir}', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


@pytest.fixture(scope='module')
def deterministic_runs(tmp_path_factory):
    """Two runs of the same seed in separate processes and logdirs, one after the other."""
    logdirs = []
    for name in ('first', 'second'):
        logdir = tmp_path_factory.mktemp('deterministic') / name
        result = run_script(logdir, DETERMINISTIC_FLAGS)
        assert result.returncode == 0, result.stderr[-3000:]
        logdirs.append(logdir)
    return logdirs


def test_same_seed_gives_identical_metrics_and_weights(deterministic_runs):
    first, second = ([{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(logdir)]
                     for logdir in deterministic_runs)
    train = [row for row in first if 'train/loss/total' in row]
    assert len(train) >= 3 and len(first) > 10
    assert json.dumps(first) == json.dumps(second)     # exact, NaN-free floats
    a, b = (tf.train.load_checkpoint(str(d / 'checkpoints' / 'ckpt-500')) for d in deterministic_runs)
    keys = [k for k in a.get_variable_to_shape_map()
            if 'seconds' not in k and k != '_CHECKPOINTABLE_OBJECT_GRAPH']
    assert len(keys) > 100
    for key in keys:
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)


LIMITED = ('import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '
           'resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY)); '
           'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')


def test_disk_full_at_a_checkpoint_stops_the_run_cleanly(deterministic_runs, tmp_path):
    # Files may not grow past 100 kB: replay episodes and metrics fit, a checkpoint (~280 kB) does not.
    logdir = tmp_path / 'run'
    shutil.copytree(deterministic_runs[0], logdir)
    before = {p.name: p.read_bytes() for p in (logdir / 'checkpoints').iterdir()}
    cmd = [sys.executable, '-c', LIMITED.format(limit=100_000), str(GYM), f'--logdir={logdir}',
           *DETERMINISTIC_FLAGS, '--steps=600']
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    assert re.search(r'error: cannot write checkpoint \S+ckpt-600 \(.*File too large.*\); '
                     r'the last good checkpoint \S+ckpt-500 is intact', result.stderr), result.stderr[-2000:]
    after = {p.name: p.read_bytes() for p in (logdir / 'checkpoints').iterdir()}
    assert after == before, 'the failed save changed the checkpoints or left partial files'
    assert committed(logdir)[1] == 500


def test_unreadable_checkpoints_stop_the_run_with_a_message(deterministic_runs, tmp_path):
    logdir = tmp_path / 'run'
    shutil.copytree(deterministic_runs[0], logdir)
    for index in (logdir / 'checkpoints').glob('*.index'):
        index.write_bytes(index.read_bytes()[:50])
    result = run_script(logdir, [*DETERMINISTIC_FLAGS, '--steps=600'])
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert 'error: no readable checkpoint in' in result.stderr
    for number in (300, 400, 500):
        assert f'ckpt-{number}' in result.stderr


@pytest.mark.parametrize('fault', ['crash', 'hang'])
def test_run_continues_past_a_crashed_or_hung_env_process(tmp_path, fault):
    """An env process killed (SIGKILL) or frozen (SIGSTOP) mid-episode is restarted by the trainer's
    ParallelEnv; the episode in progress is dropped, the run reaches its step budget, and every
    stored episode is whole (is_first only at its start, is_last only at its end)."""

    class FaultyTrainer(Trainer):
        done = False

        def _train_due(self):
            super()._train_due()
            if not self.done and self.env_steps == 330:
                FaultyTrainer.done = True
                os.kill(self.envs[0].pid, signal.SIGKILL if fault == 'crash' else signal.SIGSTOP)

    config = debug_config(**{'run.steps': 500, 'run.prefill': 200, 'env.parallel': True,
                             'env.step_timeout': 3.0, 'env.time_limit': 40})
    trainer = FaultyTrainer(config, tmp_path)
    try:
        trainer.run()
        assert FaultyTrainer.done and trainer.envs[0].restarts == 1
        assert trainer.env_steps >= 500
        episodes = int(trainer.counters.episodes.numpy())
    finally:
        trainer.close()
    files = sorted((tmp_path / 'replay').glob('*.npz'))
    assert len(files) == episodes            # the interrupted episode was not stored or counted
    for path in files:
        with np.load(path) as data:
            first, last = data['is_first'], data['is_last']
            assert first[0] and not first[1:].any(), path.name
            assert last[-1] and not last[:-1].any(), path.name
