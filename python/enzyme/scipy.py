"""SciPy adapters: a kernel as what SciPy's solvers take.

- :func:`minimize`: ``fun``, ``jac``, ``hess``, ``hessp`` (and ``fun_and_jac``
  for ``jac=True``) of a kernel returning a floating scalar, for
  ``scipy.optimize.minimize``.
- :func:`least_squares`: ``fun`` and ``jac`` of a kernel writing residuals
  into an output array, for ``scipy.optimize.least_squares``.
- :func:`ode`: ``fun`` and ``jac`` of a right-hand side written as a C
  function with an output pointer, for ``scipy.integrate.solve_ivp``
  (``jac`` is exact: stiff methods such as BDF and Radau need no finite
  differences), plus ``jac_params`` for sensitivities.

Each adapter's functions take the solver's point first (``x``, or ``t, y``)
and then the kernel's other parameters in C order, which is what SciPy's
``args=`` passes. The point may be strided or of another dtype (SciPy's
own finite differences pass columns of a matrix): it is converted; outputs
are allocated for you. Adapters pickle (for ``workers=`` and process pools).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from .autodiff import _as_kernel
from .bridge import Shape, pure_function
from .errors import ActivityError, ArgumentTypeError, ArgumentValueError
from .module import Kernel, _param_index
from .transforms import grad, hessian, hvp, jacobian, value_and_grad

__all__ = ["minimize", "least_squares", "ode", "Minimize", "LeastSquares", "ODE"]


def _point(x: Any, dtype: np.dtype, what: str, written: bool = False) -> np.ndarray:
    """The solver's point as a C-contiguous 1-D array of the kernel's dtype;
    a copy when the kernel writes it (the solver's own array stays as it
    was)."""
    try:
        point = np.array(x, dtype=dtype, order="C", copy=True) if written else \
            np.ascontiguousarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"{what} must be an array of numbers, got {type(x).__name__}: {exc}") from None
    if point.ndim != 1:
        raise ArgumentValueError(f"{what} must be one-dimensional, got shape {point.shape}.")
    return point


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"{what} must be a number, got {type(value).__name__}: {exc}") from None


def _array_param(kernel: Kernel, which: int | str, what: str) -> int:
    index = _param_index(kernel, which, what)
    ctype = kernel.signature.params[index].ctype
    if not (ctype.is_pointer and ctype.is_float) or ctype.is_struct or ctype.rows:
        raise ActivityError(f"{what}: '{kernel.signature.params[index].name}' is `{ctype.spelling}`; "
                            "it must be a floating array parameter.")
    return index


class _Adapter:
    """Places the solver's point (and, for an ODE, the time) into the
    kernel's argument list among the other parameters."""

    def __init__(self, kernel: Kernel, slots: dict[int, str], out: int | None = None,
                 shapes: Mapping[str, Shape] | None = None) -> None:
        self.kernel = kernel
        self._slots = slots  # parameter index -> the solver's name for it
        self._out = out
        self._shapes = dict(shapes or {})
        self._pure = pure_function(kernel, kernel.signature.params[out].name, shapes) \
            if out is not None else None
        self.others = tuple(p.name for i, p in enumerate(kernel.signature.params)
                            if i not in slots and i != out)

    def _arguments(self, given: dict[str, Any], rest: Sequence[Any]) -> list[Any]:
        sig = self.kernel.signature
        if len(rest) != len(self.others):
            raise ArgumentTypeError(f"{sig.name}: after the solver's point, pass its other parameters "
                                    f"({', '.join(self.others) or 'none'}) through args=; got {len(rest)}.")
        args: list[Any] = []
        others = iter(rest)
        for i, param in enumerate(sig.params):
            if i in self._slots:
                value = given[self._slots[i]]
                args.append(_point(value, np.dtype(param.ctype.dtype), self._slots[i],
                                   written=not param.ctype.const)
                            if param.ctype.is_pointer else _number(value, self._slots[i]))
            elif i == self._out:
                args.append(None)  # allocated below, once the inputs are known
            else:
                args.append(next(others))
        if self._out is not None:
            pure = self._pure
            inputs = [args[i] for i in pure.inputs]
            args[self._out] = np.zeros(pure.output_shapes(inputs)[0], dtype=pure.output_dtype(0))
        return args

    def __repr__(self) -> str:
        return f"<enzyme.scipy.{type(self).__name__} of {self.kernel.signature}>"


class Minimize(_Adapter):
    """``fun``, ``jac``, ``hess``, ``hessp`` and ``fun_and_jac`` of a kernel
    returning a floating scalar, for ``scipy.optimize.minimize``."""

    def __init__(self, kernel: Kernel, wrt: int | str) -> None:
        self.wrt = _array_param(kernel, wrt, "wrt")
        super().__init__(kernel, {self.wrt: "x"})
        self._grad = grad(kernel, argnums=self.wrt)
        self._value_and_grad = value_and_grad(kernel, argnums=self.wrt)
        self._hessian = hessian(kernel, wrt=self.wrt)
        self._hvp = hvp(kernel, wrt=self.wrt)

    # (the casts: wrt is a floating array, so the gradient and the Hessian
    # are arrays; the helpers' types allow a float for a scalar wrt)
    def fun(self, x: Any, *args: Any) -> float:
        return float(cast(float, self.kernel(*self._arguments({"x": x}, args))))

    def jac(self, x: Any, *args: Any) -> np.ndarray:
        return cast(np.ndarray, self._grad(*self._arguments({"x": x}, args)))

    def fun_and_jac(self, x: Any, *args: Any) -> tuple[float, np.ndarray]:
        value, gradient = self._value_and_grad(*self._arguments({"x": x}, args))
        return float(value), cast(np.ndarray, gradient)

    def hess(self, x: Any, *args: Any) -> np.ndarray:
        return cast(np.ndarray, self._hessian(*self._arguments({"x": x}, args)))

    def hessp(self, x: Any, p: Any, *args: Any) -> np.ndarray:
        arguments = self._arguments({"x": x}, args)
        return self._hvp(*arguments, _point(p, arguments[self.wrt].dtype, "p"))


class LeastSquares(_Adapter):
    """``fun`` (the residual array) and ``jac`` (its Jacobian) of a kernel
    writing residuals, for ``scipy.optimize.least_squares``."""

    def __init__(self, kernel: Kernel, wrt: int | str, out: int | str,
                 shapes: Mapping[str, Shape] | None = None) -> None:
        self.wrt = _array_param(kernel, wrt, "wrt")
        out_index = _param_index(kernel, out, "out")
        super().__init__(kernel, {self.wrt: "x"}, out_index, shapes)
        self._jacobian = jacobian(kernel, wrt=self.wrt, out=out_index)

    def fun(self, x: Any, *args: Any) -> np.ndarray:
        arguments = self._arguments({"x": x}, args)
        self.kernel(*arguments)
        return arguments[self._out]

    def jac(self, x: Any, *args: Any) -> np.ndarray:
        arguments = self._arguments({"x": x}, args)
        jac = self._jacobian(*arguments)
        return jac.reshape(arguments[self._out].size, arguments[self.wrt].size)


class ODE(_Adapter):
    """``fun(t, y, *args)`` (the derivative dy/dt) and ``jac(t, y, *args)``
    (its Jacobian with respect to ``y``) of a right-hand side written as a
    C function with an output pointer, for ``scipy.integrate.solve_ivp``;
    ``jac_params(t, y, *args)`` is the Jacobian with respect to an array
    parameter (``params=``), for forward sensitivities."""

    def __init__(self, kernel: Kernel, t: int | str | None, y: int | str, out: int | str,
                 params: int | str | None = None) -> None:
        kernel = _as_kernel(kernel)
        self.y = _array_param(kernel, y, "y")
        out_index = _array_param(kernel, out, "out")
        slots = {self.y: "y"}
        self.t = None
        if t is not None:
            self.t = _param_index(kernel, t, "t")
            if kernel.signature.params[self.t].ctype.is_pointer or not kernel.signature.params[self.t].ctype.is_float:
                raise ActivityError(f"t: '{kernel.signature.params[self.t].name}' must be a floating scalar.")
            slots[self.t] = "t"
        y_name, out_name = kernel.signature.params[self.y].name, kernel.signature.params[out_index].name
        # dy/dt has the shape of y, unless a contract says otherwise
        super().__init__(kernel, slots, out_index, {out_name: lambda **values: np.shape(values[y_name])}
                         if not kernel.signature.params[out_index].length else None)
        self._jacobian = jacobian(kernel, wrt=self.y, out=out_index)
        self.params = None if params is None else _array_param(kernel, params, "params")
        self._jacobian_params = None if params is None else jacobian(kernel, wrt=self.params, out=out_index)

    def __reduce__(self) -> tuple:
        sig = self.kernel.signature
        return ODE, (self.kernel, None if self.t is None else sig.params[self.t].name,
                     sig.params[self.y].name, sig.params[self._out].name,
                     None if self.params is None else sig.params[self.params].name)

    def fun(self, t: float, y: Any, *args: Any) -> np.ndarray:
        if np.ndim(y) == 2:  # solve_ivp(vectorized=True): one state per column
            return np.stack([self.fun(t, column, *args) for column in np.asarray(y).T], axis=1)
        arguments = self._arguments({"t": t, "y": y}, args)
        self.kernel(*arguments)
        return arguments[self._out]

    def jac(self, t: float, y: Any, *args: Any) -> np.ndarray:
        arguments = self._arguments({"t": t, "y": y}, args)
        return self._jacobian(*arguments).reshape(arguments[self._out].size, arguments[self.y].size)

    def jac_params(self, t: float, y: Any, *args: Any) -> np.ndarray:
        if self._jacobian_params is None:
            raise ActivityError("jac_params needs the parameter array named: ode(..., params='p').")
        arguments = self._arguments({"t": t, "y": y}, args)
        jac = self._jacobian_params(*arguments)
        return jac.reshape(arguments[self._out].size, arguments[self.params].size)


def minimize(kernel: Kernel, wrt: int | str = 0) -> Minimize:
    """Adapt a kernel returning a floating scalar to ``scipy.optimize.minimize``.

    Examples
    --------
    >>> import numpy as np, scipy.optimize, enzyme
    >>> mod = enzyme.compile("double rosen(const double *x, int n) { double s = 0;"
    ...     " for (int i = 0; i < n - 1; i++) s += 100*(x[i+1]-x[i]*x[i])*(x[i+1]-x[i]*x[i]) + (1-x[i])*(1-x[i]);"
    ...     " return s; }")
    >>> f = enzyme.scipy.minimize(mod.rosen, wrt="x")
    >>> r = scipy.optimize.minimize(f.fun, np.zeros(4), args=(4,), jac=f.jac, hessp=f.hessp, method="trust-ncg")
    >>> np.round(r.x, 6)
    array([1., 1., 1., 1.])
    """
    return Minimize(_as_kernel(kernel), wrt)


def least_squares(kernel: Kernel, wrt: int | str, out: int | str,
                  shapes: Mapping[str, Shape] | None = None) -> LeastSquares:
    """Adapt a kernel writing residuals into ``out`` to ``scipy.optimize.least_squares``.

    The residual array's length comes from ``shapes`` or the parameter's
    length contract (``ENZYME_LEN`` or ``sizes=``).

    Examples
    --------
    >>> import numpy as np, scipy.optimize, enzyme
    >>> mod = enzyme.compile("#include <math.h>\\n"
    ...     "void res(const double *p, const double *t, const double *y, double *r, int m) {"
    ...     " for (int i = 0; i < m; i++) r[i] = p[0] * exp(-p[1] * t[i]) - y[i]; }",
    ...     sizes={"res": {"r": "m"}})
    >>> t = np.linspace(0, 1, 20); y = 2 * np.exp(-3 * t)
    >>> f = enzyme.scipy.least_squares(mod.res, wrt="p", out="r")
    >>> fit = scipy.optimize.least_squares(f.fun, [1.0, 1.0], jac=f.jac, args=(t, y, 20))
    >>> np.round(fit.x, 8)
    array([2., 3.])
    """
    return LeastSquares(_as_kernel(kernel), wrt, out, shapes)


def ode(kernel: Kernel, t: int | str | None, y: int | str, out: int | str,
        params: int | str | None = None) -> ODE:
    """Adapt a C right-hand side ``dydt = f(t, y, ...)`` to ``scipy.integrate.solve_ivp``.

    ``t`` names the time parameter (None for an autonomous system), ``y``
    the state array and ``out`` the array the kernel writes dy/dt into
    (shaped like ``y`` unless a length contract says otherwise).

    Examples
    --------
    >>> import numpy as np, scipy.integrate, enzyme
    >>> mod = enzyme.compile("void decay(double t, const double *y, double *dy, const double *k) {"
    ...                      " dy[0] = -k[0] * y[0]; dy[1] = k[0] * y[0] - k[1] * y[1]; }")
    >>> rhs = enzyme.scipy.ode(mod.decay, t="t", y="y", out="dy")
    >>> k = np.array([1.0, 1000.0])
    >>> sol = scipy.integrate.solve_ivp(rhs.fun, (0, 1), [1.0, 0.0], method="BDF", jac=rhs.jac, args=(k,))
    >>> rhs.jac(0.0, [1.0, 0.0], k).tolist(), bool(sol.success)
    ([[-1.0, -0.0], [1.0, -1000.0]], True)
    """
    return ODE(kernel, t, y, out, params)
