import errno
import os

import numpy as np
import pytest

from dreamer_tf.replay import Replay


def make_step(counter, worker=0, first=False, last=False, image=False):
    step = {
        "vector": np.full(3, counter, np.float32),
        "action": np.full(2, -counter, np.float32),
        "reward": np.float32(counter),
        "is_first": np.bool_(first),
        "is_last": np.bool_(last),
        "is_terminal": np.bool_(last),
        "counter": np.int64(counter),  # position in its worker's stream, to check windows
        "worker": np.int32(worker),
    }
    if image:
        step["image"] = np.full((8, 8, 3), counter % 256, np.uint8)
    return step


def add_episodes(replay, lengths, worker=0, counter=0, finish=True, image=False):
    """Adds episodes back to back; the last one stays in progress unless `finish`. Returns next counter."""
    for index, length in enumerate(lengths):
        for t in range(length):
            last = t == length - 1 and (finish or index < len(lengths) - 1)
            replay.add(make_step(counter, worker, first=t == 0, last=last, image=image), worker)
            counter += 1
    return counter


def collect(replay, batches, batch_size=64):
    return [replay.sample(batch_size) for _ in range(batches)]


def episode_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".npz"))


# ----------------------------------------------------------------------------------------------------
# Sampling


def test_sample_shapes_and_dtypes():
    replay = Replay(length=6, capacity=1000, chunk_size=4)
    add_episodes(replay, [9, 9], image=True)
    batch = replay.sample(5)
    assert batch["vector"].shape == (5, 6, 3) and batch["vector"].dtype == np.float32
    assert batch["image"].shape == (5, 6, 8, 8, 3) and batch["image"].dtype == np.uint8
    assert batch["action"].shape == (5, 6, 2) and batch["action"].dtype == np.float32
    assert batch["reward"].shape == (5, 6) and batch["reward"].dtype == np.float32
    for key in ("is_first", "is_last", "is_terminal"):
        assert batch[key].shape == (5, 6) and batch[key].dtype == np.bool_
    # Every key of a row comes from the same step.
    np.testing.assert_array_equal(batch["image"][:, :, 0, 0, 0], batch["counter"] % 256)
    np.testing.assert_array_equal(batch["vector"][..., 0], batch["counter"])


def test_windows_are_consecutive_and_stay_in_one_stream():
    # length 10 > chunk_size 4, so windows span up to four chunks.
    replay = Replay(length=10, capacity=10_000, chunk_size=4, seed=1)
    counters = [0, 0, 0]
    for _ in range(5):
        for worker, episode in enumerate([7, 12, 5]):
            counters[worker] = add_episodes(replay, [episode], worker, counters[worker])
    for batch in collect(replay, 20):
        steps = np.diff(batch["counter"], axis=1)
        assert np.all(steps == 1)
        assert np.all(batch["worker"] == batch["worker"][:, :1])
    assert len(replay) == 5 * (7 + 12 + 5)


def test_windows_cross_episode_boundaries():
    replay = Replay(length=10, capacity=1000, chunk_size=8)
    add_episodes(replay, [7] * 6)
    firsts = np.concatenate([batch["is_first"] for batch in collect(replay, 5)])
    assert firsts[:, 1:].any()
    # is_first marks exactly the steps whose counter starts an episode.
    batch = replay.sample(64)
    np.testing.assert_array_equal(batch["is_first"], batch["counter"] % 7 == 0)


def test_sampling_is_uniform_over_window_starts():
    length = 10
    replay = Replay(length=length, capacity=10_000, chunk_size=16, seed=3)
    stream_lengths = {0: 30, 1: 50}
    for worker, size in stream_lengths.items():
        add_episodes(replay, [7] * (size // 7) + [size % 7], worker, finish=False)
    # Every start s with s + length <= stream length is one equally likely window.
    starts = [(worker, s) for worker, size in stream_lengths.items() for s in range(size - length + 1)]
    assert len(starts) == 21 + 41
    per_start = 300
    batches = collect(replay, len(starts) * per_start // 100, batch_size=100)
    observed = {start: 0 for start in starts}
    for batch in batches:
        for worker, counter in zip(batch["worker"][:, 0], batch["counter"][:, 0]):
            observed[(int(worker), int(counter))] += 1  # KeyError would mean an invalid start
    counts = np.array(list(observed.values()))
    assert counts.sum() == len(starts) * per_start
    chi_square = ((counts - per_start) ** 2 / per_start).sum()
    dof = len(starts) - 1
    assert chi_square < dof + 5 * np.sqrt(2 * dof), chi_square


def test_sampling_is_reproducible_for_a_seed():
    def run(seed):
        replay = Replay(length=5, capacity=100, chunk_size=8, seed=seed)
        add_episodes(replay, [9, 9, 9], worker=0)
        add_episodes(replay, [11, 4], worker=1)
        return collect(replay, 3, batch_size=8)

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["counter"], b["counter"]) for a, b in zip(first, other))


def test_can_sample_needs_one_full_window():
    replay = Replay(length=8, capacity=100)
    add_episodes(replay, [7], worker=0)
    add_episodes(replay, [7], worker=1)
    assert len(replay) == 14 and not replay.can_sample()  # 14 steps, but no stream holds 8
    with pytest.raises(ValueError, match="can_sample"):
        replay.sample(1)
    add_episodes(replay, [1], worker=1, counter=7)
    assert replay.can_sample()
    assert np.all(replay.sample(4)["worker"] == 1)


# ----------------------------------------------------------------------------------------------------
# Step validation


@pytest.mark.parametrize("change, key", [
    (lambda s: s.pop("reward"), "reward"),
    (lambda s: s.update(extra=np.float32(0)), "extra"),
    (lambda s: s.update(vector=np.zeros(4, np.float32)), "vector"),
    (lambda s: s.update(action=np.zeros(2, np.float64)), "action"),
    (lambda s: s.update(is_last=1.5), "is_last"),
])
def test_mismatched_step_raises_naming_the_key(change, key):
    replay = Replay(length=2, capacity=10)
    replay.add(make_step(0, first=True))
    step = make_step(1)
    change(step)
    with pytest.raises(ValueError, match=key):
        replay.add(step)
    assert len(replay) == 1


def test_python_scalars_take_the_stored_dtype():
    replay = Replay(length=2, capacity=10)
    step = make_step(0, first=True)
    step.update(reward=0.5, is_first=True)
    replay.add(step)
    step = make_step(1, last=True)
    step.update(reward=1.5, is_last=True)
    replay.add(step)
    batch = replay.sample(1)
    assert batch["reward"].dtype == np.float32 and batch["is_first"].dtype == np.bool_
    np.testing.assert_array_equal(batch["reward"][0], [0.5, 1.5])


# ----------------------------------------------------------------------------------------------------
# Capacity


def stored_counters(replay, batches=40):
    pairs = set()
    for batch in collect(replay, batches):
        pairs.update(zip(batch["worker"].ravel().tolist(), batch["counter"].ravel().tolist()))
    return pairs


def test_eviction_drops_whole_oldest_episodes():
    capacity, episode = 100, 30
    replay = Replay(length=5, capacity=capacity, chunk_size=8)
    for index in range(5):
        for t in range(episode):
            replay.add(make_step(index * episode + t, first=t == 0, last=t == episode - 1))
            in_progress = 0 if t == episode - 1 else t + 1
            assert len(replay) <= capacity + in_progress
    # 150 steps went in; dropping whole 30-step episodes from the front leaves the newest three.
    assert len(replay) == 90 and replay.num_episodes == 3
    assert stored_counters(replay) == {(0, c) for c in range(60, 150)}


def test_eviction_takes_the_oldest_completed_episode_of_any_worker():
    replay = Replay(length=5, capacity=50, chunk_size=4, seed=2)
    add_episodes(replay, [10], worker=1, counter=0)  # b0: completed first
    add_episodes(replay, [20], worker=0, counter=0)  # a0
    add_episodes(replay, [10], worker=1, counter=10)  # b1
    add_episodes(replay, [20], worker=0, counter=20)  # a1: its 11th step makes 51 steps, so b0 goes
    assert len(replay) == 50
    assert stored_counters(replay) == {(0, c) for c in range(40)} | {(1, c) for c in range(10, 20)}
    add_episodes(replay, [1], worker=1, counter=20, finish=False)  # 51 steps again, so a0 goes
    assert len(replay) == 31 and replay.num_episodes == 2
    assert stored_counters(replay) == {(0, c) for c in range(20, 40)} | {(1, c) for c in range(10, 21)}


def test_in_progress_episode_is_never_dropped():
    replay = Replay(length=5, capacity=10)
    add_episodes(replay, [4, 25], finish=False)
    assert len(replay) == 25 and replay.num_episodes == 0
    assert stored_counters(replay, batches=10) == {(0, c) for c in range(4, 29)}


def test_unfinished_episode_before_a_reset_is_evictable():
    replay = Replay(length=2, capacity=8)
    add_episodes(replay, [5], finish=False)  # the env restarts without is_last
    add_episodes(replay, [4], counter=5, finish=False)
    assert len(replay) == 4 and replay.num_episodes == 0


def test_memory_stays_bounded_by_capacity():
    capacity, chunk, episode = 100, 8, 30
    replay = Replay(length=5, capacity=capacity, chunk_size=chunk)
    counters = [0, 0]
    for _ in range(50):
        for worker in (0, 1):
            counters[worker] = add_episodes(replay, [episode], worker, counters[worker])
    stats = replay.stats()
    step_bytes = 3 * 4 + 2 * 4 + 4 + 3 * 1 + 8 + 4
    # Live steps plus at most two partly used chunks per stream.
    assert stats["bytes"] <= (capacity + 2 * 2 * chunk) * step_bytes
    assert stats["steps"] == len(replay) <= capacity
    assert stats["evicted_episodes"] == 100 - replay.num_episodes


# ----------------------------------------------------------------------------------------------------
# Persistence


def test_episodes_are_persisted_and_reloaded_identically(tmp_path):
    directory = str(tmp_path)
    writer = Replay(length=3, capacity=1000, directory=directory, chunk_size=4)
    add_episodes(writer, [5, 7, 6, 4], finish=False, image=True)  # the 4-step episode is unfinished
    names = episode_files(directory)
    assert [int(name.split("-")[-1][:-4]) for name in names] == [5, 7, 6]
    with np.load(os.path.join(directory, names[0])) as data:
        assert data["image"].dtype == np.uint8 and data["image"].shape == (5, 8, 8, 3)
    # A window as long as the reloaded stream returns all of it, in order.
    reader = Replay(length=18, capacity=1000, directory=directory, chunk_size=4)
    assert reader.load() == 18 and len(reader) == 18 and reader.num_episodes == 3
    assert reader.can_sample()
    batch = reader.sample(1)
    expected = [make_step(c, first=c in (0, 5, 12), last=c in (4, 11, 17), image=True) for c in range(18)]
    for key in expected[0]:
        np.testing.assert_array_equal(batch[key][0], np.stack([step[key] for step in expected]))
        assert batch[key].dtype == expected[0][key].dtype


def test_restarts_see_exactly_the_completed_episodes(tmp_path):
    directory = str(tmp_path)
    first = Replay(length=3, capacity=1000, directory=directory)
    add_episodes(first, [5, 6, 3], finish=False)
    second = Replay(length=3, capacity=1000, directory=directory)
    assert second.load() == 11
    add_episodes(second, [4, 2], counter=100, finish=False)
    assert second.load() == 0  # its own and the loaded episodes are not read twice
    assert len(episode_files(directory)) == 3
    third = Replay(length=3, capacity=1000, directory=directory)
    assert third.load() == 15 and third.num_episodes == 3
    names = episode_files(directory)
    orders = [int(name.split("-")[0]) for name in names]
    assert orders == sorted(set(orders))  # the counter continued after the first run's files
    with np.load(os.path.join(directory, names[-1])) as data:
        np.testing.assert_array_equal(data["counter"], np.arange(100, 104))


def test_load_keeps_the_newest_episodes_that_fit(tmp_path):
    directory = str(tmp_path)
    add_episodes(Replay(length=3, capacity=1000, directory=directory), [10, 10, 10, 10])
    replay = Replay(length=3, capacity=25, directory=directory)
    assert replay.load() == 20
    assert stored_counters(replay) == {(0, c) for c in range(20, 40)}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_and_temporary_files_are_skipped_with_a_warning(tmp_path, damage):
    directory = str(tmp_path)
    add_episodes(Replay(length=3, capacity=1000, directory=directory), [5, 6, 7])
    damaged = os.path.join(directory, episode_files(directory)[1])
    with open(damaged, "r+b") as file:
        if damage == "truncate":
            file.truncate(os.path.getsize(damaged) // 2)
        else:  # one bit of stored data, which only the zip member's CRC can reveal
            file.seek(file.read().index(np.arange(5, 11, dtype=np.int64).tobytes()))
            file.write(b"\xff")
    temp = os.path.join(directory, ".000000009-20240101T000000-" + "0" * 32 + "-3.npz.tmp")
    with open(temp, "wb") as file:
        file.write(b"PK\x03\x04partial")
    replay = Replay(length=3, capacity=1000, directory=directory)
    with pytest.warns(UserWarning) as caught:
        assert replay.load() == 5 + 7
    messages = " ".join(str(warning.message) for warning in caught)
    assert os.path.basename(damaged) in messages and os.path.basename(temp) in messages
    assert os.path.exists(damaged) and os.path.exists(temp)  # nothing is deleted silently


def test_write_error_names_the_directory_and_removes_the_temp_file(tmp_path, monkeypatch):
    directory = str(tmp_path)
    replay = Replay(length=3, capacity=1000, directory=directory)
    add_episodes(replay, [4], finish=False)

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match=str(tmp_path)) as caught:
        replay.add(make_step(4, last=True))
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(directory) == []


def test_unfinished_episode_before_a_reset_is_not_persisted(tmp_path):
    directory = str(tmp_path)
    replay = Replay(length=2, capacity=100, directory=directory)
    add_episodes(replay, [5], finish=False)
    add_episodes(replay, [3], counter=5)
    names = episode_files(directory)
    assert len(names) == 1 and names[0].endswith("-3.npz")


def test_prioritize_ends_gives_final_windows_length_extra_chances():
    # DreamerV2's prioritize_ends: the window ending on an episode's last step gets `length` extra
    # draws (`upper += minlen` of its sampler). Episodes 12, 12, 12 (finished) and 5 (in progress),
    # length 4: 41 - 4 + 1 = 38 windows; finals end at counters 11, 23, 35 (starts 8, 20, 32), each
    # with weight 1 + 4 = 5; the unfinished episode has none. Total weight 38 + 3 * 4 = 50.
    length = 4
    replay = Replay(length=length, capacity=10_000, chunk_size=8, seed=5, prioritize_ends=True)
    add_episodes(replay, [12, 12, 12, 5], finish=False)
    expected = np.full(38, 1 / 50)
    expected[[8, 20, 32]] = 5 / 50
    draws = 25_000
    batches = collect(replay, draws // 100, batch_size=100)
    starts = np.concatenate([batch["counter"][:, 0] for batch in batches])
    windows = np.concatenate([batch["counter"] for batch in batches])
    np.testing.assert_array_equal(windows, starts[:, None] + np.arange(length))   # consecutive steps
    counts = np.bincount(starts, minlength=38)
    assert counts.shape == (38,)
    chi_square = ((counts - draws * expected) ** 2 / (draws * expected)).sum()
    assert chi_square < 37 + 5 * np.sqrt(2 * 37), chi_square
    # The final windows do end on is_last.
    last = np.concatenate([batch["is_last"][:, -1] for batch in batches])
    assert last[np.isin(starts, [8, 20, 32])].all() and not last[~np.isin(starts, [8, 20, 32])].any()
    # Off (the default), the same seed draws the plain uniform windows.
    plain = Replay(length=length, capacity=10_000, chunk_size=8, seed=5)
    add_episodes(plain, [12, 12, 12, 5], finish=False)
    counts = np.bincount(np.concatenate([b["counter"][:, 0] for b in collect(plain, 100)]), minlength=38)
    assert abs(counts[8] / counts.sum() - 1 / 38) < 0.01
