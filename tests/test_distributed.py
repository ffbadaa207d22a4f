"""Modules, kernels, derivatives and transforms pickle as what built them
and rebuild in other processes: spawn pools, a source file gone after the
compile, and a real dask.distributed LocalCluster running a gradient-based
parameter sweep checked against the same sweep run serially (and its
gradient against central differences)."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import enzyme
from conftest import need
from enzyme import Const, Duplicated, Reverse, ReverseSplitWithPrimal, autodiff_thunk, derivative, grad

MODEL = """
#include <math.h>
/* a decaying oscillation fitted to samples: sum of squared residuals */
double misfit(const double *p, const double *t, const double *y, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        double r = p[0] * exp(-p[1] * t[i]) * cos(p[2] * t[i]) - y[i];
        s += r * r;
    }
    return s;
}
"""


def descend(gradient, start, t, y, steps=25, rate=2e-3):
    """A few steps of gradient descent (what each task of a sweep runs)."""
    p = np.array(start, dtype=float)
    for _ in range(steps):
        p -= rate * gradient(p, t, y, len(t))
    return p


def call_pickled(payload: bytes, args):
    """In another process: unpickle a callable and call it."""
    return pickle.loads(payload)(*args)


@pytest.fixture(scope="module")
def data():
    t = np.linspace(0.0, 2.0, 40)
    return t, 1.5 * np.exp(-0.7 * t) * np.cos(3.0 * t)


def test_objects_rebuild_in_a_spawned_process(cc, data):
    mod = cc(MODEL)
    t, y = data
    p = np.array([1.0, 0.5, 2.5])
    reference = grad(mod.misfit)(p, t, y, len(t))
    dp = np.zeros(3)
    derivative(mod.misfit, Reverse, Duplicated, Const, Const, Const)(p, dp, t, y, len(t))
    np.testing.assert_array_equal(dp, reference)
    jobs = [(mod.misfit, (p, t, y, len(t))),
            (grad(mod.misfit), (p, t, y, len(t))),
            (enzyme.hessian(mod.misfit), (p, t, y, len(t)))]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        results = list(pool.map(call_pickled, [pickle.dumps(fn) for fn, _ in jobs],
                                [args for _, args in jobs]))
    assert results[0] == mod.misfit(p, t, y, len(t))
    np.testing.assert_array_equal(results[1], reference)
    np.testing.assert_array_equal(results[2], enzyme.hessian(mod.misfit)(p, t, y, len(t)))


def test_a_derivative_callable_and_a_split_pass_pickle(cc, data):
    mod = cc(MODEL)
    t, y = data
    p = np.array([1.0, 0.5, 2.5])
    df = pickle.loads(pickle.dumps(derivative(mod.misfit, Reverse, Duplicated, Const, Const, Const)))
    dp = np.zeros(3)
    df(p, dp, t, y, len(t))
    np.testing.assert_array_equal(dp, grad(mod.misfit)(p, t, y, len(t)))
    forward, reverse = autodiff_thunk(ReverseSplitWithPrimal, mod.misfit, Duplicated, Const, Const, Const)
    forward2, reverse2 = pickle.loads(pickle.dumps((forward, reverse)))
    dp2 = np.zeros(3)
    tape = forward2(p, dp2, t, y, len(t))
    assert tape.primal == mod.misfit(p, t, y, len(t))
    reverse2(tape, seed=2.0)
    np.testing.assert_allclose(dp2, 2.0 * dp, rtol=1e-14)  # (split mode is other code)
    with pytest.raises(enzyme.TapeError, match="cannot be copied or pickled"):
        pickle.dumps(forward2(p, np.zeros(3), t, y, len(t)))


def test_unpickling_in_the_same_process_shares_the_module(cc):
    mod = cc("double sq(double x) { return x * x; }")
    again = pickle.loads(pickle.dumps(mod))
    assert again is not mod and again._home is mod._home
    assert pickle.loads(pickle.dumps(mod.sq)).module._home is mod._home
    again.close()
    assert mod.sq(3.0) == 9.0  # closing one handle never closes another


def test_a_module_pickles_with_its_sources_text(cc, tmp_path):
    source = tmp_path / "model.c"
    source.write_text("double cube(double x) { return x * x * x; }\n")
    mod = cc(path=source)
    payload = pickle.dumps(grad(mod.cube))
    source.unlink()  # the text travels in the pickle, not the path
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        assert pool.submit(call_pickled, payload, (2.0,)).result() == 12.0


def test_a_gradient_sweep_on_a_dask_cluster_matches_the_serial_run(cc, data):
    distributed = need("distributed")
    mod = cc(MODEL)
    t, y = data
    gradient = grad(mod.misfit)
    # the oracle for the gradient itself: central differences
    p = np.array([1.2, 0.6, 2.8])
    steps = np.eye(3) * 1e-6
    central = [(mod.misfit(p + h, t, y, len(t)) - mod.misfit(p - h, t, y, len(t))) / 2e-6 for h in steps]
    np.testing.assert_allclose(gradient(p, t, y, len(t)), central, rtol=1e-6)
    rng = np.random.default_rng(7)
    starts = [np.array([1.0, 0.5, 2.5]) + rng.uniform(-0.2, 0.2, 3) for _ in range(100)]
    serial = [descend(gradient, s, t, y) for s in starts]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        futures = client.map(descend, [gradient] * len(starts), starts, [t] * len(starts),
                             [y] * len(starts), pure=False)
        swept = client.gather(futures)
        workers = {w for w in client.run(lambda: __import__("os").getpid()).values()}
    assert len(workers) == 2
    np.testing.assert_array_equal(np.array(swept), np.array(serial))
    # the sweep moved every start downhill
    assert all(mod.misfit(e, t, y, len(t)) < mod.misfit(s, t, y, len(t)) for s, e in zip(starts, serial))


def test_joblib_runs_a_kernel_and_its_gradient_unchanged(cc, data):
    joblib = need("joblib")
    mod = cc(MODEL)
    t, y = data
    gradient = grad(mod.misfit)
    points = [np.array([1.0, 0.5, 2.5]) * (1 + 0.1 * k) for k in range(6)]
    parallel = joblib.Parallel(n_jobs=2, backend="loky")
    try:
        found = parallel(joblib.delayed(gradient)(p, t, y, len(t)) for p in points)
    finally:
        # (loky keeps its workers for reuse: stop them, so no process or
        # pipe of this test outlives it)
        from joblib.externals.loky import get_reusable_executor
        get_reusable_executor().shutdown(wait=True)
    for p, g in zip(points, found):
        np.testing.assert_array_equal(g, gradient(p, t, y, len(t)))
