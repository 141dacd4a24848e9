"""The playground's renders, each in its own short-lived process, bounded in memory and time.

A Liquid template is a small program: `{% assign s = s | append: s %}` doubles a string each step,
`join` and `replace` multiply it, and checks made after a filter ran are too late (the worker that
answers Braze froze for 13 s and took gigabytes). So a render never runs in a worker: a fresh process
(started ahead of need, so a render does not wait for Python to start) takes one template, renders it
under an address-space limit (MAX_MEMORY) and a CPU limit, and exits. The parent waits for it without
blocking the worker (a pipe read: cooperative under gevent) and kills it past MAX_SECONDS. Nothing a
template does can touch the memory or the CPU time of the process serving wallets.

No Flask here. Run as `python -m wallet_proxy.preview.isolate` it is the child.
"""
from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .liquid import Rendered, TemplateProblem

MAX_MEMORY = 256 * 1024 * 1024  # bytes of address space for one render's process (SPEC)
MAX_SECONDS = 1.0  # seconds one render may take (SPEC)
MAX_CONCURRENT = 2  # renders at once per worker process; more wait for a turn
WAIT_FOR_TURN = 5.0  # seconds a render waits for a turn before the playground answers busy
START_TIMEOUT = 20.0  # seconds for a child to load (a loaded host can be slow; not the template's time)
READY = b"R"
WALL_FACTOR = 3  # wall-clock seconds allowed per second of CPU budget before the parent kills


class PlaygroundBusy(Exception):
    """Every render slot stayed taken for WAIT_FOR_TURN seconds."""


class IsolatedPlayground:
    """Renders templates in child processes; the same `render(source, data)` as liquid.Playground."""

    def __init__(self, *, clock=time.time, max_memory: int = MAX_MEMORY, max_seconds: float = MAX_SECONDS,
                 max_source: int | None = None, concurrency: int = MAX_CONCURRENT, spares: int = 1):
        self.clock = clock
        self.max_memory = max_memory
        self.max_seconds = max_seconds
        self.max_source = max_source
        self.spares = spares
        self._turns = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._ready: list[subprocess.Popen] = []
        self._fill()

    # -- children ---------------------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen:
        package_parent = str(Path(__file__).resolve().parents[2])
        # a clean environment: the child never sees the service's secrets
        env = {"PATH": os.defpath, "PYTHONPATH": package_parent, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        return subprocess.Popen([sys.executable, "-m", "wallet_proxy.preview.isolate"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                close_fds=True, cwd="/")

    def _fill(self) -> None:
        with self._lock:
            self._ready = [p for p in self._ready if p.poll() is None]
            while len(self._ready) < self.spares:
                self._ready.append(self._spawn())

    def _take(self) -> subprocess.Popen:
        with self._lock:
            while self._ready:
                proc = self._ready.pop(0)
                if proc.poll() is None:
                    return proc
        return self._spawn()

    @staticmethod
    def _ready_to_render(proc: subprocess.Popen) -> bool:
        """Wait for the child's ready byte (written once Python and python-liquid are loaded)."""
        readable, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        return bool(readable) and proc.stdout.read(1) == READY

    def close(self) -> None:
        """Stop the spare processes (they would exit on their own when this process ends)."""
        with self._lock:
            for proc in self._ready:
                proc.kill()
                proc.wait()
            self._ready = []

    # -- rendering --------------------------------------------------------------------------------

    def render(self, source: str, data: dict) -> Rendered:
        """Render in a child; raise TemplateProblem (limit, syntax, render) or PlaygroundBusy."""
        if self.max_source is not None and len(source) > self.max_source:
            raise TemplateProblem("limit", f"the template is longer than {self.max_source} characters")
        if not self._turns.acquire(timeout=WAIT_FOR_TURN):
            raise PlaygroundBusy()
        try:
            proc = self._take()
            self._fill()  # the next render finds a started process
            job = json.dumps({"source": source, "data": data, "now": self.clock(),
                              "max_memory": self.max_memory, "max_seconds": self.max_seconds,
                              "max_source": self.max_source}).encode()
            if not self._ready_to_render(proc):
                proc.kill()
                proc.communicate()
                raise TemplateProblem("limit", "the render process did not start") from None
            try:
                # The child stops itself after max_seconds of CPU (SIGPROF); this wall-clock cap is the
                # backstop, with room for a host so busy that a second of CPU takes longer to get.
                out, _ = proc.communicate(job, timeout=WALL_FACTOR * self.max_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise TemplateProblem("limit", f"the template took longer than {self.max_seconds:g} s "
                                               "to render") from None
        finally:
            self._turns.release()
        try:
            answer = json.loads(out) if out else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            # killed by its CPU limit (SIGXCPU/SIGKILL) or by the kernel for memory: no answer written
            if proc.returncode in (-signal.SIGPROF, -signal.SIGXCPU, -signal.SIGKILL):
                raise TemplateProblem("limit", f"the template took longer than {self.max_seconds:g} s "
                                               "to render")
            if proc.returncode is not None and proc.returncode < 0:
                raise TemplateProblem("limit", f"the template used more than {self.max_memory // 2**20} MB "
                                               "of memory or another limit of the render")
            raise TemplateProblem("limit", "the render process stopped without an answer")
        if answer.get("ok"):
            return Rendered(output=answer["output"], aborted=answer["aborted"],
                            elapsed_ms=answer["elapsed_ms"])
        problem = answer.get("problem") or {}
        raise TemplateProblem(problem.get("kind") or "render", problem.get("reason") or "did not render",
                              problem.get("line"), problem.get("column"), problem.get("source_line"))


# -- the child ---------------------------------------------------------------------------------------


def _limit(max_memory: int, max_seconds: float) -> None:
    """From now on: at most `max_memory` bytes of address space and `max_seconds` of CPU."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))  # beyond it: MemoryError
    # SIGPROF's default action ends the process, even inside one long C call (a huge str.replace)
    signal.setitimer(signal.ITIMER_PROF, max_seconds)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    spent = usage.ru_utime + usage.ru_stime  # the interpreter's start-up, already paid
    soft = math.ceil(spent + max_seconds) + 1  # the kernel's backstop, in whole seconds
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))


def child() -> int:
    """Read one job from stdin, render it under the limits, write one JSON answer to stdout."""
    from .liquid import Playground

    sys.stdout.buffer.write(READY)  # started and imported: the parent starts the clock now
    sys.stdout.buffer.flush()
    raw = sys.stdin.buffer.read()  # waits here until a render comes
    if not raw:
        return 0
    job = json.loads(raw)
    _limit(job["max_memory"], job["max_seconds"])
    now = job["now"]
    # the in-process checks still run first: they name the line, where a kill cannot
    playground = Playground(clock=lambda: now, max_seconds=job["max_seconds"] * 0.8,
                            **({"max_source": job["max_source"]} if job.get("max_source") else {}))
    try:
        rendered = playground.render(job["source"], job["data"])
        answer = {"ok": True, "output": rendered.output, "aborted": rendered.aborted,
                  "elapsed_ms": rendered.elapsed_ms}
    except TemplateProblem as problem:
        answer = {"ok": False, "problem": problem.as_dict()}
    except MemoryError:
        answer = {"ok": False, "problem": {"kind": "limit", "reason": "the template needed more than "
                                           f"{job['max_memory'] // 2**20} MB of memory"}}
    except RecursionError:
        answer = {"ok": False, "problem": {"kind": "limit", "reason": "the template nests too deeply"}}
    except Exception as exc:  # a filter failing in a way python-liquid does not wrap: the template's fault
        answer = {"ok": False, "problem": {"kind": "render", "reason": "a value in the template is not of a kind "
                                                                     "its filter or tag can use"}}
    sys.stdout.buffer.write(json.dumps(answer).encode())
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(child())
