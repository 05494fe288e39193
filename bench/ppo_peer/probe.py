"""Phase timers and an RSS sampler for the PPO peer runners (stdlib only: imported under TRL 1.16 and TRL 1.12).

Peak RSS alone (``ru_maxrss``) says nothing about *where* memory goes: it includes imports, model-load spikes and
allocator arenas. The sampler thread reads ``/proc/self/statm`` every ``interval`` seconds and charges each reading
to the phases open at that moment, so a peak can be told apart as "model load", "generate", "backward", ...

    probe = Probe()
    with probe.phase("load"):
        ...
    probe.wrap(trainer, "_generate", "generate")  # every call of trainer._generate is timed as phase "generate"
    probe.mark("train start")                     # a point on the RSS timeline
    payload["probe"] = probe.summary()
"""

from __future__ import annotations

import functools
import os
import threading
import time
from contextlib import contextmanager
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


class Probe:
    def __init__(self, interval: float = 0.02) -> None:
        self.t0 = time.perf_counter()
        self._stack: list[str] = []
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # the calling thread's CPU time: less sensitive to other jobs' load
        self.calls: dict[str, int] = {}
        self.peak: dict[str, float] = {}  # phase -> highest RSS sampled while it was open
        self.marks: list[tuple[str, float, float, float]] = []  # (label, t, rss, 1-min load average)
        self.top = (0.0, 0.0, "")  # (rss, t, phase path) of the highest sample
        self.timeline: list[tuple[float, float, str]] = []  # (t, highest rss since the last entry, phase), ~1/s
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        window, last = (0.0, ""), 0.0
        while not self._stop.is_set():
            rss, stack = rss_mib(), tuple(self._stack)
            now = time.perf_counter() - self.t0
            if rss >= window[0]:
                window = (rss, "/".join(stack))
            if now - last >= 1.0:
                self.timeline.append((round(now, 1), round(window[0], 1), window[1]))
                window, last = (0.0, ""), now
            for i in range(len(stack)):
                path = "/".join(stack[: i + 1])
                self.peak[path] = max(self.peak.get(path, 0.0), rss)
            if rss > self.top[0]:
                self.top = (rss, time.perf_counter() - self.t0, "/".join(stack) or "(no phase)")
            self._stop.wait(self._interval)

    @contextmanager
    def phase(self, name: str):
        self._stack.append(name)
        path = "/".join(self._stack)
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.seconds[path] = self.seconds.get(path, 0.0) + time.perf_counter() - start
            self.cpu_seconds[path] = self.cpu_seconds.get(path, 0.0) + time.thread_time() - cpu
            self.calls[path] = self.calls.get(path, 0) + 1
            self._stack.pop()

    def wrap(self, obj: Any, attr: str, name: str | None = None) -> None:
        """Time every call of ``obj.attr`` (a method, or a module-level function) as phase ``name``."""
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name or attr):
                return fn(*args, **kwargs)

        setattr(obj, attr, timed)

    def mark(self, label: str) -> None:
        t, load = round(time.perf_counter() - self.t0, 2), round(os.getloadavg()[0], 2)
        self.marks.append((label, t, round(rss_mib(), 1), load))

    def summary(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {
            "seconds": {k: round(v, 2) for k, v in sorted(self.seconds.items())},
            "cpu_seconds": {k: round(v, 2) for k, v in sorted(self.cpu_seconds.items())},
            "calls": dict(sorted(self.calls.items())),
            "peak_rss_mib": {k: round(v, 1) for k, v in sorted(self.peak.items())},
            "marks": self.marks,
            "timeline": self.timeline,
            "top": {"rss_mib": round(self.top[0], 1), "t": round(self.top[1], 2), "phase": self.top[2]},
        }
