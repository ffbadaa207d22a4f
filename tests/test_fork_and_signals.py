"""A derivative build that another thread or a signal handler interrupts
never deadlocks the process (issues 10 and 17): a forked child finds the
build locks free, and a handler asking for the derivative being built gets
ReentrantCallError instead of waiting for itself."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
import warnings

import pytest

import enzyme
from enzyme import Active, Reverse, build


def _source(tag: str) -> str:
    # a fresh source per test: its derivative is really built, not loaded
    return f"double cube(double x) {{ return x * x * x; }} /* {tag} {os.getpid()} {time.time_ns()} */"


def test_a_child_forked_during_a_build_can_build(cc, monkeypatch):
    mod = cc(_source("fork"), verify=False)
    started, release = threading.Event(), threading.Event()
    real, first = build.build_derivative, []

    def paused_build(*args, **kwargs):
        if not first:  # the parent's build: hold it (and its lock) across the fork
            first.append(True)
            started.set()
            release.wait(60)
        return real(*args, **kwargs)
    monkeypatch.setattr(build, "build_derivative", paused_build)
    parent_result: dict = {}
    thread = threading.Thread(target=lambda: parent_result.setdefault(
        "derivs", enzyme.autodiff(Reverse, mod.cube, Active(2.0)).derivs))
    thread.start()
    assert started.wait(60)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: the build thread does not exist here
        os.close(read_end)
        try:
            outcome = enzyme.autodiff(Reverse, mod.cube, Active(2.0)).derivs
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        os.write(write_end, pickle.dumps(outcome))
        os._exit(0)
    os.close(write_end)
    release.set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on a lock held by the parent's build thread")
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pickle.loads(pipe.read())
    thread.join()
    assert outcome == (12.0,)
    assert parent_result["derivs"] == (12.0,)


def _differentiating_handler(mod, seen: dict):
    """A signal handler that asks for d cube at 2 and records what it got."""
    def handler(signum, frame):
        try:
            seen["handler"] = enzyme.autodiff(Reverse, mod.cube, Active(2.0)).derivs
        except enzyme.ReentrantCallError as exc:
            seen["handler"] = exc
    return handler


def test_a_signal_handler_asking_for_the_derivative_being_built(cc, monkeypatch):
    mod = cc(_source("signal"), verify=False)
    real = build.build_derivative
    seen: dict = {}
    handler = _differentiating_handler(mod, seen)

    def interrupted_build(*args, **kwargs):
        signal.raise_signal(signal.SIGUSR1)  # the handler runs now, inside the build
        return real(*args, **kwargs)
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        monkeypatch.setattr(build, "build_derivative", interrupted_build)
        assert enzyme.autodiff(Reverse, mod.cube, Active(3.0)).derivs == (27.0,)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert isinstance(seen["handler"], enzyme.ReentrantCallError)
    assert "signal handler" in str(seen["handler"])
    # outside the handler the same call works, and the build was not spoiled
    monkeypatch.setattr(build, "build_derivative", real)
    assert enzyme.autodiff(Reverse, mod.cube, Active(2.0)).derivs == (12.0,)


def test_a_signal_handler_during_the_first_use_check(cc, monkeypatch):
    mod = cc(_source("check"), verify=True)
    seen: dict = {}
    handler = _differentiating_handler(mod, seen)
    df = mod.cube.derivative_function(Reverse, (Active,))
    check = df.first_call
    assert check is not None

    def interrupted_check(fn, *args):
        signal.raise_signal(signal.SIGUSR1)
        return check(fn, *args)
    df.first_call = interrupted_check
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        assert enzyme.autodiff(Reverse, mod.cube, Active(3.0)).derivs == (27.0,)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert isinstance(seen["handler"], enzyme.ReentrantCallError)
