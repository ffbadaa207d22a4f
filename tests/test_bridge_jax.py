"""enzyme.jax: kernels as JAX functions. Every transform is compared with
the same function written in jax.numpy (differentiated by JAX itself)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import enzyme
from conftest import need

pytestmark = pytest.mark.jax
jax = need("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
import enzyme.jax as ej  # noqa: E402  (after jax is known to be there)

SRC = """
#include <math.h>
double energy(const double *x, double a, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a * sin(x[i]) * x[(i + 1) % n] + a * a * x[i] * x[i];
    return s; }
void model(const double *x, double a, double *y, int n) {
    for (int i = 0; i < n; i++) y[i] = a * exp(x[i]) * x[(i + 1) % n]; }
double both(const double *x, double *y, int n) {
    double s = 0; for (int i = 0; i < n; i++) { y[i] = x[i] * x[i]; s += x[i]; } return s; }
"""


def energy_jnp(x, a):
    return jnp.sum(a * jnp.sin(x) * jnp.roll(x, -1) + a * a * x * x)


def model_jnp(x, a):
    return a * jnp.exp(x) * jnp.roll(x, -1)


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC, sizes={"model": {"y": "n"}, "both": {"y": "n"}})


X = np.array([0.3, -1.2, 0.8, 2.0])
A = 1.7


def close(ours, theirs):
    for o, t in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_allclose(np.asarray(o), np.asarray(t), rtol=1e-12, atol=1e-12)


@pytest.fixture(params=["custom calls", "callbacks"])
def path(request, monkeypatch):
    """Compiled calls through XLA custom calls (the default) or, with
    ENZYME_JAX_CALLBACKS=1, through Python callbacks: both must agree with
    JAX."""
    if request.param == "callbacks":
        monkeypatch.setenv("ENZYME_JAX_CALLBACKS", "1")
    return request.param


def lowered(fn, *args):
    return jax.jit(fn).lower(*args).as_text()


def test_every_transform_of_a_scalar_kernel_matches_jax(mod, path):
    f = ej.function(mod.energy)

    def ours(x, a):
        return f(x, a, 4)

    for transform in (lambda g: g, jax.grad, lambda g: jax.grad(g, argnums=(0, 1)), jax.jacfwd, jax.jacrev,
                      jax.hessian, lambda g: jax.hessian(g, argnums=(0, 1)),
                      lambda g: jax.jacrev(jax.jacrev(g)), lambda g: jax.jacfwd(jax.grad(g, argnums=1)),
                      lambda g: jax.jacfwd(jax.jacfwd(g, argnums=(0, 1)), argnums=(0, 1)),
                      lambda g: jax.jacrev(jax.jacfwd(g))):
        close(transform(ours)(X, A), transform(energy_jnp)(X, A))
        close(jax.jit(transform(ours))(X, A), transform(energy_jnp)(X, A))
    batch = np.stack([X, 2 * X, -X])
    close(jax.vmap(ours, in_axes=(0, None))(batch, A), jax.vmap(energy_jnp, in_axes=(0, None))(batch, A))
    close(jax.vmap(jax.grad(ours))(batch, jnp.array([1.0, 2.0, 3.0])),
          jax.vmap(jax.grad(energy_jnp))(batch, jnp.array([1.0, 2.0, 3.0])))
    close(jax.jit(jax.vmap(jax.grad(ours)))(batch, jnp.array([1.0, 2.0, 3.0])),
          jax.vmap(jax.grad(energy_jnp))(batch, jnp.array([1.0, 2.0, 3.0])))
    text = lowered(jax.grad(ours), X, A)
    assert ("enzyme_ffi_call" in text) == (path == "custom calls")
    assert ("callback" in text) == (path == "callbacks")
    empty = np.zeros((0, 4))
    close(jax.vmap(ours, in_axes=(0, None))(empty, A), jax.vmap(energy_jnp, in_axes=(0, None))(empty, A))
    assert jax.vmap(jax.grad(ours), in_axes=(0, None))(empty, A).shape == (0, 4)
    value, tangent = jax.jvp(ours, (X, A), (np.ones(4), 0.5))
    value2, tangent2 = jax.jvp(energy_jnp, (X, A), (np.ones(4), 0.5))
    close((value, tangent), (value2, tangent2))


def test_array_outputs_scalar_inputs_and_several_outputs(mod, path):
    g = ej.function(mod.model, out="y")

    def ours(x, a):
        return g(x, a, 4)

    for transform in (lambda h: h, lambda h: jax.jacfwd(h, argnums=(0, 1)), lambda h: jax.jacrev(h, argnums=(0, 1)),
                      lambda h: jax.hessian(h, argnums=(0, 1)),
                      lambda h: jax.jacfwd(jax.jacfwd(h, argnums=(0, 1)), argnums=(0, 1))):
        close(transform(ours)(X, A), transform(model_jnp)(X, A))
        close(jax.jit(transform(ours))(X, A), transform(model_jnp)(X, A))
    close(jax.vmap(jax.jacrev(ours), in_axes=(0, None))(np.stack([X, -X]), A),
          jax.vmap(jax.jacrev(model_jnp), in_axes=(0, None))(np.stack([X, -X]), A))
    h = ej.function(mod.both, out=["return", "y"])
    s, y = h(X, n=4)
    close((s, y), (X.sum(), X * X))
    close(jax.jacrev(lambda x: h(x, 4))(X), (np.ones(4), np.diag(2 * X)))


def test_what_is_not_supported_says_so(mod):
    f = ej.function(mod.energy)
    with pytest.raises(enzyme.ActivityError, match="third derivative"):
        jax.jacfwd(jax.hessian(lambda x: f(x, A, 4)))(X)
    with pytest.raises(enzyme.ActivityError, match="third derivative"):
        jax.jacfwd(jax.jacfwd(jax.jacfwd(lambda x: f(x, A, 4))))(X)
    with pytest.raises(enzyme.ArgumentTypeError, match="static"):
        jax.jit(lambda x, n: f(x, A, n))(X, 4)
    with pytest.raises(enzyme.ArgumentTypeError, match="no input named"):
        f(X, A, m=4)


def test_a_jax_function_pickles(mod):
    f = ej.function(mod.model, out="y")
    again = pickle.loads(pickle.dumps(f))
    close(again(X, A, 4), f(X, A, 4))
    assert repr(again) == repr(f)


def test_second_derivatives_of_a_kernel_that_reads_back_its_output(cc):
    """The output's shadow gathers, in the reverse pass, adjoints that depend
    on the inputs (found by an adversarial pass: held constant, the Hessian
    was 4x^2 instead of 12x^2)."""
    mod = cc("""void g(const double *x, double *y, double *w, int n) {
        for (int i = 0; i < n; i++) y[i] = x[i] * x[i];
        w[0] = 0; for (int i = 0; i < n; i++) w[0] += y[i] * y[i]; }""", sizes={"g": {"y": "n"}})
    G = ej.function(mod.g, out=("y", "w"), shapes={"w": (1,)})
    x = jnp.array([0.3, -0.7, 1.1])
    close(jax.hessian(lambda x: G(x, 3)[1][0])(x), jax.hessian(lambda x: jnp.sum(x ** 4))(x))
    close(jax.jacrev(jax.jacrev(lambda x: G(x, 3)[1][0]))(x), jax.hessian(lambda x: jnp.sum(x ** 4))(x))


def test_integer_array_inputs_are_static_and_contracts_are_checked_before_the_call(cc):
    mod = cc("""double mixed(const double *x, const int *idx, int n) {
        double s = 0; for (int i = 0; i < n; i++) s += x[idx[i]] * x[i] * x[i]; return s; }
        void sq(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = x[i] * x[i]; }""",
             sizes={"sq": {"x": "n", "y": "n"}})
    f = ej.function(mod.mixed)
    x = jnp.array([1.0, 2.0, 3.0])

    def reference(x):
        return jnp.sum(x[jnp.array([2, 0, 1])] * x * x)

    close(jax.grad(f)(x, np.array([2, 0, 1], dtype=np.int32), 3), jax.grad(reference)(x))
    close(jax.hessian(f)(x, (2, 0, 1), 3), jax.hessian(reference)(x))
    square = ej.function(mod.sq, out="y")
    with pytest.raises(enzyme.LengthError, match="'x' of sq has 2"):
        square(jnp.ones(2), 3)
    with pytest.raises(enzyme.LengthError, match="'y' of sq has 2"):
        ej.function(mod.sq, out="y", shapes={"y": (2,)})(jnp.ones(3), 3)
    with pytest.raises(enzyme.ActivityError, match=r"shapes\['y'\] could not be computed"):
        ej.function(mod.sq, out="y", shapes={"y": lambda q: (q,)})(jnp.ones(3), 3)


def test_custom_calls_copy_written_inputs_and_run_from_threads(cc):
    """A kernel writing its input gets a private copy (XLA's buffers are
    immutable: writing one would change the caller's array); float32
    kernels; many threads calling one compiled function."""
    mod = cc("""double consume(double *x, int n) {
        double s = 0; for (int i = 0; i < n; i++) { x[i] = x[i] * x[i]; s += x[i] * x[i]; } return s; }
        float cube(const float *x, int n) {
            float s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i] * x[i]; return s; }""")
    f = ej.function(mod.consume)
    grad = jax.jit(jax.grad(lambda x: f(x, 4)))
    value = jax.jit(lambda x: f(x, 4))
    x = jnp.array(X)
    for _ in range(3):
        close(value(x), np.sum(X ** 4))
        close(grad(x), 4 * X ** 3)
    close(x, X)
    assert "enzyme_ffi_call" in lowered(jax.grad(lambda x: f(x, 4)), x)
    cube = jax.jit(jax.grad(lambda x: ej.function(mod.cube)(x, 4)))
    x32 = jnp.array(X, dtype=jnp.float32)
    assert cube(x32).dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(cube(x32)), 3 * X.astype(np.float32) ** 2, rtol=1e-6)

    import concurrent.futures
    points = [X + 0.1 * k for k in range(64)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda p: np.asarray(grad(jnp.array(p))), points))
    for p, g in zip(points, found):
        np.testing.assert_allclose(g, 4 * p ** 3, rtol=1e-13)


def test_a_custom_call_after_close_or_a_refused_derivative_raises(cc):
    """The first call of each custom call runs in Python, through the checked
    path: a derivative the first-use check refuses raises there, on every
    call, and never runs natively. A compiled function whose module was
    closed raises instead of jumping into unloaded code."""
    from enzyme import DerivativeMismatchError
    mod = cc("double quart(const double *x, int n) { double s = 0;"
             " for (int i = 0; i < n; i++) s += x[i] * x[i] * x[i] * x[i]; return s; } /* closed */")
    f = ej.function(mod.quart)
    fn = mod.quart.derivative_function(*f.pure.pattern(reverse=True))
    calls = []

    def refuse(*args):
        calls.append(args)
        raise DerivativeMismatchError("refused by the test")

    fn.first_call = refuse  # (a stand-in for a real refusal: test_verify.py makes those)
    grad = jax.jit(jax.grad(lambda x: f(x, 4)))
    for _ in range(2):
        with pytest.raises(Exception, match="DerivativeMismatchError: refused by the test"):
            np.asarray(grad(jnp.array(X)))
    assert len(calls) == 1  # (the check runs once; its error is raised again)
    value = jax.jit(lambda x: f(x, 4))
    close(value(jnp.array(X)), np.sum(X ** 4))
    mod.close()
    with pytest.raises(Exception, match="was closed"):
        np.asarray(value(jnp.array(X)))


def test_a_stray_call_of_the_custom_call_target_is_an_error_not_a_crash(mod):
    f = ej.function(mod.energy)
    close(jax.jit(lambda x: f(x, A, 4))(X), energy_jnp(X, A))  # (the target is registered by now)
    stray = jax.ffi.ffi_call("enzyme_ffi_call", jax.ShapeDtypeStruct((), jnp.float64))
    for plan in (10**9, -1):
        with pytest.raises(Exception, match="without a known plan"):
            np.asarray(jax.jit(lambda x, p=plan: stray(x, plan=np.int64(p)))(X))
