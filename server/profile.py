"""Latency measured where it is served: each entry timed on this host's execution provider with the serving session
options (`Engine.new_session`), by the server in the background after start into its own state (the zoo
folder may be read-only or a Hub cache; `python -m export profile` writes the zoo's index instead). Budgets read one
lookup: the serving host's numbers where present, the zoo's otherwise; every latency carries who measured it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from export.cache import ExportCache
from export.onnx import measure_latency
from export.profile import input_shape, latency_protocol
from server.inference import Engine
from zoo.catalog import Catalog
from zoo.schema import FP32
from zoo.store import LatencyUnknownError, Variant, Zoo, ZooEntry, protocol_text

log = logging.getLogger("server")
SERVED_WARMUP, SERVED_RUNS = 5, 30  # the server's background profile: short rounds, redone when a request interrupts
QUIET_POLL_S = 0.2  # how often a waiting profiler checks for its stop signal


class ProfilingInProgress(LatencyUnknownError):
    """A latency budget while this server is still profiling the entries the zoo has no latency for."""

    def __init__(self, message: str, missing: list[str], progress: dict[str, Any]) -> None:
        super().__init__(message, missing)
        self.progress = progress


@dataclass(frozen=True)
class MeasuredLatency:
    """An entry's latency (median_ms, p10_ms, p90_ms) and who measured it: this server ("served") or whoever
    profiled the zoo ("zoo")."""

    numbers: dict[str, float]
    source: str
    host: str | None
    provider: str | None
    protocol: str | None  # how, in one phrase (zoo.store.protocol_text)

    @property
    def median_ms(self) -> float:
        return self.numbers["median_ms"]

    def origin(self) -> dict[str, str | None]:
        return {"source": self.source, "host": self.host, "provider": self.provider}

    def describe(self) -> str:
        """'served on HOST, PROVIDER' or 'zoo's, measured on HOST, PROVIDER'."""
        who = "on this server" if self.source == "served" else "the zoo's"
        return f"{who}: {self.host or 'unknown host'}, {self.provider or 'unknown provider'}"


def zoo_latency(zoo: Zoo, entry: ZooEntry) -> MeasuredLatency | None:
    """The latency the zoo's index records for the entry (None: not measured), with its protocol's host and provider
    (older protocols name only the machine type and the engine)."""
    if entry.latency is None:
        return None
    p = zoo.doc.get("latency_protocol") or {}
    return MeasuredLatency(entry.latency, "zoo", p.get("host") or p.get("device"), p.get("provider") or p.get("engine"),
                           zoo.latency_protocol_text())


class LatencyProfiler:
    """Profiles every entry of every served zoo once on the serving engine's provider and session options, one entry
    at a time in one background thread, and only while no inference call is in flight: a round a request ran
    alongside is measured again. `latency` is the lookup everything reads (served numbers first, the entry's zoo's
    otherwise)."""

    def __init__(self, zoos: Zoo | Catalog, cache: ExportCache, engine: Engine, enabled: bool,
                 warmup: int = SERVED_WARMUP, runs: int = SERVED_RUNS) -> None:
        self.provider = engine.providers[0] if engine.providers else None  # None: no sessions here (the Ray ingress)
        self.zoos, self.cache, self.engine = Catalog.of(zoos), cache, engine
        self.enabled = enabled and self.provider is not None
        self.warmup, self.runs = warmup, runs
        self.protocol = (latency_protocol(self.provider, engine.config.threads, 1, warmup, runs) if self.enabled
                         else None)
        self._served: dict[str, dict[str, float]] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._profile_all, name="latency-profiler", daemon=True)

    # -- the lookup ----------------------------------------------------------------------------
    def latency(self, entry: ZooEntry) -> MeasuredLatency | None:
        with self._lock:
            served = self._served.get(entry.id)
        if served is None:
            return zoo_latency(self.zoos.zoo_of(entry), entry)
        return MeasuredLatency(served, "served", self.protocol["host"], self.provider, protocol_text(self.protocol))

    def latency_ms(self, entry: ZooEntry) -> float | None:
        """The median a latency budget compares with (Zoo.query's `latency_of`)."""
        measured = self.latency(entry)
        return None if measured is None else measured.median_ms

    def progress(self) -> dict[str, Any]:
        """For /api/health: off, running or done; how many entries are profiled, which failed and why."""
        with self._lock:
            profiled, failed = len(self._served), dict(self._failed)
        total = len(self.zoos.entries)
        state = "off" if not self.enabled else "done" if profiled + len(failed) == total else "running"
        return {"state": state, "profiled": profiled, "failed": failed, "entries": total, "provider": self.provider,
                "host": self.protocol and self.protocol["host"],
                "protocol": self.protocol and protocol_text(self.protocol)}

    def query(self, max_params: str | float | None = None, max_flops: str | float | None = None,
              max_latency_ms: str | float | None = None) -> ZooEntry:
        """Catalog.query (over every served zoo) reading latencies through `latency_ms`; ProfilingInProgress while an
        entry lacks one that the profiling under way will measure."""
        try:
            return self.zoos.query(max_params, max_flops, max_latency_ms, latency_of=self.latency_ms)
        except LatencyUnknownError as e:
            progress = self.progress()
            if progress["state"] != "running":
                raise
            raise ProfilingInProgress(f"latency budgets need every entry's latency; this server is measuring them "
                                      f"now ({progress['profiled']} of {progress['entries']} entries done): retry in "
                                      f"a moment (GET /api/health shows the progress)", e.missing, progress) from None

    def query_variant(self, max_bytes: str | float, max_params: str | float | None = None,
                      max_flops: str | float | None = None, max_latency_ms: str | float | None = None
                      ) -> tuple[ZooEntry, Variant]:
        """Catalog.query_variant reading the fp32 files' latencies through `latency_ms` (`query`)."""
        try:
            return self.zoos.query_variant(max_bytes, max_params, max_flops, max_latency_ms,
                                           latency_of=self.latency_ms)
        except LatencyUnknownError as e:
            if self.progress()["state"] != "running" or not any(i.endswith(f"/{FP32}") for i in e.missing):
                raise  # the variants' latencies are the zoo's (`export sizes --latency`): no wait makes them
            progress = self.progress()
            raise ProfilingInProgress(f"latency budgets need every file's latency; this server is measuring the "
                                      f"entries' now ({progress['profiled']} of {progress['entries']} done): retry "
                                      f"in a moment (GET /api/health shows the progress)", e.missing,
                                      progress) from None

    # -- the background thread -----------------------------------------------------------------
    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _profile_all(self) -> None:
        for entry in self.zoos.entries:
            try:
                numbers = self._profile(entry)
            except Exception as e:  # an export the cache cannot write, a provider refusing this model: report, go on
                log.warning("latency profiling of %s failed: %s", entry.id, e)
                with self._lock:
                    self._failed[entry.id] = str(e)
                continue
            if numbers is None:
                return
            with self._lock:
                self._served[entry.id] = numbers
        log.info("latency profiling done: %s", self.progress())

    def _profile(self, entry: ZooEntry) -> dict[str, float] | None:
        """The entry's numbers from a round no request ran alongside (None: stopped first)."""
        sess = self.engine.new_session(entry)
        traffic = self.engine.traffic
        while not self._stop.is_set():
            started = traffic.wait_quiet(QUIET_POLL_S)
            if started is None:
                continue
            numbers = measure_latency(sess, input_shape(self.zoos.zoo_of(entry), 1), self.warmup, self.runs)
            if traffic.wait_quiet(0) == started:
                return numbers
        return None

