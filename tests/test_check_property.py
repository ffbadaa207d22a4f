"""A property test of the argument checks (issue 10): random bad arguments
(dtype, byte order, shape, strides, subclasses, read-only, aliasing between
any two arguments, lane counts, scalar types) raise the same EnzymeError
type on the C fast path and on the Python reference path and leave every
array byte-identical; random good arguments give identical results on both.
The helpers (grad, jvp, vjp, jacobian, hessian, hvp) get the same random
bad arguments and must raise an EnzymeError without touching an array."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

import enzyme
from enzyme import (
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseWithPrimal,
    call,
)
from enzyme.codegen import generate_derivative

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
N = 5
CASES = 60  # random argument lists per derivative (x 14 derivatives, two paths)

SOURCE = """
double wsum(double a, const double *x, double *y, long n) {
  double s = 0; for (long i = 0; i < n; i++) { y[i] = a * x[i] * x[i]; s += y[i]; } return s;
}
float fdot(const float *x, float *w, int n, float s) {
  float t = 0; for (int i = 0; i < n; i++) t += s * x[i] * w[i]; return t;
}
void mix(const double *x, double *out, unsigned int k, signed char c, long n) {
  for (long i = 0; i < n; i++) out[i] = x[i] * x[i] * (double)(k + c);
}
"""

DERIVATIVES = [
    ("wsum", Reverse, (Active, Duplicated, Duplicated, Const), 1),
    ("wsum", ReverseWithPrimal, (Const, Duplicated, Duplicated, Const), 1),
    ("wsum", Forward, (Duplicated, Duplicated, Duplicated, Const), 1),
    ("wsum", ForwardWithPrimal, (Const, DuplicatedNoNeed, Duplicated, Const), 1),
    ("wsum", Forward, (Const, BatchDuplicated, BatchDuplicated, Const), 3),
    ("wsum", Reverse, (Const, BatchDuplicated, BatchDuplicated, Const), 2),
    ("fdot", Reverse, (Duplicated, Duplicated, Const, Active), 1),
    ("fdot", Forward, (Duplicated, Const, Const, Duplicated), 1),
    ("fdot", ReverseWithPrimal, (Const, Duplicated, Const, Const), 1),
    ("mix", Reverse, (Duplicated, Duplicated, Const, Const, Const), 1),
    ("mix", Forward, (Duplicated, Duplicated, Const, Const, Const), 1),
    ("mix", Forward, (BatchDuplicated, BatchDuplicated, Const, Const, Const), 2),
    ("mix", Reverse, (Const, Duplicated, Const, Const, Const), 1),
    ("mix", ReverseWithPrimal, (Duplicated, DuplicatedNoNeed, Const, Const, Const), 1),
]


class Tagged(np.ndarray):
    """An honest subclass (accepted like its base class)."""


@pytest.fixture(scope="module")
def mod(cc, fast_path):
    return cc(SOURCE, verify=False)


def _good_args(spec, width: int, rng) -> list:
    """A valid flat argument list: each primal, then its shadow(s)."""
    flat = []
    for arg in spec.args:
        ctype = arg.ctype
        if ctype.is_pointer:
            value = rng.uniform(0.5, 1.5, N).astype(ctype.dtype)
        elif ctype.is_float:
            value = float(rng.uniform(0.5, 1.5))
        else:
            value = N if arg.name == "n" else int(rng.integers(1, 4))
        flat.append(value)
        if arg.has_shadow:
            shadow = (np.zeros_like(value) if ctype.is_pointer else 1.0)
            if spec.batched:
                shadow = [rng.uniform(-1, 1, N).astype(ctype.dtype) for _ in range(width)]
            elif ctype.is_pointer:
                shadow = rng.uniform(-1, 1, N).astype(ctype.dtype)
            flat.append(shadow)
    return flat


def _arrays(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, np.ndarray)]
    return []


def _bad_array(value: np.ndarray, rng, others: list) -> np.ndarray:
    choice = rng.integers(9)
    if choice == 0:  # another element type
        return value.astype(rng.choice([np.float32, np.float64, np.int64, np.int32]))
    if choice == 1:  # the other byte order
        return value.astype(value.dtype.newbyteorder())
    if choice == 2:  # too short or too long (a shadow must match its primal)
        return np.resize(value, value.size + rng.choice([-1, 1, 3]))
    if choice == 3:  # same size, other shape
        return value.reshape(1, -1)
    if choice == 4:  # not contiguous
        return np.repeat(value, 2)[::2]
    if choice == 5:  # read-only
        copy = value.copy()
        copy.flags.writeable = False
        return copy
    if choice == 6 and others:  # aliasing: another argument's buffer, or a piece of it
        other = others[rng.integers(len(others))]
        return other if rng.integers(2) else other[: max(other.size - 1, 1)]
    if choice == 7:  # not an array at all
        return value.tolist()
    return value.view(Tagged)  # an honest subclass: fine wherever the array is


def _bad_scalar(value, rng):
    return [None, "1", 2 ** 70, -(2 ** 70), 1.5, True, np.float32(2.0), [1.0], complex(1, 1),
            np.int64(2)][rng.integers(10)]


def _mutate(flat: list, rng) -> list:
    flat = list(flat)
    arrays = [a for v in flat for a in _arrays(v)]
    for _ in range(rng.integers(1, 3)):
        pos = int(rng.integers(len(flat)))
        value = flat[pos]
        if isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):  # lanes
            lanes = list(value)
            kind = rng.integers(4)
            if kind == 0:
                lanes = lanes[:-1] if rng.integers(2) else lanes + [lanes[0].copy()]
            elif kind == 1:
                lane = int(rng.integers(len(lanes)))
                lanes[lane] = _bad_array(lanes[lane], rng, arrays)
            elif kind == 2 and len({lane.shape for lane in lanes}) == 1:
                lanes = np.stack(lanes)  # an array whose first axis runs over lanes: fine
            elif kind == 2:
                lanes = lanes[::-1]  # (lanes of different shapes cannot be stacked)
            else:
                lanes = lanes[0]  # one array where lanes belong
            flat[pos] = lanes
        elif isinstance(value, np.ndarray):
            flat[pos] = _bad_array(value, rng, arrays)
        else:
            flat[pos] = _bad_scalar(value, rng)
    if rng.integers(12) == 0:
        flat = flat[:-1]  # an argument missing
    return flat


def _snapshot(flat: list) -> list[bytes]:
    return [a.tobytes() for v in flat for a in _arrays(v)]


def _outcome(fn, flat: list, seed):
    try:
        return "ok", fn(*flat, seed=seed)
    except enzyme.EnzymeError as exc:
        return type(exc), str(exc)
    except Exception as exc:  # not in the hierarchy: a failure of its own
        return "raw", f"{type(exc).__name__}: {exc}"


def _clone(flat: list) -> list:
    """An independent deep copy that keeps which arguments share memory:
    both paths must see the same aliasing."""
    base = {}
    out = []
    for value in flat:
        if isinstance(value, np.ndarray):
            out.append(_clone_array(value, base))
        elif isinstance(value, list):
            out.append([_clone_array(v, base) if isinstance(v, np.ndarray) else v for v in value])
        else:
            out.append(value)
    return out


def _clone_array(a: np.ndarray, memo: dict) -> np.ndarray:
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    key = id(root)
    if key not in memo:
        memo[key] = (root, root.copy())
    original, copy = memo[key]
    offset = a.__array_interface__["data"][0] - original.__array_interface__["data"][0]
    view = np.ndarray(a.shape, a.dtype, buffer=copy, offset=offset, strides=a.strides)
    if type(a) is not np.ndarray:
        view = view.view(type(a))
    view.flags.writeable = a.flags.writeable
    return view


@pytest.mark.parametrize("name, mode, kinds, width", DERIVATIVES,
                         ids=[f"{d[0]}-{d[1]!r}-{'-'.join(k.__name__ for k in d[2])}"
                              for d in DERIVATIVES])
def test_fast_and_reference_paths_agree_on_random_arguments(mod, name, mode, kinds, width):
    df = enzyme.derivative(getattr(mod, name), mode, *kinds, width=width)
    reference = call.DerivativeFunction(df.spec, generate_derivative(df.spec), df._library.key[0])
    reference._fast = None
    # (a seed from names: hashes of classes change from run to run)
    rng = np.random.default_rng(zlib.crc32(f"{name} {mode!r} {[k.__name__ for k in kinds]} {width}".encode()))
    fast_taken = rejected = 0
    for case in range(CASES):
        good = _good_args(df.spec, width, rng)
        flat = good if case % 4 == 0 else _mutate(good, rng)
        seed = None
        if df._has_seed and rng.integers(3) == 0:
            seed = [2.0, np.float64(0.5), "x", 2 ** 2000, [1.0] * width][rng.integers(5)]
        a_args, b_args = _clone(flat), _clone(flat)
        before = _snapshot(a_args)
        a = _outcome(df, a_args, seed)
        b = _outcome(reference, b_args, seed)
        assert a[0] != "raw", f"case {case}: fast path raised outside EnzymeError: {a[1]}"
        assert b[0] != "raw", f"case {case}: reference path raised outside EnzymeError: {b[1]}"
        assert a[0] == b[0], f"case {case}: fast path {a}, reference path {b}"
        if a[0] == "ok":
            assert repr(a[1]) == repr(b[1]), f"case {case}: results differ: {a[1]} vs {b[1]}"
            assert _snapshot(a_args) == _snapshot(b_args), f"case {case}: arrays differ after the call"
            fast_taken += 1
        else:
            assert _snapshot(a_args) == before, f"case {case}: a refused call changed an array"
            assert _snapshot(b_args) == before, f"case {case}: a refused call changed an array"
            rejected += 1
    assert fast_taken and rejected  # both kinds of case happened


HELPERS = {
    "grad": lambda m, args: enzyme.grad(m.wsum, argnums=(0, 1))(*args),
    "jvp": lambda m, args: enzyme.jvp(m.mix, wrt=0, out=1)(*args, np.ones(N)),
    "vjp": lambda m, args: enzyme.vjp(m.mix, wrt=0, out=1)(*args, np.ones(N)),
    "jacobian": lambda m, args: enzyme.jacobian(m.mix, wrt=0, out=1, chunk=2)(*args),
    "hessian": lambda m, args: enzyme.hessian(m.wsum, wrt=1, chunk=2)(*args),
    "hvp": lambda m, args: enzyme.hvp(m.wsum, wrt=1)(*args, np.ones(N)),
}


@pytest.mark.parametrize("helper", sorted(HELPERS))
def test_helpers_refuse_random_bad_arguments_without_touching_an_array(mod, helper):
    kernel = mod.mix if helper in ("jvp", "vjp", "jacobian") else mod.wsum
    rng = np.random.default_rng(sum(map(ord, helper)))
    refused = 0
    for case in range(CASES):
        good = [N if p.name == "n" else
                (rng.uniform(0.5, 1.5, N).astype(p.ctype.dtype) if p.ctype.is_pointer else
                 (float(rng.uniform(0.5, 1.5)) if p.ctype.is_float else int(rng.integers(1, 4))))
                for p in kernel.signature.params]
        args = _clone(good) if case % 4 == 0 else _clone(_mutate(good, rng))
        before = _snapshot(args)
        try:
            HELPERS[helper](mod, args)
        except enzyme.EnzymeError:
            refused += 1
            assert _snapshot(args) == before, f"case {case}: a refused call changed an array"
        except Exception as exc:
            pytest.fail(f"case {case}: {helper} raised outside EnzymeError: "
                        f"{type(exc).__name__}: {exc}")
    assert refused
