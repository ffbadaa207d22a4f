"""Stage 6 (isolated calls): native calls run in a worker process, so that
code that segfaults, aborts or overflows its stack raises KernelCrashError
instead of ending the interpreter (``compile(..., isolate=True)``).

One worker serves the process. Each call copies the call's buffers (arrays,
output cells, a split derivative's tape) into a shared memory region, the
worker calls the same entry point of the same library with pointers into
that region, and the buffers the entry point may write (non-const pointers
of its C declaration) are copied back. The worker loads each library
itself, so module globals are its own copies (docs/safety.md, "Crash isolation"). When it
dies, the call raises and the next call starts a new worker.

The worker's side is :func:`_serve`, started with the memory's and the
socket's file descriptors.
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import cffi

from .errors import EnzymeError, KernelCrashError

__all__ = ["IsolatedEntry"]

_ALIGN = 64  # each buffer starts on a cache line (and any vector alignment)


def _send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack("<Q", len(data)) + data)


def _recv(sock: socket.socket) -> Any:
    def exactly(n: int) -> bytes:
        parts, left = [], n
        while left:
            chunk = sock.recv(min(left, 1 << 20))
            if not chunk:
                raise EOFError
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)
    (size,) = struct.unpack("<Q", exactly(8))
    return pickle.loads(exactly(size))


class _Worker:
    """The worker process and the shared region, used under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.fd = -1
        self.size = 0
        self.region: mmap.mmap | None = None
        self.ffi = cffi.FFI()
        self.base: Any = None
        self.pid = os.getpid()

    def _ensure(self, need: int) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._died("an earlier call")  # died between calls: start afresh
        grow = self.region is None or need > self.size
        if grow:
            size = max(need, 1 << 20, 2 * self.size)
            if self.fd < 0:
                self.fd = os.memfd_create("enzyme-ffi-isolated", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, size)
            # The old map is dropped, not closed: a pointer into it may still
            # be alive (in a traceback's frame), and closing an exported map
            # raises; it is unmapped when the last reference goes.
            self.base = None
            self.region = mmap.mmap(self.fd, size)
            self.base = self.ffi.from_buffer("char[]", self.region)
            self.size = size
        if self.proc is None:
            self._start()
        elif grow:
            try:
                _send(self.sock, ("map", self.size))
            except OSError:
                self._died("an earlier call")
                self._start()

    def _start(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        # the worker must import this very package, wherever it was loaded from
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from enzyme.worker import _serve; "
                 "_serve(*map(int, sys.argv[1:]))", str(self.fd), str(child.fileno()),
                 str(self.size)],
                pass_fds=(self.fd, child.fileno()), stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            raise EnzymeError(f"could not start the worker process of isolate=True: {exc}") from exc
        finally:
            child.close()
        self.sock = parent

    def _died(self, what: str) -> KernelCrashError:
        proc = self.proc
        self.proc = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        code = proc.wait() if proc is not None else 0
        if code < 0:
            name = signal.Signals(-code).name
            return KernelCrashError(
                f"{what} crashed its worker process with {name} "
                f"({signal.strsignal(-code)}); the interpreter is unaffected and the next call "
                "starts a new worker. Wrong pointers or lengths in the C code, a stack overflow "
                "(deep recursion), abort() or a failed assert are the usual causes; an Enzyme "
                "derivative that crashes while the kernel does not is an Enzyme defect (see "
                "docs/correctness.md, known limitations of the pinned Enzyme).", name)
        return KernelCrashError(f"{what} ended its worker process (exit status {code}); the next "
                                "call starts a new worker.", f"exit {code}")

    def call(self, entry: IsolatedEntry, ffi: cffi.FFI, args: Sequence[Any]) -> Any:
        layout, specs, offset = [], [], 0
        for arg, writable in zip(args, entry.writable):
            if isinstance(arg, ffi.CData) and ffi.typeof(arg).kind == "array":
                size = ffi.sizeof(arg)
                layout.append((arg, offset, size, writable))
                specs.append(("buf", offset))
                offset += (size + _ALIGN - 1) // _ALIGN * _ALIGN or _ALIGN
            else:
                specs.append(("val", arg))
        with self.lock:
            self._ensure(offset)
            base = self.base
            for arg, start, size, _ in layout:
                ffi.memmove(base + start, arg, size)
            try:
                _send(self.sock, ("call", entry.so_path, entry.cdef, entry.name, specs))
                status, value = _recv(self.sock)
            except (EOFError, OSError):
                raise self._died(entry.what) from None
            except BaseException:  # interrupted mid-call: the worker's state is unknown
                if self.proc is not None:
                    self.proc.kill()
                self._died(entry.what)
                raise
            if status == "error":
                raise EnzymeError(f"the worker process could not run {entry.what}: {value}")
            for arg, start, size, writable in layout:
                if writable:
                    ffi.memmove(arg, base + start, size)
            return value

    def reset_after_fork(self) -> None:
        # A forked child calls in-process (it is isolated by the fork
        # already); the parent's worker and region are not its to use.
        self.lock = threading.Lock()
        self.proc, self.sock, self.fd, self.region, self.base, self.size = None, None, -1, None, None, 0
        self.pid = os.getpid()


_worker = _Worker()
os.register_at_fork(after_in_child=_worker.reset_after_fork)


class IsolatedEntry:
    """A native entry point called in the worker process. ``fallback`` (the
    in-process call) serves forked children, such as a first-use check's."""

    __slots__ = ("so_path", "cdef", "name", "writable", "what", "fallback", "ffi", "pid")

    def __init__(self, so_path: str, cdef: str, name: str, writable: tuple[bool, ...], what: str,
                 ffi: cffi.FFI, fallback: Any) -> None:
        self.so_path, self.cdef, self.name = so_path, cdef, name
        self.writable, self.what, self.ffi, self.fallback = writable, what, ffi, fallback
        self.pid = os.getpid()

    def __call__(self, *args: Any) -> Any:
        if os.getpid() != _worker.pid or os.getpid() != self.pid:
            return self.fallback(*args)
        return _worker.call(self, self.ffi, args)


def _serve(shm_fd: int, sock_fd: int, size: int) -> None:
    sock = socket.socket(fileno=sock_fd)
    ffi = cffi.FFI()
    region = mmap.mmap(shm_fd, size)
    base = int(ffi.cast("uintptr_t", ffi.from_buffer("char[]", region)))
    libraries: dict[tuple[str, str], tuple[cffi.FFI, Any]] = {}
    while True:
        try:
            message = _recv(sock)
        except EOFError:
            return  # the parent closed the connection or exited
        if message[0] == "map":
            del region
            region = mmap.mmap(shm_fd, message[1])
            base = int(ffi.cast("uintptr_t", ffi.from_buffer("char[]", region)))
            continue
        _, so_path, cdef, name, specs = message
        try:
            loaded = libraries.get((so_path, cdef))
            if loaded is None:
                lib_ffi = cffi.FFI()
                lib_ffi.cdef(cdef)
                loaded = libraries[(so_path, cdef)] = (lib_ffi, lib_ffi.dlopen(so_path))
            lib_ffi, lib = loaded
            fn = getattr(lib, name)
            params = lib_ffi.typeof(fn).args
            args = [lib_ffi.cast(params[i], base + value) if kind == "buf" else value
                    for i, (kind, value) in enumerate(specs)]
            result = fn(*args)
            reply = ("ok", result)
        except Exception as exc:  # a Python-level failure: reported, the worker lives on
            reply = ("error", f"{type(exc).__name__}: {exc}")
        _send(sock, reply)

