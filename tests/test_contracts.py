"""Length contracts (ENZYME_LEN in C, sizes= in Python): every array and
shadow is checked before native code runs."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import BatchDuplicated, Const, Duplicated, Forward, Reverse, ReverseSplit, autodiff

SOURCE = r"""
#include <enzyme/enzyme.h>
/* reads n weights and 2*nsteps samples; writes nsteps outputs */
double fit(const double *ENZYME_LEN(n) w, int n,
           const double *samples ENZYME_LEN(2 * nsteps), int nsteps,
           double *ENZYME_LEN(nsteps) out) {
    double s = 0.0;
    for (int k = 0; k < nsteps; k++) {
        double y = 0.0;
        for (int i = 0; i < n; i++) y += w[i] * samples[2 * k] * (i + 1);
        out[k] = y - samples[2 * k + 1];
        s += out[k] * out[k];
    }
    return s;
}
double plain(const double *x, int n) { double s = 0; for (int i = 0; i < n; i++) s += x[i] * x[i]; return s; }
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SOURCE)


def _args(n=3, nsteps=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=n), rng.normal(size=2 * nsteps), np.zeros(nsteps)


def test_annotations_are_read(mod):
    params = {p.name: p.length for p in mod.fit.signature.params}
    assert params == {"w": "n", "n": "", "samples": "2 * nsteps", "nsteps": "", "out": "nsteps"}


def test_valid_calls_pass(mod):
    w, samples, out = _args()
    value = mod.fit(w, 3, samples, 4, out)
    dw = np.zeros(3)
    r = autodiff(enzyme.ReverseWithPrimal, mod.fit, Duplicated(w, dw), Const(3), Const(samples),
                 Const(4), Duplicated(out, np.zeros(4)))
    assert r.primal == pytest.approx(value)
    # a longer buffer is fine: the C code reads only what the contract says
    mod.fit(w, 3, np.concatenate([samples, [9.0, 9.0]]), 4, np.zeros(10))


@pytest.mark.parametrize("which, expected", [("w", "at least 5 elements"),
                                             ("samples", "at least 10 elements"),
                                             ("out", "at least 5 elements")])
def test_short_arrays_raise_before_native_code(mod, which, expected):
    w, samples, out = _args(n=5, nsteps=5)
    short = {"w": w[:4].copy(), "samples": samples[:9].copy(), "out": out[:4].copy()}
    args = {"w": w, "samples": samples, "out": out}
    args[which] = short[which]
    before = {k: v.copy() for k, v in args.items()}
    with pytest.raises(enzyme.LengthError, match=expected) as info:
        mod.fit(args["w"], 5, args["samples"], 5, args["out"])
    assert isinstance(info.value, enzyme.ShadowError) and isinstance(info.value, ValueError)
    assert f"'{which}'" in str(info.value)
    dw = np.zeros_like(args["w"])
    with pytest.raises(enzyme.LengthError):
        autodiff(Reverse, mod.fit, Duplicated(args["w"], dw), Const(5), Const(args["samples"]),
                 Const(5), Duplicated(args["out"], np.zeros_like(args["out"])))
    for key, value in args.items():
        np.testing.assert_array_equal(value, before[key])   # nothing native ran
    np.testing.assert_array_equal(dw, 0.0)


def test_every_entry_point_checks(mod):
    w, samples, out = _args()
    with pytest.raises(enzyme.LengthError):
        autodiff(Forward, mod.fit, BatchDuplicated(w[:2].copy(), np.zeros((2, 2))), Const(3),
                 Const(samples), Const(4), BatchDuplicated(out, np.zeros((2, 4))))
    fwd, _ = enzyme.autodiff_thunk(ReverseSplit, mod.fit, Duplicated, Const, Const, Const, Duplicated)
    with pytest.raises(enzyme.LengthError):
        fwd(w, np.zeros(3), 30, samples, 4, out, np.zeros(4))
    with pytest.raises(enzyme.LengthError):
        enzyme.hessian(mod.fit)(w, 3, samples, 5, out)
    with pytest.raises(enzyme.LengthError, match="negative"):
        mod.fit(w, 3, samples, -2, out)


def test_python_side_sizes(cc):
    mod = cc(SOURCE, sizes={"plain": {"x": "n"}})
    assert mod.plain(np.ones(3), 3) == 3.0
    with pytest.raises(enzyme.LengthError, match="'x' of plain needs at least 4"):
        mod.plain(np.ones(3), 4)
    with pytest.raises(enzyme.LengthError):
        enzyme.grad(mod.plain)(np.ones(3), 1000)
    unchecked = cc(SOURCE)   # the same code without sizes= is another Module
    assert unchecked.plain.signature.params[0].length == ""


def test_bad_contracts_are_clear_errors(cc):
    with pytest.raises(enzyme.ContractError, match="no parameter named y"):
        cc(SOURCE, sizes={"plain": {"y": "n"}})
    with pytest.raises(enzyme.ContractError, match="no function"):
        cc(SOURCE, sizes={"nope": {"x": "n"}})
    with pytest.raises(enzyme.ContractError, match="may only use"):
        cc(SOURCE, sizes={"plain": {"x": "n ** 2"}})
    with pytest.raises(enzyme.ContractError, match="not an integer parameter"):
        cc(SOURCE, sizes={"plain": {"x": "x + 1"}})
    mod = cc("#include <enzyme/enzyme.h>\n"
             "double bad(const double *ENZYME_LEN(m) x, int n) { return x[0]; }\n")
    with pytest.raises(enzyme.ContractError, match="`m`"):
        mod.bad(np.ones(1), 1)


C_ARITH = r"""
#include <enzyme/enzyme.h>
double half(double *ENZYME_LEN(n / 2 + 1) x, int n) { x[0] += 1.0; return x[0]; }
double mixed(const double *ENZYME_LEN(n / m + 3) x, int n, unsigned m) { return x[0]; }
double square(const double *ENZYME_LEN(n * n) x, int n) { return x[0]; }
double ratio(const double *ENZYME_LEN(n / m) x, int n, int m) { return x[0]; }
double wide(const double *ENZYME_LEN(n * n) x, long n) { return x[0]; }
"""


def test_contracts_use_c_integer_semantics(cc):
    """Issue item 4: contracts used Python's integers. n / 2 + 1 with n = -1
    is 1 in C (truncating division), not 0; int -4 / unsigned 2 converts -4
    to unsigned first; overflow and division by zero are errors, before any
    native call."""
    mod = cc(C_ARITH)
    with pytest.raises(enzyme.LengthError, match="needs at least 1 elements"):
        mod.half(np.zeros(0), -1)
    dx = np.zeros(0)
    with pytest.raises(enzyme.LengthError):
        autodiff(Reverse, mod.half, Duplicated(np.zeros(0), dx), Const(-1))
    assert mod.half(np.zeros(1), -1) == 1.0
    with pytest.raises(enzyme.LengthError, match="needs at least 2147483649 elements"):
        mod.mixed(np.zeros(4), -4, 2)
    assert mod.mixed(np.zeros(5), 4, 2) == 0.0
    with pytest.raises(enzyme.LengthError, match="overflows int"):
        mod.square(np.zeros(4), 100000)
    with pytest.raises(enzyme.LengthError, match="divides by zero"):
        mod.ratio(np.zeros(4), 3, 0)
    with pytest.raises(enzyme.LengthError, match="needs at least 10000000000 elements"):
        mod.wide(np.zeros(4), 100000)   # long arithmetic: no overflow
    with pytest.raises(enzyme.ContractError, match="divides by zero"):
        cc(SOURCE, sizes={"plain": {"x": "n / 0"}})
    with pytest.raises(enzyme.ContractError, match="overflows int"):
        cc(SOURCE, sizes={"plain": {"x": "n + 2147483647 * 2"}})


_EXPRESSIONS = ["n / 2 + 1", "n / m + 3", "m - 1", "l / n", "-n / 3", "n * 3 - m",
                "l * m - n", "(n + m) / (l - 1)", "u / n", "u - m", "0 - u"]
_VALUES = [(-1, 2, 5, 7), (-4, 2, 9, 1), (7, 0, -3, 0), (-7, 3, 4000000000, 12), (5, 4000000000, -9, 2),
           (-2147483647, 1, -5, 3), (3, 1, 2, 0)]


def test_contract_arithmetic_matches_c(cc):
    """The contract evaluator against C itself: the same expressions
    compiled by clang, on the same arguments (cases whose C is undefined,
    division by zero or signed overflow, must be errors on our side)."""
    from enzyme.signature import ContractValueError

    params = "int n, unsigned m, long l, unsigned long u"
    funcs = "".join(f"long long e{i}({params}) {{ return (long long)({expr}); }}\n"
                    for i, expr in enumerate(_EXPRESSIONS))
    lens = "".join(f"double c{i}(const double *ENZYME_LEN({expr}) x, {params}) {{ return 0; }}\n"
                   for i, expr in enumerate(_EXPRESSIONS))
    mod = cc("#include <enzyme/enzyme.h>\n" + funcs + lens)
    checked = 0
    for i, expr in enumerate(_EXPRESSIONS):
        contract = enzyme.signature.length_contracts(mod[f"c{i}"].signature)[0]
        for row in _VALUES:
            args = dict(zip("nmlu", row))
            values = [args[name] for name in contract.names]
            try:
                ours = contract.evaluate(values)
            except ContractValueError:
                continue   # C's behaviour is undefined there; ours is an error
            theirs = mod[f"e{i}"](*row)
            assert ours % 2**64 == theirs % 2**64, (expr, args, ours, theirs)
            checked += 1
    assert checked >= 60
