"""ONNX Runtime inference for the served zoos' entries: a bounded session cache, micro-batching.

Sessions are built as `export.runtime` says (the provider this host really runs, the serving options) from the export
cache's fp32 ONNX files and kept in an LRU of configurable size (a big zoo would not fit in memory at once). With
micro-batching on, each model has one worker thread that gathers the images of concurrent requests (up to
`max_batch`, waiting at most `max_wait_ms` after the first) into one ORT call: on a small CPU that beats many
concurrent batch-1 calls fighting over the same cores. Each entry's requests and model executions are counted and
timed as Triton's statistics extension reports them (`Statistics`).
"""

from __future__ import annotations

import asyncio
import copy
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from export.cache import ExportCache
from export.onnx import run
from export.runtime import choose_providers, serving_session
from zoo.catalog import Catalog
from zoo.store import Zoo, ZooEntry


@dataclass(frozen=True)
class InferenceConfig:
    micro_batching: bool = True
    max_batch: int = 16
    max_wait_ms: float = 5.0
    sessions: int = 4  # ONNX Runtime sessions kept loaded (LRU)
    threads: int | None = None  # ORT intra-op threads; None: ORT's default (one per physical core)
    spinning: bool = False  # ORT's idle threads busy-wait: off, measured faster under load (bench_contention)


class Traffic:
    """Inference calls in flight and started so far: background work (latency profiling) waits for a quiet moment
    and can tell whether a request ran alongside it."""

    def __init__(self) -> None:
        self._quiet = threading.Condition()
        self.in_flight = self.started = 0

    @contextmanager
    def call(self) -> Iterator[None]:
        with self._quiet:
            self.in_flight += 1
            self.started += 1
        try:
            yield
        finally:
            with self._quiet:
                self.in_flight -= 1
                self._quiet.notify_all()

    def wait_quiet(self, timeout: float) -> int | None:
        """Wait (up to `timeout` s) until no call is in flight; then the count of calls started so far, else None."""
        with self._quiet:
            return self.started if self._quiet.wait_for(lambda: self.in_flight == 0, timeout) else None


class SessionCache:
    """LRU of built objects; each key is built once even when many threads ask at the same time."""

    def __init__(self, build: Callable[[str], object], size: int) -> None:
        if size < 1:
            raise ValueError(f"the session cache needs room for at least one session, got {size}")
        self._build, self.size = build, size
        self._items: OrderedDict[str, object] = OrderedDict()
        self._guard = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self.loads = 0

    def get(self, key: str) -> object:
        with self._guard:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            lock = self._building.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._items:
                    return self._items[key]
            item = self._build(key)
            with self._guard:
                self._items[key] = item
                self.loads += 1
                while len(self._items) > self.size:
                    self._items.popitem(last=False)  # in-flight calls keep their own reference
        return item

    def keys(self) -> list[str]:
        with self._guard:
            return list(self._items)


@dataclass
class Duration:
    """A count and the nanoseconds they took, summed (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class EntryStats:
    """One entry's statistics as Triton reports a model's: requests answered (`success`) or refused and failed
    (`fail`) with their time in the server; per request, its time queued for a micro-batch and its batch's model
    execution (`compute_infer`); model executions, the images they ran, and the executions per batch size."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    inference_count: int = 0  # images inferred (Triton counts each batch element)
    execution_count: int = 0  # model executions (micro-batches)
    last_inference_ms: int = 0  # when the last request ended, ms since the epoch
    batches: dict[int, Duration] = field(default_factory=dict)  # batch size -> executions and their time


class Statistics:
    """EntryStats of every entry requested so far (keys: entry ids, so at most the zoo's entries), thread-safe: the
    event loop counts requests, the batcher threads executions."""

    def __init__(self) -> None:
        self._entries: dict[str, EntryStats] = {}
        self._guard = threading.Lock()

    @contextmanager
    def request(self, entry_id: str) -> Iterator[None]:
        """Count the request run in the block: a success, or a failure when the block raises (a refused input too)."""
        start, ok = time.monotonic_ns(), False
        try:
            yield
            ok = True
        finally:
            with self._guard:
                stats = self._entries.setdefault(entry_id, EntryStats())
                (stats.success if ok else stats.fail).add(time.monotonic_ns() - start)
                stats.last_inference_ms = time.time_ns() // 1_000_000

    def executed(self, entry_id: str, queued_ns: list[int], compute_ns: int, images: int) -> None:
        """One model execution of `images` images for the requests that waited `queued_ns` for it."""
        with self._guard:
            stats = self._entries.setdefault(entry_id, EntryStats())
            stats.queue.add(sum(queued_ns), len(queued_ns))
            stats.compute_infer.add(compute_ns * len(queued_ns), len(queued_ns))  # each request waited for all of it
            stats.inference_count += images
            stats.execution_count += 1
            stats.batches.setdefault(images, Duration()).add(compute_ns)

    def of(self, entry_id: str) -> EntryStats:
        """A copy of the entry's statistics (zeros for an entry never requested)."""
        with self._guard:
            return copy.deepcopy(self._entries.get(entry_id, EntryStats()))


Executed = Callable[[list[int], int, int], None]  # Statistics.executed for one entry: (queued ns, compute ns, images)


@dataclass
class _Job:
    x: np.ndarray
    future: Future = field(default_factory=Future)
    queued_ns: int = field(default_factory=time.monotonic_ns)


class MicroBatcher:
    """One worker thread: concatenate queued jobs (up to `max_batch` images) into one call, scatter the rows.
    `executed` (optional) hears of every call that succeeded: the jobs' queue times, the call's time, its images."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float, name: str,
                 executed: Executed | None = None) -> None:
        self._fn, self.max_batch, self.max_wait, self._executed = fn, max_batch, max_wait_ms / 1e3, executed
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._carry: _Job | None = None  # a job that did not fit the last batch: it opens the next one
        self.batches = self.images = 0
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, x: np.ndarray) -> Future:
        job = _Job(x)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self._carry or self._queue.get()
            self._carry = None
            if first is None:
                return
            jobs, stop = self._gather(first)
            self._run(jobs)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """Jobs for one batch, and whether the close sentinel arrived meanwhile."""
        jobs, n = [first], len(first.x)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            if n + len(job.x) > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            n += len(job.x)
        return jobs, False

    def _run(self, jobs: list[_Job]) -> None:
        start = time.monotonic_ns()
        try:
            out = self._fn(np.concatenate([j.x for j in jobs]))
        except Exception as e:
            for j in jobs:
                j.future.set_exception(e)
            return
        if self._executed:
            self._executed([start - j.queued_ns for j in jobs], time.monotonic_ns() - start, len(out))
        self.batches += 1
        self.images += len(out)
        start = 0
        for j in jobs:
            j.future.set_result(out[start:start + len(j.x)])
            start += len(j.x)


class NonFiniteLogits(ValueError):
    """A model's output for one request is not finite: never answered as numbers (JSON has no NaN)."""


class Engine:
    """Logits and class probabilities for a batch of preprocessed images with any entry of the served zoos (one zoo,
    or several as a Catalog); each entry's session is built from its own zoo."""

    def __init__(self, zoos: Zoo | Catalog, cache: ExportCache, config: InferenceConfig,
                 providers: tuple[list[str], str] | None = None) -> None:
        self.zoos, self.cache, self.config = Catalog.of(zoos), cache, config
        self.providers, self.provider_reason = providers or choose_providers()
        self.sessions = SessionCache(lambda entry_id: self.new_session(self.zoos.entry(entry_id)), config.sessions)
        self._batchers: dict[str, MicroBatcher] = {}
        self._guard = threading.Lock()
        self.traffic = Traffic()
        self.stats = Statistics()

    def new_session(self, entry: ZooEntry):
        """A session of the entry as this engine serves it (providers, threads, spinning), outside the LRU: the
        latency profiler times these."""
        return serving_session(self.cache, self.zoos.zoo_of(entry), entry, self.providers, self.config.threads,
                               self.config.spinning)

    def logits(self, entry: ZooEntry, x: np.ndarray) -> np.ndarray:
        """One ORT call (blocking)."""
        with self.traffic.call():
            return run(self.sessions.get(entry.id), x)

    def timed_logits(self, entry: ZooEntry, x: np.ndarray, queued_ns: int) -> np.ndarray:
        """One ORT call for one request that waited since `queued_ns` (monotonic), counted in the statistics."""
        start = time.monotonic_ns()
        out = self.logits(entry, x)
        self.stats.executed(entry.id, [start - queued_ns], time.monotonic_ns() - start, len(x))
        return out

    def batcher(self, entry: ZooEntry) -> MicroBatcher:
        with self._guard:
            if entry.id not in self._batchers:
                self._batchers[entry.id] = MicroBatcher(
                    lambda x: self.logits(entry, x), self.config.max_batch, self.config.max_wait_ms, entry.id,
                    executed=lambda queued, compute, images: self.stats.executed(entry.id, queued, compute, images))
            return self._batchers[entry.id]

    def batching_stats(self) -> dict[str, float]:
        """Micro-batches run and images in them, over all models: their ratio is the mean batch size."""
        with self._guard:
            batches = sum(b.batches for b in self._batchers.values())
            images = sum(b.images for b in self._batchers.values())
        return {"batches": batches, "images": images, "mean_batch": round(images / batches, 2) if batches else 0.0}

    async def batched_logits(self, entry: ZooEntry, x: np.ndarray) -> np.ndarray:
        """Logits, (n, classes); micro-batched with other requests when that is on (REST and v2 share the batches).
        NonFiniteLogits when this request's logits hold NaN or infinities (checked per request, so that one bad
        input never fails the other requests of its micro-batch)."""
        if self.config.micro_batching:
            logits = await asyncio.wrap_future(self.batcher(entry).submit(x))
        else:
            logits = await asyncio.to_thread(self.timed_logits, entry, x, time.monotonic_ns())
        if not np.isfinite(logits).all():
            raise NonFiniteLogits(f"model {entry.id} gave NaN or infinite logits for this input: its values are "
                                  f"outside what the model can take (preprocess images as the zoo says)")
        return logits

    async def probabilities(self, entry: ZooEntry, x: np.ndarray) -> np.ndarray:
        """Softmax over the classes, (n, classes)."""
        return softmax(await self.batched_logits(entry, x))

    def close(self) -> None:
        with self._guard:
            batchers, self._batchers = list(self._batchers.values()), {}
        for b in batchers:
            b.close()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def top_k(probabilities: np.ndarray, labels: list[str], k: int) -> list[list[dict[str, float | str]]]:
    """Per image, the k most likely labels with their probabilities, most likely first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[{"label": labels[i], "probability": float(p[i])} for i in row] for p, row in zip(probabilities, order,
                                                                                           strict=True)]
