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
