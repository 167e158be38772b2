"""Replay buffer: per-worker step streams, uniform sequence sampling, episodes persisted to disk.

Storage design. Each worker's steps form one continuous stream across episode boundaries. A stream
stores its steps in fixed-size chunks (one preallocated numpy array per key and chunk) addressed by an
absolute position that only ever grows: chunk k always covers positions [k*C, (k+1)*C). Adding a step
writes into the current chunk, so it is O(1) and never moves stored data. Dropping the oldest episode
only advances the stream's `start` and frees chunks that now lie wholly before it, so memory stays
within capacity plus at most two partly used chunks per stream. Sampling copies each window out of
at most ceil(length / C) + 1 chunk slices, so its cost does not depend on how much is stored.

Persistence. Every completed episode is written as one uncompressed `.npz` (images stay uint8) under a
temporary name, fsynced and renamed, so a reader never sees a partial file. Names start with a
zero-padded completion counter, which is also the eviction order in memory: the oldest completed
episode over all streams is dropped first, and episodes loaded from disk are older than new ones.
"""

from __future__ import annotations

import collections
import os
import re
import time
import uuid
import warnings
import zipfile
import zlib

import numpy as np

_EPISODE_NAME = re.compile(r"^(\d+)-(\d{8}T\d{6})-([0-9a-f]{32})-(\d+)\.npz$")
_TEMP_SUFFIX = ".tmp"
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
# Python scalars (e.g. a bool flag from an env wrapper) are accepted where the stored dtype is of a
# kind they convert to without surprise; floats default to float32, the dtype of all float data here.
_SCALAR_KINDS = {bool: "b", int: "iuf", float: "f"}
_SCALAR_DEFAULTS = {bool: np.bool_, int: np.int64, float: np.float32}


class _Stream:
    """One continuous sequence of steps stored in fixed-size chunks addressed by absolute position."""

    def __init__(self, spec: dict, chunk_size: int):
        self.spec = spec
        self.chunk_size = chunk_size
        self.chunks: dict[int, dict[str, np.ndarray]] = {}
        self.start = 0  # first stored position
        self.end = 0  # one past the last stored position
        self.episode_start = 0  # first position of the episode still in progress
        # (order, length, complete) of each closed episode, oldest first; they tile [start, episode_start).
        self.episodes: collections.deque = collections.deque()

    def __len__(self) -> int:
        return self.end - self.start

    def _chunk(self, number: int) -> dict[str, np.ndarray]:
        chunk = self.chunks.get(number)
        if chunk is None:
            chunk = {key: np.empty((self.chunk_size, *shape), dtype)
                     for key, (shape, dtype) in self.spec.items()}
            self.chunks[number] = chunk
        return chunk

    def append(self, values: dict) -> None:
        number, offset = divmod(self.end, self.chunk_size)
        chunk = self._chunk(number)
        for key, value in values.items():
            chunk[key][offset] = value
        self.end += 1

    def extend(self, arrays: dict, length: int) -> None:
        done = 0
        while done < length:
            number, offset = divmod(self.end, self.chunk_size)
            count = min(length - done, self.chunk_size - offset)
            chunk = self._chunk(number)
            for key, array in arrays.items():
                chunk[key][offset:offset + count] = array[done:done + count]
            done += count
            self.end += count

    def copy(self, position: int, length: int, targets: dict) -> None:
        """Copy steps [position, position + length) into `targets` (key -> array of leading dim length)."""
        done = 0
        while done < length:
            number, offset = divmod(position + done, self.chunk_size)
            count = min(length - done, self.chunk_size - offset)
            chunk = self.chunks[number]
            for key, target in targets.items():
                target[done:done + count] = chunk[key][offset:offset + count]
            done += count

    def gather(self, position: int, length: int) -> dict[str, np.ndarray]:
        arrays = {key: np.empty((length, *shape), dtype) for key, (shape, dtype) in self.spec.items()}
        self.copy(position, length, arrays)
        return arrays

    def close_episode(self, order: int, complete: bool) -> int:
        length = self.end - self.episode_start
        self.episodes.append((order, length, complete))
        self.episode_start = self.end
        return length

    def drop_oldest(self) -> tuple[int, bool]:
        _, length, complete = self.episodes.popleft()
        first_kept = (self.start + length) // self.chunk_size
        for number in range(self.start // self.chunk_size, first_kept):
            del self.chunks[number]
        self.start += length
        return length, complete


class Replay:
    """Uniform sampling of `length`-step windows from per-worker streams, bounded by `capacity` steps."""

    def __init__(self, length: int, capacity: int, directory: str | None = None, seed: int = 0,
                 *, chunk_size: int = 1024, prioritize_ends: bool = False):
        if length < 1 or capacity < 1 or chunk_size < 1:
            raise ValueError(f"length ({length}), capacity ({capacity}) and chunk_size ({chunk_size}) "
                             "must be positive")
        self.length = length
        self.capacity = capacity
        self.directory = directory
        self.chunk_size = chunk_size
        # DreamerV2's `prioritize_ends`: the window that ends on a finished episode's last step gets
        # `length` extra chances (its sampler's `upper += minlen`), so episode ends are seen more.
        self.prioritize_ends = prioritize_ends
        self._rng = np.random.default_rng(seed)
        self._spec: dict | None = None  # key -> (per-step shape, dtype), fixed by the first step
        self._streams: dict = {}  # worker id, or ("loaded", n) for episodes read from disk -> _Stream
        self._size = 0
        self._episodes = 0
        self._loads = 0
        self._counts = collections.Counter()  # written / loaded / evicted totals for stats()
        self._known: set[str] = set()  # episode files already in memory, so load() never repeats one
        self._order = 0  # completion counter: file name prefix and eviction order
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            existing = self._scan(warn=False)
            self._order = existing[-1][0] + 1 if existing else 0

    # ------------------------------------------------------------------------------------------------
    # Adding

    def add(self, step: dict, worker: int = 0) -> None:
        values = self._validate(step)
        stream = self._streams.get(worker)
        if stream is None:
            stream = self._streams[worker] = _Stream(self._spec, self.chunk_size)
        if values["is_first"] and stream.end > stream.episode_start:
            # The env restarted without an is_last step. Close the fragment so it can be evicted like any
            # episode; it is not persisted because it is not a finished episode.
            stream.close_episode(self._next_order(), complete=False)
        stream.append(values)
        self._size += 1
        if values["is_last"]:
            self._finish_episode(stream)
        self._evict()

    def _next_order(self) -> int:
        self._order += 1
        return self._order - 1

    def _finish_episode(self, stream: _Stream) -> None:
        position = stream.episode_start
        order = self._next_order()
        length = stream.close_episode(order, complete=True)
        self._episodes += 1
        if self.directory is not None:
            self._known.add(self._write(order, stream.gather(position, length), length))

    def _evict(self) -> None:
        while self._size > self.capacity:
            victim_key, victim = None, None
            for key, stream in self._streams.items():
                if stream.episodes and (victim is None or stream.episodes[0][0] < victim.episodes[0][0]):
                    victim_key, victim = key, stream
            if victim is None:
                return  # only in-progress episodes are left, and those are never dropped
            length, complete = victim.drop_oldest()
            self._size -= length
            self._episodes -= complete
            self._counts["evicted_episodes"] += 1
            if not len(victim):
                del self._streams[victim_key]

    def _validate(self, step: dict) -> dict:
        spec = self._spec if self._spec is not None else self._infer_spec(step)
        if step.keys() != spec.keys():
            missing, extra = sorted(spec.keys() - step.keys()), sorted(step.keys() - spec.keys())
            raise ValueError(f"step keys differ from the first step: missing {missing}, unexpected {extra}")
        values = {}
        for key, (shape, dtype) in spec.items():
            value = step[key]
            if isinstance(value, (np.ndarray, np.generic)):
                if value.shape != shape or value.dtype != dtype:
                    raise ValueError(f"step key {key!r} has shape {value.shape} and dtype {value.dtype}, "
                                     f"expected shape {shape} and dtype {dtype}")
            elif shape != () or dtype.kind not in _SCALAR_KINDS.get(type(value), ""):
                raise ValueError(f"step key {key!r} has a {type(value).__name__} value, "
                                 f"expected shape {shape} and dtype {dtype}")
            values[key] = value
        self._spec = spec
        return values

    @staticmethod
    def _infer_spec(step: dict) -> dict:
        for key in ("is_first", "is_last"):
            if key not in step or np.shape(step[key]) != ():
                raise ValueError(f"step needs a scalar {key!r} flag to mark episode boundaries")
        spec = {}
        for key, value in step.items():
            if not isinstance(value, (np.ndarray, np.generic)):
                value = np.asarray(value, _SCALAR_DEFAULTS.get(type(value)))
            if value.dtype.kind == "O":
                raise ValueError(f"step key {key!r} holds Python objects, which cannot be stored")
            spec[key] = (value.shape, value.dtype)
        return spec

    # ------------------------------------------------------------------------------------------------
    # Sampling

    def __len__(self) -> int:
        return self._size

    @property
    def num_episodes(self) -> int:
        return self._episodes

    def can_sample(self) -> bool:
        return any(len(stream) >= self.length for stream in self._streams.values())

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """`batch_size` uniform windows; a separate `rng` (reports) leaves the training draws unchanged."""
        streams = [stream for stream in self._streams.values() if len(stream) >= self.length]
        if not streams:
            raise ValueError(f"no stream holds {self.length} steps yet ({self._size} stored); "
                             "check can_sample() first")
        # Drawing one index over all window starts of all streams weights each stream by its windows.
        windows = np.array([len(stream) - self.length + 1 for stream in streams])
        ends = np.cumsum(windows)
        finals = self._final_windows(streams)     # [F, 2]: (stream index, offset)
        picks = (rng or self._rng).integers(ends[-1] + len(finals) * self.length, size=batch_size)
        extra = picks >= ends[-1]                 # an extra chance of a final window
        which = np.searchsorted(ends, np.where(extra, 0, picks), side="right")
        offsets = picks - (ends[which] - windows[which])
        if extra.any():
            final = finals[(picks[extra] - ends[-1]) // self.length]
            which[extra], offsets[extra] = final[:, 0], final[:, 1]
        batch = {key: np.empty((batch_size, self.length, *shape), dtype)
                 for key, (shape, dtype) in self._spec.items()}
        for row, (index, offset) in enumerate(zip(which, offsets)):
            stream = streams[index]
            targets = {key: array[row] for key, array in batch.items()}
            stream.copy(stream.start + int(offset), self.length, targets)
        return batch

    def _final_windows(self, streams: list) -> np.ndarray:
        """(stream index, offset) of each window ending on a finished episode's last step, when
        `prioritize_ends`; else none. Episodes tile a stream from its start, so their ends are
        cumulative lengths."""
        finals = []
        for index, stream in enumerate(streams if self.prioritize_ends else []):
            lengths = np.array([length for _, length, _ in stream.episodes], np.int64)
            complete = np.array([done for _, _, done in stream.episodes], bool)
            offsets = np.cumsum(lengths)[complete] - self.length
            finals += [(index, offset) for offset in offsets[offsets >= 0]]
        return np.array(finals, np.int64).reshape(-1, 2)

    def stats(self) -> dict:
        chunks = sum(len(stream.chunks) for stream in self._streams.values())
        step_bytes = sum(int(np.prod(shape)) * dtype.itemsize
                         for shape, dtype in (self._spec or {}).values())
        return {
            "steps": self._size,
            "episodes": self._episodes,
            "capacity": self.capacity,
            "streams": len(self._streams),
            "windows": sum(max(0, len(s) - self.length + 1) for s in self._streams.values()),
            "chunks": chunks,
            "bytes": chunks * self.chunk_size * step_bytes,
            "written_episodes": self._counts["written_episodes"],
            "loaded_episodes": self._counts["loaded_episodes"],
            "evicted_episodes": self._counts["evicted_episodes"],
        }

    # ------------------------------------------------------------------------------------------------
    # Persistence

    def _write(self, order: int, arrays: dict, length: int) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        name = f"{order:09d}-{stamp}-{uuid.uuid4().hex}-{length}.npz"
        final = os.path.join(self.directory, name)
        temp = os.path.join(self.directory, f".{name}{_TEMP_SUFFIX}")
        try:
            with open(temp, "wb") as file:
                # Written member by member (what np.savez does) so no key can clash with its arguments.
                with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
                    for key, array in arrays.items():
                        with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                            np.lib.format.write_array(member, array, allow_pickle=False)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, final)
        except BaseException as error:
            if os.path.exists(temp):
                os.remove(temp)
            if isinstance(error, OSError):
                raise OSError(error.errno, f"cannot write replay episode to directory "
                                           f"{self.directory!r}: {error}") from error
            raise
        self._sync_directory()
        self._counts["written_episodes"] += 1
        return name

    def _sync_directory(self) -> None:
        # Makes the rename itself durable; not every platform can open a directory.
        if hasattr(os, "O_DIRECTORY"):
            descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def _scan(self, warn: bool) -> list[tuple[int, str, int]]:
        """(order, name, length) of every episode file in the directory, oldest first."""
        entries = []
        for name in os.listdir(self.directory):
            if name.endswith(_TEMP_SUFFIX):
                if warn:
                    warnings.warn(f"ignoring temporary replay file {name!r} in {self.directory!r}, "
                                  "probably left by an interrupted write; it is not deleted",
                                  stacklevel=2)
                continue
            match = _EPISODE_NAME.match(name)
            if match:
                entries.append((int(match[1]), name, int(match[4])))
            elif warn and name.endswith(".npz"):
                warnings.warn(f"ignoring replay file {name!r} in {self.directory!r}: unexpected name",
                              stacklevel=2)
        return sorted(entries)

    def load(self) -> int:
        """Read the newest episode files that fit into the free capacity; returns steps loaded."""
        if self.directory is None:
            return 0
        budget = self.capacity - self._size
        chosen = []
        for order, name, length in reversed(self._scan(warn=True)):
            if name in self._known:
                continue
            if length > budget:
                break  # keep a contiguous recent history rather than filling gaps with older episodes
            arrays = self._read(name, length)
            if arrays is not None:
                chosen.append((order, name, arrays, length))
                budget -= length
        if not chosen:
            return 0
        spec = self._spec or {key: (array.shape[1:], array.dtype) for key, array in chosen[0][2].items()}
        for _, name, arrays, _ in chosen:
            self._check_episode(name, arrays, spec)
        self._spec = spec
        stream = _Stream(spec, self.chunk_size)
        for order, name, arrays, length in reversed(chosen):
            stream.extend(arrays, length)
            stream.close_episode(order, complete=True)
            self._known.add(name)
        self._streams[("loaded", self._loads)] = stream
        self._loads += 1
        self._size += len(stream)
        self._episodes += len(chosen)
        self._counts["loaded_episodes"] += len(chosen)
        self._evict()
        return len(stream)

    def _read(self, name: str, length: int) -> dict | None:
        path = os.path.join(self.directory, name)
        try:
            # Opened here rather than by np.load, which leaves its handle open when the zip is invalid.
            with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except _READ_ERRORS as error:
            warnings.warn(f"skipping unreadable replay file {path!r} (truncated or corrupt): {error}",
                          stacklevel=2)
            return None
        if not arrays or any(array.ndim < 1 or len(array) != length for array in arrays.values()):
            warnings.warn(f"skipping replay file {path!r}: its arrays do not all hold {length} steps",
                          stacklevel=2)
            return None
        return arrays

    @staticmethod
    def _check_episode(name: str, arrays: dict, spec: dict) -> None:
        # A readable file with other keys means the environment or config changed between runs; mixing
        # the two would silently train on wrong data, so this is an error rather than a warning.
        if arrays.keys() != spec.keys():
            raise ValueError(f"replay file {name!r} has keys {sorted(arrays)}, expected {sorted(spec)}")
        for key, (shape, dtype) in spec.items():
            if arrays[key].shape[1:] != shape or arrays[key].dtype != dtype:
                raise ValueError(f"replay file {name!r} key {key!r} has step shape {arrays[key].shape[1:]} "
                                 f"and dtype {arrays[key].dtype}, expected {shape} and {dtype}")
