"""A user's script of enzyme-ffi's public API, for the type checker.

tests/test_typing.py runs ``mypy --strict --disallow-any-expr`` on it: an
``Any`` that leaks out of the package's signatures (an unannotated return, a
``Callable[..., Any]``, a parameter typed ``Any``) shows up as an error
here. It is written as a user would write it: where a result's type depends
on the C code (a double returns a float, a struct a record), it narrows the
union with isinstance, as a user who knows the C signature does.

Importing it does nothing (pytest's --doctest-modules imports it); the test
also runs main() when the toolchain is there, so that the narrowing below
is checked against what the calls really return.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import enzyme
from enzyme import (
    Active,
    Const,
    Duplicated,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseSplitWithPrimal,
    ReverseWithPrimal,
)

SOURCE = """
double f(double x, double y) { return x * x * y; }

double sumsq(const double *x, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += x[i] * x[i];
    return s;
}

void square(const double *x, double *y, long n) {
    for (long i = 0; i < n; i++) y[i] = x[i] * x[i];
}
"""


def as_float(value: enzyme.CValue) -> float:
    """A double's value: the C signature says it is a float."""
    assert isinstance(value, float), value
    return value


def as_array(value: enzyme.Derivative) -> npt.NDArray[np.float64]:
    """The derivative with respect to a `double *`: an array of float64."""
    # (not isinstance(value, np.ndarray): numpy's class object itself has
    # Any in its type, which --disallow-any-expr reports)
    assert not isinstance(value, float) and value.dtype == np.float64, value
    return value.astype(np.float64, copy=False)


def reverse_and_forward(mod: enzyme.Module, x: npt.NDArray[np.float64]) -> float:
    f: enzyme.Kernel = mod.f
    value = as_float(f(2.0, 3.0))

    # Reverse mode: the adjoints of Active scalars come back in derivs.
    r: enzyme.ReverseResult = enzyme.autodiff(Reverse, f, Active(2.0), Active(3.0))
    dx, dy = r.derivs
    assert isinstance(dx, float) and isinstance(dy, float)
    assert r.primal is None

    with_primal = enzyme.autodiff(ReverseWithPrimal, mod["f"], Active(2.0), Const(3.0))
    assert as_float(with_primal.primal) == value and with_primal.derivs[1] is None

    # An array's adjoint accumulates into its shadow.
    shadow = Duplicated(x, np.zeros_like(x))
    enzyme.autodiff(Reverse, mod.sumsq, shadow, Const(x.size), seed=2.0)
    gradient: npt.NDArray[np.float64] = shadow.dval
    assert np.allclose(gradient, 4 * x)

    # Forward mode: a tangent in, the return value's tangent out.
    fwd: enzyme.ForwardResult = enzyme.autodiff(Forward, f, Duplicated(2.0, 1.0), Const(3.0))
    tangent = fwd.tangent
    assert isinstance(tangent, float)
    both = enzyme.autodiff(ForwardWithPrimal, mod.sumsq, Duplicated(x, np.ones_like(x)), Const(x.size))
    assert as_float(both.primal) > 0.0 and isinstance(both.tangent, float)
    return dx + dy + tangent


def fixed_activities(mod: enzyme.Module, x: npt.NDArray[np.float64]) -> float:
    # A derivative built once, called with each primal followed by its shadow.
    df = enzyme.derivative(mod.sumsq, Reverse, Duplicated, Const)
    dx = enzyme.aligned_zeros(x.shape, np.float64)
    result: enzyme.ReverseResult = df(x, dx, x.size)
    assert result.derivs == (None, None)
    # Annotation classes parameterised for the reader (and a type checker).
    dxy = enzyme.derivative(mod.f, Reverse, Active[float], Const[float])
    assert dxy(3.0, 2.0).derivs == (12.0, None)

    # Split reverse mode: the tape carries the forward pass to the reverse one.
    forward, reverse = enzyme.autodiff_thunk(ReverseSplitWithPrimal, mod.sumsq, Duplicated, Const)
    tape: enzyme.Tape = forward(x, dx, x.size)
    reverse(tape, seed=1.0)
    return as_float(tape.primal) + dx.item(0)


def helpers(mod: enzyme.Module, x: npt.NDArray[np.float64]) -> float:
    gradient = as_array(enzyme.grad(mod.sumsq)(x, x.size))
    dfdx, dfdy = enzyme.grad(mod.f, argnums=(0, 1))(2.0, 3.0)
    assert isinstance(dfdx, float) and isinstance(dfdy, float)

    value, same = enzyme.value_and_grad(mod.sumsq)(x, x.size)
    assert np.allclose(as_array(same), gradient)

    jac = enzyme.jacobian(mod.square, wrt=0, out=1)(x, np.zeros_like(x), x.size)
    assert jac.shape == (x.size, x.size)
    hess = enzyme.hessian(mod.sumsq)(x, x.size)
    assert not isinstance(hess, float) and np.allclose(hess, 2 * np.eye(x.size))
    hv = enzyme.hvp(mod.sumsq)(x, x.size, np.ones_like(x))
    assert np.allclose(hv, 2.0)

    y, y_tangent = enzyme.jvp(mod.square, wrt=0, out=1)(x, np.zeros_like(x), x.size, np.ones_like(x))
    assert np.allclose(y_tangent, 2 * x) and np.allclose(y, x * x)
    primal, cotangent = enzyme.vjp(mod.f, wrt=1)(2.0, 3.0, 1.0)
    assert isinstance(cotangent, float)
    f_value, f_tangent = enzyme.jvp(mod.f, wrt="x")(2.0, 3.0, 1.0)
    return value + primal + cotangent + f_value + f_tangent + dfdx + dfdy


def batched(mod: enzyme.Module, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # One native loop over the rows of points.
    gradients = enzyme.vmap(enzyme.grad(mod.sumsq), in_axes=(0, None))(points, points.shape[1])
    assert gradients.shape == points.shape
    values = enzyme.vmap(mod.sumsq, in_axes=(0, None))(points, points.shape[1])
    assert values is not None and values.shape == (points.shape[0],)
    value_and_gradient = enzyme.vmap(enzyme.value_and_grad(mod.sumsq), in_axes=(0, None))
    stacked_values, stacked_gradients = value_and_gradient(points, points.shape[1])
    assert np.allclose(stacked_gradients, gradients)
    return np.asarray(stacked_values, dtype=np.float64)


def checked(mod: enzyme.Module, x: npt.NDArray[np.float64]) -> bool:
    report: enzyme.CheckReport = enzyme.check(mod.sumsq, Duplicated(x, None), Const(x.size), mode=Forward)
    for argument in report.arguments:
        assert argument.verdict == "ok", str(report)
    return report.ok


def errors(mod: enzyme.Module) -> list[str]:
    found: list[str] = []
    try:
        # an array is not Active: reverse mode wants Duplicated(x, dx)
        enzyme.autodiff(Reverse, mod.sumsq, Active(1.0), Const(1))
    except enzyme.ActivityError as err:
        found.append(str(err))
    try:
        enzyme.compile("double broken(double x) { return x +; }")
    except enzyme.CompileError as err:
        diagnostics: tuple[str, ...] = err.diagnostics
        found.extend(diagnostics)
    return found


def main() -> None:
    mod = enzyme.compile(SOURCE)
    x = np.linspace(0.5, 1.5, 4)
    total = reverse_and_forward(mod, x) + fixed_activities(mod, x) + helpers(mod, x)
    values = batched(mod, np.linspace(0.0, 11.0, 12).reshape(3, 4))
    assert checked(mod, x)
    assert len(errors(mod)) >= 2
    kernels = [kernel.name for kernel in mod]
    print(f"{total:.6g}", values, kernels)
    mod.close()
    try:
        mod.f(1.0, 2.0)
    except enzyme.ModuleClosedError:
        pass
    else:
        raise AssertionError("a closed module's kernel ran")


if __name__ == "__main__":
    main()
