"""Differential testing of enzyme-ffi with randomly generated C kernels.

Importable (no pytest dependency) and a command-line tool::

    .venv/bin/python tests/randprog.py --programs 5000 --seed 1 --report /tmp/report.json

Generator
    ``generate(pid, seed)`` writes one deterministic random C program: a kernel
    ``double kN(const double *x, ...)`` or ``void kN(const double *x, double *y, ...)``
    built from loops (int/long/size_t indices, strided, reversed, nested,
    triangular), nested loops that overwrite arrays they read (local arrays and
    the output array), data-dependent branches and ternaries, libm calls on safe
    arguments, local arrays, small structs (parameter or local), static helpers
    (some with loops), active scalar parameters, integer parameters, a
    ``const double`` table, and, in the ``mglobal`` family, a mutable global.
    The ``stride`` family (about 15%) is the two-loop pattern
    ``s = 0.5 * s + OP(x[m], x[m] + 4.0)`` / ``s = 0.5 * s + x[m] * x[m]`` with
    OP in fmin/fmax/copysign/fabs, STRIDE 1-3, either loop possibly in a helper.

Checks (``check_program`` and ``check_c_side``)
    Every differentiable input is one coordinate of a vector ``u`` (active
    arrays, the initial value of output arrays, active scalars, the double
    fields of a Duplicated struct); every output one coordinate of ``f`` (the
    return value, the final output arrays). A central-difference Jacobian
    ``J`` (Richardson, with an error estimate; inputs near a kink are
    resampled) is the oracle. Forward results (``J v``) and reverse results
    (``J^T w``) from the Python API (autodiff, grad/value_and_grad, jvp, vjp,
    batched forward/reverse, jacobian, hvp, hessian) and from C drivers calling
    ``__enzyme_autodiff``/``__enzyme_fwddiff`` (one C module per batch of
    programs) are compared with ``J``, with each other, and through the
    dot-product identity ``w.(J v) == (J^T w).v``.

A disagreement keeps the program source, the two sides and the numbers.
``reference_chain`` rebuilds the C-side drivers with the plain reference
chain (clang -> opt preserve-nvvm,default<O2>,enzyme,default<O3> -> clang)
to tell Enzyme's own defects from enzyme-ffi's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import enzyme
from enzyme import (
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseWithPrimal,
)

HEADER = "#include <math.h>\n#include <stddef.h>\n"
FAMILIES = {"general": 0.75, "stride": 0.15, "mglobal": 0.10}
STRUCT_FIELDS = (("a", 1), ("w", 4), ("b", 1))  # the double fields of every generated struct, in order
C_BATCH = 40  # programs per C-side module

# tolerances: Enzyme vs Enzyme, Enzyme vs central differences
RTOL_TIGHT = 1e-6
RTOL_FD = 1e-5


# ---------------------------------------------------------------------------
# program description
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Param:
    """One kernel parameter.

    ``kind``: ``arr`` (const double *), ``io`` (double *, written; ``mode``
    ``out`` = written before read, ``io`` = read then written), ``scal``
    (double), ``int`` (an integer, always Const; ``ctype`` int/long/size_t) or
    ``struct`` (const struct pointer). ``active``: differentiated (Duplicated /
    Active) or Const.
    """

    name: str
    kind: str
    cdecl: str
    active: bool = True
    length: int = 0
    value: int = 0
    lo: float = -1.0
    hi: float = 1.0
    mode: str = ""
    ctype: str = ""


@dataclasses.dataclass
class Program:
    pid: int
    family: str
    name: str
    source: str  # self-contained C (after HEADER)
    params: list[Param]
    returns: bool  # double return (else void)
    struct_tag: str = ""
    mglobal: str = ""  # the mutable global's name (mglobal family)
    note: str = ""  # what the generator chose (for reports)

    @property
    def full_source(self) -> str:
        return HEADER + self.source

    def index(self, name: str) -> int:
        return next(i for i, p in enumerate(self.params) if p.name == name)


# ---------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Arr:
    name: str  # C expression of the array
    length: str  # C expression of its length
    size: int  # its length at run time
    writable: bool = False


@dataclasses.dataclass
class _Loop:
    var: str
    bound: str  # var is in [0, bound)
    ctype: str


@dataclasses.dataclass
class _Scope:
    arrays: list[_Arr]
    scalars: list[str]
    loops: list[_Loop]
    funcs: list[str]  # static double h(double, double) helpers

    def child(self, loop: _Loop | None = None) -> _Scope:
        return _Scope(list(self.arrays), list(self.scalars),
                      self.loops + ([loop] if loop else []), list(self.funcs))


_CONSTS = ("0.5", "1.5", "2.0", "0.25", "0.75", "3.0", "1.25", "0.1", "0.3")


class _Gen:
    def __init__(self, rng: random.Random, name: str) -> None:
        self.r = rng
        self.name = name
        self.helpers: list[str] = []
        self.counter = 0
        self.uses_struct = False

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    # -- expressions -------------------------------------------------------

    def index(self, arr: _Arr, scope: _Scope) -> str:
        r = self.r
        if scope.loops and r.random() < 0.88:
            loop = r.choice(scope.loops[-2:])
            v, length = loop.var, arr.length
            if loop.bound == length:
                return r.choice([v, v, v, f"{length} - 1 - {v}", f"{v} / 2",
                                 f"({v} + {r.randint(1, 3)}) % {length}"])
            return f"({v} + {r.randint(0, 3)}) % {length}"
        return str(r.randrange(min(arr.size, 3)))

    def leaf(self, scope: _Scope, avoid: frozenset) -> str:
        r = self.r
        arrays = [a for a in scope.arrays if a.name not in avoid]
        scalars = [s for s in scope.scalars if s not in avoid]
        pick = r.random()
        if arrays and pick < 0.66:
            arr = r.choice(arrays)
            return f"{arr.name}[{self.index(arr, scope)}]"
        if scalars and pick < 0.9:
            return r.choice(scalars)
        if scope.loops and pick < 0.95:
            return f"(0.1 * (double){r.choice(scope.loops).var})"
        return r.choice(_CONSTS)

    def bounded(self, e: str) -> str:
        return self.r.choice([f"sin({e})", f"tanh({e})", f"cos({e})", f"tanh({e})"])

    def expr(self, scope: _Scope, depth: int, avoid: frozenset = frozenset()) -> str:
        r = self.r
        if depth <= 0 or r.random() < 0.18:
            return self.leaf(scope, avoid)

        def sub(d: int = depth - 1) -> str:
            return self.expr(scope, d, avoid)

        kind = r.choices(["bin", "fun", "div", "minmax", "tern", "scale", "call"],
                         [4, 4, 1, 1.6, 0.8, 1, 0.6 if scope.funcs else 0])[0]
        if kind == "bin":
            return f"({sub()} {r.choice('+-**')} {sub()})"
        if kind == "scale":
            return f"{r.choice(_CONSTS)} * {sub()}"
        if kind == "div":
            a, b = sub(), sub()
            return r.choice([f"{a} / (1.0 + {b} * {b})", f"{a} / (2.0 + cos({b}))",
                             f"{a} / (1.5 + tanh({b}))"])
        if kind == "tern":
            return (f"({sub(depth - 2)} {r.choice(['>', '<', '>=', '<='])} {sub(depth - 2)} ? "
                    f"{sub()} : {sub()})")
        if kind == "call":
            return f"{r.choice(scope.funcs)}({sub()}, {sub()})"
        if kind == "minmax":
            fn = r.choice(["fmin", "fmax", "copysign", "fabs", "hypot", "fmin", "fmax"])
            if fn == "fabs":
                return f"fabs({sub()})"
            if fn == "hypot":  # never hypot(0, 0) (both arguments may be exactly zero, e.g. 0.1 * i at i = 0)
                e2 = sub()
                return f"hypot({sub()}, {r.choice(['0.5', f'(0.3 + {e2} * {e2})'])})"
            return f"{fn}({sub()}, {sub()})"
        e = sub()
        fn = r.choice(["sin", "cos", "tanh", "exp", "log", "sqrt", "pow", "powa", "sin", "exp"])
        if fn in ("sin", "cos", "tanh"):
            return f"{fn}({e})"
        if fn == "exp":
            return r.choice([f"exp(0.5 * sin({e}))", f"exp(-0.5 * {e} * {e})", f"exp(0.3 * tanh({e}))"])
        if fn == "log":
            return r.choice([f"log(1.0 + {e} * {e})", f"log(2.0 + sin({e}))", f"log(0.5 + exp(tanh({e})))"])
        if fn == "sqrt":
            return r.choice([f"sqrt(1.0 + {e} * {e})", f"sqrt(2.0 + cos({e}))"])
        if fn == "pow":
            return f"pow(1.0 + {e} * {e}, {r.choice(['0.5', '1.5', '-0.5', '2.0', '0.25'])})"
        return f"pow(1.5 + sin({e}), 0.5 * tanh({sub()}))"

    # -- statements --------------------------------------------------------

    def loop_header(self, scope: _Scope, bound: str, size: int, var: str | None = None,
                    allow_down: bool = True, stride: str | None = None) -> tuple[str, _Loop]:
        r = self.r
        ctype = r.choice(["int", "int", "long", "size_t"])
        var = var or self.fresh("i")
        cmp_bound = f"(size_t){bound}" if ctype == "size_t" and not bound.isdigit() else bound
        style = r.random()
        if stride is not None:
            head = f"for ({ctype} {var} = 0; {var} < {cmp_bound}; {var} += {stride})"
        elif allow_down and ctype != "size_t" and style < 0.2:
            head = f"for ({ctype} {var} = {bound} - 1; {var} >= 0; {var}--)"
        elif style < 0.35:
            step = r.randint(2, 3)
            head = f"for ({ctype} {var} = {r.randint(0, 1)}; {var} < {cmp_bound}; {var} += {step})"
        else:
            head = f"for ({ctype} {var} = 0; {var} < {cmp_bound}; {var}++)"
        return head, _Loop(var, bound, ctype)

    def accumulate(self, scope: _Scope, s: str, depth: int) -> str:
        r = self.r
        avoid = frozenset([s])
        k = r.random()
        if k < 0.35:
            return f"{s} += {self.expr(scope, depth, avoid)};"
        if k < 0.55:
            return f"{s} = 0.5 * {s} + {self.expr(scope, depth, avoid)};"
        if k < 0.75:
            return f"{s} = {r.choice(['0.5', '0.8', '-0.6'])} * {s} + {self.bounded(self.expr(scope, depth))};"
        if k < 0.88:
            return f"{s} -= {r.choice(_CONSTS)} * {self.expr(scope, depth, avoid)};"
        return f"{s} *= 1.0 + 0.05 * {self.bounded(self.expr(scope, depth))};"

    def update(self, scope: _Scope, arr: _Arr, idx: str) -> str:
        r = self.r
        a = f"{arr.name}[{idx}]"
        k = r.random()
        if k < 0.45:
            return f"{a} = {r.choice(['0.5', '0.7', '-0.5'])} * {a} + 0.5 * {self.bounded(self.expr(scope, 2))};"
        if k < 0.75:
            return f"{a} += {r.choice(['0.1', '0.3', '0.5'])} * {self.expr(scope, 2, frozenset([arr.name]))};"
        return f"{a} = 0.5 * ({a} + {self.bounded(self.expr(scope, 2))});"

    def body(self, scope: _Scope, depth: int, nest: int) -> list[str]:
        """Statements of a loop body (the innermost loop variable is in scope)."""
        r = self.r
        out: list[str] = []
        for _ in range(r.randint(1, 2)):
            k = r.random()
            loop = scope.loops[-1]
            writable = [a for a in scope.arrays if a.writable and a.length == loop.bound]
            if k < 0.4:
                out.append(self.accumulate(scope, "s", depth))
            elif k < 0.58:
                cond = f"{self.expr(scope, 1)} {r.choice(['>', '<'])} {self.expr(scope, 1)}"
                out.append(f"if ({cond}) {self.accumulate(scope, 's', depth)}")
                if r.random() < 0.7:
                    out.append(f"else {self.accumulate(scope, 's', depth - 1)}")
            elif k < 0.7:
                u = self.fresh("u")
                out.append(f"double {u} = {self.expr(scope, depth)};")
                inner = scope.child()
                inner.scalars.append(u)
                scope.scalars.append(u)
                out.append(self.accumulate(inner, "s", depth))
            elif k < 0.85 and writable:
                out.append(self.update(scope, r.choice(writable), loop.var))
            elif nest < 2:
                out += self.loop(scope, depth, nest + 1)
            else:
                out.append(self.accumulate(scope, "s", depth))
        return out

    def loop(self, scope: _Scope, depth: int, nest: int = 0) -> list[str]:
        r = self.r
        arrays = [a for a in scope.arrays if not a.length.isdigit() or r.random() < 0.3]
        arr = r.choice(arrays or scope.arrays)
        if nest > 0 and scope.loops and r.random() < 0.4:  # triangular: j < i
            outer = scope.loops[-1]
            var = self.fresh("j")
            head = f"for ({outer.ctype} {var} = 0; {var} < {outer.var}; {var}++)"
            lp = _Loop(var, outer.bound, outer.ctype)
        else:
            head, lp = self.loop_header(scope, arr.length, arr.size)
        inner = scope.child(lp)
        stmts = self.body(inner, depth, nest)
        return [head + " {", *("    " + s for s in stmts), "}"]

    # -- blocks ------------------------------------------------------------

    def block_local_array(self, scope: _Scope) -> list[str]:
        """A local array, initialised from the inputs, then overwritten in
        place by nested sweeps that read what they overwrite."""
        r = self.r
        K = r.choice([4, 5, 6, 8])
        t = self.fresh("t")
        arr = _Arr(t, str(K), K, writable=True)
        out = [f"double {t}[{K}];"]
        head, lp = self.loop_header(scope, str(K), K, allow_down=False)
        head = head.replace(" += 2)", "++)").replace(" += 3)", "++)").replace("= 1;", "= 0;")
        out.append(f"{head} {t}[{lp.var}] = {self.expr(scope.child(lp), 2)};")
        scope.arrays.append(arr)
        out += self.sweeps(scope, arr)
        return out

    def sweeps(self, scope: _Scope, arr: _Arr) -> list[str]:
        r = self.r
        t, K = arr.name, arr.length
        rep = self.fresh("r")
        j = self.fresh("j")
        ctype = r.choice(["int", "long"])
        inner = scope.child(_Loop(j, K, ctype))
        e = self.expr(inner, 2)
        kind = r.choice(["fwd", "bwd", "wrap", "gs", "old", "branch"])
        if kind == "fwd":
            head = f"for ({ctype} {j} = 1; {j} < {K}; {j}++)"
            stmt = f"{t}[{j}] = 0.5 * {t}[{j}] + 0.5 * {self.bounded(f'{t}[{j} - 1] * {e}')};"
        elif kind == "bwd":
            head = f"for ({ctype} {j} = {K} - 2; {j} >= 0; {j}--)"
            stmt = f"{t}[{j}] = 0.6 * {t}[{j}] + 0.4 * {self.bounded(f'{t}[{j} + 1] + {e}')};"
        elif kind == "wrap":
            head = f"for ({ctype} {j} = 0; {j} < {K}; {j}++)"
            stmt = f"{t}[{j}] = 0.5 * {t}[{j}] + 0.5 * {self.bounded(f'{t}[({j} + {K} - 1) % {K}] * {e}')};"
        elif kind == "gs":
            head = f"for ({ctype} {j} = 1; {j} + 1 < {K}; {j}++)"
            stmt = f"{t}[{j}] = 0.5 * ({t}[{j} - 1] + {t}[{j} + 1]) * {self.bounded(e)};"
        elif kind == "old":
            head = f"for ({ctype} {j} = 0; {j} < {K}; {j}++)"
            old = self.fresh("o")
            stmt = (f"double {old} = {t}[{j}]; {t}[{j}] = {self.bounded(f'{old} + {e}')}; "
                    f"s += {old} * {t}[{j}];")
        else:
            head = f"for ({ctype} {j} = 1; {j} < {K}; {j}++)"
            e2 = self.expr(inner, 1)
            stmt = (f"if ({t}[{j} - 1] > {e2}) {t}[{j}] = 0.5 * {t}[{j}] + 0.3 * {self.bounded(e)}; "
                    f"else {t}[{j}] = fmax({t}[{j}], {t}[{j} - 1]) * 0.9;")
        reps = r.randint(1, 3)
        return [f"for (int {rep} = 0; {rep} < {reps}; {rep}++)", f"    {head} {{ {stmt} }}"]

    def block_output(self, scope: _Scope, y: Param, y_len: str) -> list[str]:
        r = self.r
        arr = _Arr(y.name, y_len, y.length, writable=True)
        out: list[str] = []
        if y.mode == "out":
            head, lp = self.loop_header(scope, y_len, y.length, allow_down=False)
            head = head.replace(" += 2)", "++)").replace(" += 3)", "++)").replace("= 1;", "= 0;")
            out.append(f"{head} {y.name}[{lp.var}] = {self.expr(scope.child(lp), 2)};")
        scope.arrays.append(arr)
        if r.random() < 0.7:
            out += self.sweeps(scope, arr)
        if r.random() < 0.4:
            head, lp = self.loop_header(scope, y_len, y.length)
            out.append(f"{head} {self.update(scope.child(lp), arr, lp.var)}")
        return out

    def helper_reduce(self, scope: _Scope) -> str:
        """A static helper reducing an array with a loop (maybe nested)."""
        name = f"{self.name}_{self.fresh('h')}"
        hs = _Scope([_Arr("v", "len", 3)], ["c"], [], list(scope.funcs))
        lines = [f"static double {name}(const double *v, int len, double c) {{", "    double s = v[0] * c;"]
        lines += ["    " + s for s in self.loop(hs, 2, nest=1 if self.r.random() < 0.5 else 0)]
        lines += ["    return s;", "}"]
        self.helpers.append("\n".join(lines))
        return name

    def helper_inplace(self, scope: _Scope) -> str:
        """A static helper overwriting an array in place (reading what it overwrites)."""
        name = f"{self.name}_{self.fresh('h')}"
        hs = _Scope([_Arr("v", "nv", 3)], [], [], list(scope.funcs))
        t = _Arr("t", "len", 3, writable=True)
        hs.arrays.append(t)
        self.counter += 1
        lines = [f"static void {name}(double *t, int len, const double *v, int nv) {{", "    double s = 0.0;"]
        lines += ["    " + s for s in self.sweeps(hs, t)]
        lines += ["    t[0] += 0.1 * tanh(s);", "}"]
        self.helpers.append("\n".join(lines))
        return name

    def helper_scalar(self, scope: _Scope) -> str:
        name = f"{self.name}_{self.fresh('f')}"
        hs = _Scope([], ["p", "q"], [], [])
        self.helpers.append(f"static double {name}(double p, double q) {{ return {self.expr(hs, 2)}; }}")
        return name

    def helper_struct(self) -> str:
        name = f"{self.name}_{self.fresh('h')}"
        q = _Scope([_Arr("q->w", "4", 4)], ["q->a", "q->b", "c"], [], [])
        lines = [f"static double {name}(const struct {self.name}_s *q, double c) {{", "    double s = q->a;",
                 "    for (int k = 0; k < q->m; k++) {",
                 f"        {self.accumulate(q.child(_Loop('k', '4', 'int')), 's', 2)}", "    }",
                 "    return s;", "}"]
        self.helpers.append("\n".join(lines))
        return name

    def block_struct_local(self, scope: _Scope) -> list[str]:
        self.uses_struct = True
        st = self.fresh("st")
        out = [f"struct {self.name}_s {st};", f"{st}.a = {self.expr(scope, 2)};",
               f"{st}.b = {self.expr(scope, 1)};", f"{st}.m = {self.r.randint(2, 4)};"]
        head, lp = self.loop_header(scope, "4", 4, allow_down=False)
        head = head.replace(" += 2)", "++)").replace(" += 3)", "++)").replace("= 1;", "= 0;")
        out.append(f"{head} {st}.w[{lp.var}] = {self.expr(scope.child(lp), 2)};")
        scope.arrays.append(_Arr(f"{st}.w", "4", 4))
        scope.scalars.append(f"{st}.a")
        if self.r.random() < 0.7:
            out.append(f"s += {self.helper_struct()}(&{st}, {self.expr(scope, 1)});")
        return out


def _struct_def(name: str) -> str:
    return f"struct {name}_s {{ double a; double w[4]; double b; int m; }};"


def _generate_general(r: random.Random, pid: int, name: str, family: str) -> Program:
    g = _Gen(r, name)
    n = r.randint(3, 9)
    returns = r.random() < 0.65
    params: list[Param] = [Param("x", "arr", "const double *x", True, length=n,
                                 lo=r.choice([-1.5, 0.2]), hi=1.5)]
    y: Param | None = None
    y_len = "n"
    if not returns or r.random() < 0.2:
        y_mode = "out" if r.random() < 0.6 else "io"
        m_param = None
        length = n
        if r.random() < 0.3:
            length = r.randint(3, 8)
            ctype = r.choice(["int", "long", "size_t"])
            m_param = Param("m", "int", f"{ctype} m", False, value=length, ctype=ctype)
            y_len = "m"
        y = Param("y", "io", "double *y", True, length=length, mode=y_mode)
        params.append(y)
        if m_param is not None:
            params.append(m_param)
    if r.random() < 0.35:
        params.append(Param("w", "arr", "const double *w", r.random() < 0.6, length=n, lo=-1.0, hi=1.0))
    for s in ("a", "b", "c"):
        if r.random() < (0.55 if s == "a" else 0.3):
            params.append(Param(s, "scal", f"double {s}", r.random() < 0.85,
                                lo=r.choice([-1.2, 0.3]), hi=1.4))
    params.append(Param("n", "int", "int n", False, value=n, ctype="int"))
    stride = None
    if r.random() < 0.2:
        params.append(Param("stride", "int", "int stride", False, value=r.randint(1, 3), ctype="int"))
        stride = "stride"
    struct_param = None
    if r.random() < 0.25:
        struct_param = Param("p", "struct", f"const struct {name}_s *p", r.random() < 0.7, lo=-1.0, hi=1.0)
        params.append(struct_param)
        g.uses_struct = True
    # keep x (and y for void kernels) first, shuffle the rest a little
    head = params[:2] if y is not None and not returns else params[:1]
    rest = params[len(head):]
    if r.random() < 0.3:
        r.shuffle(rest)
    params = head + rest

    scope = _Scope([], [], [], [])
    for p in params:
        if p.kind in ("arr",):
            scope.arrays.append(_Arr(p.name, "n", p.length))
        elif p.kind == "scal":
            scope.scalars.append(p.name)
    if y is not None and y.mode == "io":
        scope.arrays.append(_Arr("y", y_len, y.length, writable=True))
    globals_src: list[str] = []
    if struct_param is not None:
        scope.arrays.append(_Arr("p->w", "4", 4))
        scope.scalars += ["p->a", "p->b"]
    if r.random() < 0.3:
        tab = f"{name}_tab"
        values = ", ".join(f"{r.uniform(-1, 1):.3f}" for _ in range(8))
        globals_src.append(f"{r.choice(['', 'static '])}const double {tab}[8] = {{{values}}};")
        scope.arrays.append(_Arr(tab, "8", 8))
    mglobal = ""
    if family == "mglobal":
        mglobal = f"{name}_g"
        globals_src.append(f"double {mglobal} = 1.1;")
        scope.scalars.append(mglobal)
    if r.random() < 0.3:
        scope.funcs.append(g.helper_scalar(scope))

    lines = ["double s = 0.0;"]
    if mglobal:
        lines.append(f"s += {mglobal} * {g.expr(scope, 1)};")
    blocks = r.randint(2, 4)
    y_done = False
    for b in range(blocks):
        k = r.random()
        if y is not None and not y_done and (k < 0.25 or b == blocks - 1):
            lines += g.block_output(scope, y, y_len)
            y_done = True
        elif k < 0.45:
            if stride and r.random() < 0.5:
                head, lp = g.loop_header(scope, "n", n, stride=stride)
                lines += [head + " {", *("    " + s for s in g.body(scope.child(lp), 2, 1)), "}"]
            else:
                lines += g.loop(scope, 2)
        elif k < 0.6:
            lines += g.block_local_array(scope)
        elif k < 0.72:
            arr = r.choice(scope.arrays)
            lines.append(f"s += {g.helper_reduce(scope)}({arr.name}, {arr.length}, {g.expr(scope, 1)});")
        elif k < 0.82:
            writable = [a for a in scope.arrays if a.writable]
            if not writable:
                lines += g.block_local_array(scope)
                writable = [a for a in scope.arrays if a.writable]
            t = r.choice(writable)
            v = r.choice([a for a in scope.arrays if a is not t])
            lines.append(f"{g.helper_inplace(scope)}({t.name}, {t.length}, {v.name}, {v.length});")
        elif k < 0.9:
            if struct_param is not None and r.random() < 0.5:
                lines.append(f"s += {g.helper_struct()}(p, {g.expr(scope, 1)});")
            else:
                lines += g.block_struct_local(scope)
        else:
            cond = f"{g.expr(scope, 2)} > {g.expr(scope, 1)}"
            lines += [f"if ({cond}) {{", "    " + g.accumulate(scope, "s", 2), "} else {",
                      "    " + g.accumulate(scope, "s", 2), "}"]
            if r.random() < 0.5:
                lines.append(f"s = ({g.expr(scope, 1)} > {g.expr(scope, 1)}) ? {g.expr(scope, 2)} : s;")
    if returns:
        lines.append(r.choice(["return s;", f"return s + {g.expr(scope, 2)};",
                               f"return s * {g.bounded(g.expr(scope, 1))};"]))
    elif r.random() < 0.7:
        lines.append(f"y[{r.randrange(y.length)}] += {r.choice(['s', '0.5 * s', 'tanh(s)'])};")
    sig = f"{'double' if returns else 'void'} {name}({', '.join(p.cdecl for p in params)})"
    parts = []
    if g.uses_struct:
        parts.append(_struct_def(name))
    parts += globals_src + g.helpers
    parts.append(sig + " {\n" + "\n".join("    " + ln for ln in lines) + "\n}")
    return Program(pid, family, name, "\n".join(parts) + "\n", params, returns,
                   struct_tag=f"{name}_s" if g.uses_struct else "", mglobal=mglobal)


_STRIDE_OPS = ("fmin(x[m], x[m] + 4.0)", "fmin(x[m] + 4.0, x[m])", "fmax(x[m], x[m] + 4.0)",
               "fmax(x[m] + 4.0, x[m])", "copysign(x[m], x[m] + 4.0)", "fabs(x[m])",
               "(x[m] < x[m] + 4.0 ? x[m] : x[m] + 4.0)", "fmin(x[m], 4.0 + x[m]) * x[m]")


def _generate_stride(r: random.Random, pid: int, name: str) -> Program:
    op = r.choice(_STRIDE_OPS)
    st1 = r.choice(["1", "2", "3"])
    st2 = st1 if r.random() < 0.75 else r.choice(["1", "2", "3"])
    ctype = r.choice(["int", "int", "long", "size_t"])
    bound = "(size_t)n" if ctype == "size_t" else "n"
    where = r.choice(["inline", "inline", "helper1", "helper2", "both"])
    loop1 = f"for ({ctype} m = 0; m < {bound}; m += {st1}) s = 0.5 * s + {op};"
    loop2 = f"for ({ctype} m = 0; m < {bound}; m += {st2}) s = 0.5 * s + x[m] * x[m];"
    helpers, body = [], ["double s = 0.0;"]
    for k, loop in ((1, loop1), (2, loop2)):
        if where == f"helper{k}" or where == "both":
            helpers.append(f"static double {name}_loop{k}(const double *x, int n, double s) {{\n"
                           f"    {loop}\n    return s;\n}}")
            body.append(f"s = {name}_loop{k}(x, n, s);")
        else:
            body.append(loop)
    body.append("return s;")
    n = r.randint(3, 12)
    src = "\n".join(helpers + [f"double {name}(const double *x, int n) {{\n"
                               + "\n".join("    " + b for b in body) + "\n}"]) + "\n"
    params = [Param("x", "arr", "const double *x", True, length=n, lo=-1.5, hi=1.5),
              Param("n", "int", "int n", False, value=n, ctype="int")]
    return Program(pid, "stride", name, src, params, True,
                   note=f"op={op} strides={st1},{st2} index={ctype} {where}")


def generate(pid: int, seed: int, families: Sequence[str] = tuple(FAMILIES)) -> Program:
    """Program ``pid`` of the run with ``seed`` (deterministic)."""
    r = random.Random(f"randprog:{seed}:{pid}")
    weights = [FAMILIES[f] if f in families else 0.0 for f in FAMILIES]
    family = r.choices(list(FAMILIES), weights)[0]
    name = f"k{pid}"
    if family == "stride":
        return _generate_stride(r, pid, name)
    return _generate_general(r, pid, name, family)


# ---------------------------------------------------------------------------
# inputs, flattening, finite differences
# ---------------------------------------------------------------------------


def _struct_flat(value: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(value[f], dtype=float).ravel() for f, _ in STRUCT_FIELDS])


def _struct_from(template: np.ndarray, flat: np.ndarray) -> np.ndarray:
    out = template.copy()
    pos = 0
    for f, count in STRUCT_FIELDS:
        out[f] = flat[pos:pos + count].reshape(out[f].shape)
        pos += count
    return out


@dataclasses.dataclass
class Case:
    """One input point: the values of all parameters, and the layout of the
    input vector ``u`` and the output vector ``f``."""

    values: dict[str, Any]
    in_slices: dict[str, slice]  # differentiable input -> its coordinates in u
    out_slices: dict[str, slice]  # "ret" / output array -> its coordinates in f
    u0: np.ndarray
    dtype: Any = None  # the struct dtype

    @property
    def n_in(self) -> int:
        return self.u0.size

    @property
    def n_out(self) -> int:
        return sum(s.stop - s.start for s in self.out_slices.values())


def make_case(prog: Program, rng: np.random.Generator, struct_dtype: Any) -> Case:
    values: dict[str, Any] = {}
    in_slices: dict[str, slice] = {}
    out_slices: dict[str, slice] = {}
    u_parts: list[np.ndarray] = []
    pos = 0

    def take(name: str, flat: np.ndarray) -> None:
        nonlocal pos
        in_slices[name] = slice(pos, pos + flat.size)
        pos += flat.size
        u_parts.append(flat)

    for p in prog.params:
        if p.kind == "int":
            values[p.name] = p.value
        elif p.kind in ("arr", "io"):
            values[p.name] = rng.uniform(p.lo, p.hi, p.length)
            if p.active:
                take(p.name, values[p.name])
        elif p.kind == "scal":
            values[p.name] = float(rng.uniform(p.lo, p.hi))
            if p.active:
                take(p.name, np.array([values[p.name]]))
        elif p.kind == "struct":
            st = np.zeros(1, dtype=struct_dtype)
            st["m"] = int(rng.integers(2, 5))
            st = _struct_from(st, rng.uniform(p.lo, p.hi, sum(c for _, c in STRUCT_FIELDS)))
            values[p.name] = st
            if p.active:
                take(p.name, _struct_flat(st))
    opos = 0
    if prog.returns:
        out_slices["ret"] = slice(0, 1)
        opos = 1
    for p in prog.params:
        if p.kind == "io":
            out_slices[p.name] = slice(opos, opos + p.length)
            opos += p.length
    u0 = np.concatenate(u_parts) if u_parts else np.zeros(0)
    return Case(values, in_slices, out_slices, u0, struct_dtype)


def case_values(prog: Program, case: Case, u: np.ndarray | None = None) -> dict[str, Any]:
    """Fresh copies of the parameter values, with the differentiable ones taken from ``u``."""
    vals: dict[str, Any] = {}
    for p in prog.params:
        v = case.values[p.name]
        if u is not None and p.name in case.in_slices:
            part = u[case.in_slices[p.name]]
            if p.kind == "scal":
                v = float(part[0])
            elif p.kind == "struct":
                v = _struct_from(v, part)
            else:
                v = part.copy()
        elif isinstance(v, np.ndarray):
            v = v.copy()
        vals[p.name] = v
    return vals


def flat_inputs(prog: Program, case: Case, parts: dict[str, Any]) -> np.ndarray:
    """An input-space vector from per-parameter pieces (arrays, floats, structs)."""
    out = np.zeros(case.n_in)
    for p in prog.params:
        if p.name in case.in_slices:
            v = parts[p.name]
            if p.kind == "struct":
                v = _struct_flat(v)
            out[case.in_slices[p.name]] = np.asarray(v, dtype=float).ravel()
    return out


def split_inputs(prog: Program, case: Case, vec: np.ndarray) -> dict[str, Any]:
    """Per-parameter pieces (arrays, floats, structs) of an input-space vector."""
    parts: dict[str, Any] = {}
    for p in prog.params:
        if p.name in case.in_slices:
            seg = vec[case.in_slices[p.name]]
            if p.kind == "scal":
                parts[p.name] = float(seg[0])
            elif p.kind == "struct":
                parts[p.name] = _struct_from(case.values[p.name], seg)
            else:
                parts[p.name] = seg.copy()
    return parts


def evaluate(prog: Program, kernel: Any, case: Case, u: np.ndarray | None = None) -> np.ndarray:
    vals = case_values(prog, case, u)
    ret = kernel(*(vals[p.name] for p in prog.params))
    out = np.zeros(case.n_out)
    for name, sl in case.out_slices.items():
        out[sl] = ret if name == "ret" else vals[name]
    return out


@dataclasses.dataclass
class FD:
    J: np.ndarray  # central-difference Jacobian (Richardson)
    noise: np.ndarray  # per-entry error allowance
    f0: np.ndarray
    kinks: list[tuple[int, int]]


def fd_jacobian(F: Any, u0: np.ndarray, f0: np.ndarray, rel_h: float = 1e-5) -> FD:
    m, n = f0.size, u0.size
    J = np.zeros((m, n))
    noise = np.zeros((m, n))
    diffs = np.zeros((m, n))
    fmag = np.abs(f0)
    for j in range(n):
        h = rel_h * max(1.0, abs(u0[j]))
        evals = []
        for step in (h, -h, 2 * h, -2 * h):
            u = u0.copy()
            u[j] += step
            evals.append(F(u))
        d1 = (evals[0] - evals[1]) / (2 * h)
        d2 = (evals[2] - evals[3]) / (4 * h)
        J[:, j] = (4 * d1 - d2) / 3
        diffs[:, j] = np.abs(d1 - d2)
        mag = np.maximum.reduce([fmag] + [np.abs(e) for e in evals])
        noise[:, j] = 5e-14 * (1.0 + mag) / h
    rowscale = np.max(np.abs(J), axis=1, keepdims=True) if n else np.zeros((m, 1))
    bad = ~(diffs <= 1e-6 * (np.abs(J) + 1e-2 * rowscale) + noise)
    kinks = [(int(k), int(j)) for k, j in zip(*np.nonzero(bad))]
    noise = noise + diffs  # what the estimate itself may be off by
    return FD(J, noise, f0, kinks)


# ---------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    pid: int
    family: str
    checks: int = 0
    disagreements: list[dict] = dataclasses.field(default_factory=list)
    skipped: str = ""
    attempts: int = 0
    seconds: float = 0.0
    c_values: dict = dataclasses.field(default_factory=dict)  # set by check_program for the C side

    def check(self, what: str, a: Any, b: Any, scale: Any, rtol: float, noise: Any = 0.0) -> bool:
        """Record one comparison of ``a`` (what a way computed) with ``b``."""
        self.checks += 1
        a = np.asarray(a, dtype=float).ravel()
        b = np.asarray(b, dtype=float).ravel()
        if a.shape != b.shape:
            self.disagreements.append({"check": what, "problem": f"shapes {a.shape} vs {b.shape}"})
            return False
        scale = np.broadcast_to(np.asarray(scale, dtype=float).ravel(), a.shape) if a.size else a
        noise = np.broadcast_to(np.asarray(noise, dtype=float).ravel(), a.shape) if a.size else a
        ok = np.abs(a - b) <= rtol * (np.abs(a) + np.abs(b) + scale) + 10 * noise
        if ok.all():
            return True
        bad = np.nonzero(~ok)[0]
        self.disagreements.append({
            "check": what, "where": bad[:8].tolist(), "got": a[bad[:8]].tolist(),
            "expected": b[bad[:8]].tolist(), "max_abs_err": float(np.nanmax(np.abs(a - b)))
            if np.isfinite(a - b).any() else float("nan"),
            "got_all": a.tolist()[:40], "expected_all": b.tolist()[:40]})
        return False

    def error(self, what: str, exc: BaseException) -> None:
        self.checks += 1
        msg = f"{type(exc).__name__}: {exc}"
        self.disagreements.append({"check": what, "problem": "raised", "error": msg[:4000]})


# ---------------------------------------------------------------------------
# the Python-API ways
# ---------------------------------------------------------------------------


def _scales(fd: FD, v: np.ndarray | None = None, w: np.ndarray | None = None):
    A = np.abs(fd.J)
    if v is not None and w is None:
        return A @ np.abs(v), fd.noise @ np.abs(v)
    if w is not None and v is None:
        return np.abs(w) @ A, np.abs(w) @ fd.noise
    return float(np.abs(w) @ A @ np.abs(v)), float(np.abs(w) @ fd.noise @ np.abs(v))


class _Runner:
    """The checks of one program (with its API module already compiled)."""

    def __init__(self, prog: Program, mod: Any, case: Case, fd: FD, out: Outcome,
                 rng: np.random.Generator) -> None:
        self.prog, self.mod, self.case, self.fd, self.out, self.rng = prog, mod, case, fd, out, rng
        self.kernel = mod[prog.name]

    # annotations -------------------------------------------------------------

    def reverse_args(self, w: np.ndarray, lanes: int = 0, ws: Sequence[np.ndarray] = (),
                     u: np.ndarray | None = None) -> list:
        """Reverse-mode annotations: Duplicated arrays/structs (output arrays
        seeded from ``w``), Active scalars; BatchDuplicated with ``lanes`` lanes."""
        prog, case = self.prog, self.case
        vals = case_values(prog, case, u)
        anns: list[Any] = []
        for p in prog.params:
            v = vals[p.name]
            if p.kind == "int" or not p.active:
                anns.append(Const(v))
            elif p.kind == "scal":
                anns.append(Active(v))
            elif p.kind == "io":
                sl = case.out_slices[p.name]
                if lanes:
                    anns.append(BatchDuplicated(v, np.stack([wk[sl].copy() for wk in ws])))
                else:
                    anns.append(Duplicated(v, w[sl].copy()))
            else:
                if lanes:
                    anns.append(BatchDuplicated(v, [np.zeros_like(v) for _ in range(lanes)]))
                else:
                    anns.append(Duplicated(v, np.zeros_like(v)))
        return anns

    def reverse_result(self, anns: list, derivs: Sequence, lane: int | None = None) -> np.ndarray:
        parts: dict[str, Any] = {}
        for i, p in enumerate(self.prog.params):
            if p.name not in self.case.in_slices:
                continue
            if p.kind == "scal":
                d = derivs[i]
                parts[p.name] = d if lane is None else d[lane]
            else:
                dval = anns[i].dval
                parts[p.name] = dval if lane is None else dval[lane]
        return flat_inputs(self.prog, self.case, parts)

    def forward_args(self, vs: Sequence[np.ndarray], batched: bool) -> list:
        prog, case = self.prog, self.case
        vals = case_values(prog, case)
        pieces = [split_inputs(prog, case, v) for v in vs]
        anns: list[Any] = []
        for p in prog.params:
            v = vals[p.name]
            if p.name not in case.in_slices:
                anns.append(Const(v))
            elif batched:
                lanes = [pc[p.name] for pc in pieces]
                if p.kind in ("arr", "io"):
                    lanes = np.stack(lanes)
                anns.append(BatchDuplicated(v, lanes))
            else:
                anns.append(Duplicated(v, pieces[0][p.name]))
        return anns

    def forward_result(self, anns: list, tangent: Any, lane: int | None = None) -> np.ndarray:
        out = np.zeros(self.case.n_out)
        for name, sl in self.case.out_slices.items():
            if name == "ret":
                out[sl] = tangent if lane is None else tangent[lane]
            else:
                dval = anns[self.prog.index(name)].dval
                out[sl] = dval if lane is None else dval[lane]
        return out

    def primal_of(self, anns: list, primal: Any) -> np.ndarray:
        out = np.zeros(self.case.n_out)
        for name, sl in self.case.out_slices.items():
            out[sl] = primal if name == "ret" else anns[self.prog.index(name)].val
        return out

    # the ways ----------------------------------------------------------------

    def reverse(self, w: np.ndarray, mode: Any) -> np.ndarray | None:
        anns = self.reverse_args(w)
        seed = float(w[0]) if self.prog.returns else None
        try:
            r = enzyme.autodiff(mode, self.kernel, *anns, seed=seed)
        except enzyme.EnzymeError as exc:
            self.out.error(f"api-reverse[{mode}]", exc)
            return None
        untouched(self.out, f"api-reverse[{mode}]", self.prog, self.case, [a.val for a in anns])
        g = self.reverse_result(anns, r.derivs)
        if mode is ReverseWithPrimal:
            outs = self.primal_of(anns, r.primal if self.prog.returns else 0.0)
            self.out.check("api-reverse-primal vs kernel", outs, self.fd.f0, np.abs(self.fd.f0), RTOL_TIGHT)
        return g

    def forward(self, v: np.ndarray, mode: Any) -> np.ndarray | None:
        anns = self.forward_args([v], batched=False)
        try:
            r = enzyme.autodiff(mode, self.kernel, *anns)
        except enzyme.EnzymeError as exc:
            self.out.error(f"api-forward[{mode}]", exc)
            return None
        untouched(self.out, f"api-forward[{mode}]", self.prog, self.case, [a.val for a in anns])
        t = self.forward_result(anns, r.tangent)
        if mode is ForwardWithPrimal:
            outs = self.primal_of(anns, r.primal if self.prog.returns else 0.0)
            self.out.check("api-forward-primal vs kernel", outs, self.fd.f0, np.abs(self.fd.f0), RTOL_TIGHT)
        return t

    def batch_forward(self, vs: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        anns = self.forward_args(vs, batched=True)
        try:
            r = enzyme.autodiff(Forward, self.kernel, *anns)
        except enzyme.EnzymeError as exc:
            self.out.error(f"api-batch-forward[width={len(vs)}]", exc)
            return None
        untouched(self.out, "api-batch-forward", self.prog, self.case, [a.val for a in anns])
        return [self.forward_result(anns, r.tangent, lane) for lane in range(len(vs))]

    def batch_reverse(self, ws: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        anns = self.reverse_args(ws[0], lanes=len(ws), ws=ws)
        seed = [float(wk[0]) for wk in ws] if self.prog.returns else None
        try:
            r = enzyme.autodiff(Reverse, self.kernel, *anns, seed=seed)
        except enzyme.EnzymeError as exc:
            self.out.error(f"api-batch-reverse[width={len(ws)}]", exc)
            return None
        untouched(self.out, "api-batch-reverse", self.prog, self.case, [a.val for a in anns])
        return [self.reverse_result(anns, r.derivs, lane) for lane in range(len(ws))]


def untouched(out: Outcome, label: str, prog: Program, case: Case, args: Sequence[Any]) -> None:
    """One check: the read-only inputs (const arrays and structs) of a call are as they were."""
    changed = []
    for p, val in zip(prog.params, args):
        if p.kind in ("arr", "struct") and isinstance(val, np.ndarray):
            before = case.values[p.name]
            a, b = (_struct_flat(val), _struct_flat(before)) if p.kind == "struct" else (val, before)
            if not np.array_equal(a, b):
                changed.append(p.name)
    out.checks += 1
    if changed:
        out.disagreements.append({"check": f"{label} leaves read-only inputs unchanged",
                                  "problem": f"modified {changed} (const pointers, Const or Duplicated)"})


def _checked(out: Outcome, label: str, prog: Program, case: Case, fn: Any, *extra: Any) -> Any:
    """Call a helper on fresh arguments (plus ``extra``), then check its read-only inputs."""
    args = fresh_args(prog, case)
    result = fn(*args, *extra)
    untouched(out, label, prog, case, args)
    return result


def fresh_args(prog: Program, case: Case) -> list:
    """The kernel's arguments, fresh copies (a call may overwrite its output arrays)."""
    vals = case_values(prog, case)
    return [vals[p.name] for p in prog.params]


def _active_argnums(prog: Program, case: Case) -> tuple[int, ...]:
    return tuple(i for i, p in enumerate(prog.params) if p.name in case.in_slices)


def draw_directions(rng: np.random.Generator, prog: Program, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The tangent v (input space) and the seed w (output space) of a program's checks."""
    v = rng.uniform(-1, 1, case.n_in)
    w = rng.uniform(-1, 1, case.n_out)
    if prog.returns:
        w[0] = rng.uniform(0.5, 1.5) * rng.choice([-1, 1])
    return v, w


def modes_of(prog: Program, case: Case) -> tuple[Any, Any, bool]:
    """The reverse and forward modes of a program's main autodiff calls, and
    whether jvp/vjp then need no derivative build of their own (same mode and
    activities: only x differentiated, or x and the output array of a void kernel)."""
    active = set(case.in_slices)
    y = {p.name for p in prog.params if p.kind == "io"}
    if prog.returns and active == {"x"}:
        return ReverseWithPrimal, ForwardWithPrimal, True
    if not prog.returns and len(y) == 1 and active == {"x"} | y:
        return Reverse, Forward, True
    return ((Reverse, ForwardWithPrimal) if prog.pid % 2 == 0 else (ReverseWithPrimal, Forward)) + (False,)


def _api_checks(run: _Runner, pid: int) -> dict[str, Any]:
    """The Python-API ways of one program; returns what the C side is compared with."""
    prog, case, fd, out, rng = run.prog, run.case, run.fd, run.out, run.rng
    kern = run.kernel
    n_in, n_out = case.n_in, case.n_out
    v, w = draw_directions(rng, prog, case)
    Jv, Jtw = fd.J @ v, w @ fd.J
    sv, nv = _scales(fd, v=v)
    sw, nw = _scales(fd, w=w)
    sd, nd = _scales(fd, v=v, w=w)

    rev_mode, fwd_mode, helpers_free = modes_of(prog, case)
    g = run.reverse(w, rev_mode)
    if g is not None:
        out.check(f"api-reverse[{rev_mode}] J^T w vs FD", g, Jtw, sw, RTOL_FD, nw)
    t = run.forward(v, fwd_mode)
    if t is not None:
        out.check(f"api-forward[{fwd_mode}] J v vs FD", t, Jv, sv, RTOL_FD, nv)
    if g is not None and t is not None:
        out.check("dot identity: w.(J v) forward vs (J^T w).v reverse", float(w @ t), float(g @ v), sd,
                  RTOL_TIGHT, nd)

    # grad / value_and_grad: the same activities as the reverse call above (no new build)
    if prog.returns and not any(p.kind == "io" for p in prog.params) and g is not None:
        argnums = _active_argnums(prog, case)
        try:
            if rev_mode is Reverse:
                grads = _checked(out, "grad", prog, case, enzyme.grad(kern, argnums=argnums))
                value = None
            else:
                value, grads = _checked(out, "value_and_grad", prog, case, enzyme.value_and_grad(kern, argnums=argnums))
            gg = flat_inputs(prog, case, {prog.params[i].name: gr for i, gr in zip(argnums, grads)})
            out.check("grad vs api-reverse/seed", gg, g / w[0], np.abs(fd.J[0]), RTOL_TIGHT)
            out.check("grad vs FD", gg, fd.J[0], np.abs(fd.J[0]), RTOL_FD, fd.noise[0])
            if value is not None:
                out.check("value_and_grad value vs kernel", value, fd.f0[0], abs(fd.f0[0]), RTOL_TIGHT)
        except enzyme.EnzymeError as exc:
            out.error("grad", exc)

    x_sl = case.in_slices.get("x")
    x_idx = prog.index("x")
    y_name = next((p.name for p in prog.params if p.kind == "io"), None)
    # jvp / vjp w.r.t. x, on the return (or on y for void kernels)
    rows = case.out_slices["ret"] if prog.returns else (case.out_slices[y_name] if y_name else None)
    if prog.returns and y_name is not None:
        # the helpers would pass the written array y as Const: Enzyme then
        # (as documented) drops every derivative that flows through y's memory
        rows = None
    out_arg = None if prog.returns else y_name
    if x_sl is not None and rows is not None and (helpers_free or pid % 4 == 0):
        vx = rng.uniform(-1, 1, x_sl.stop - x_sl.start)
        Jx = fd.J[rows, x_sl]
        try:
            value, tan = _checked(out, "jvp", prog, case, enzyme.jvp(kern, wrt=x_idx, out=out_arg), vx)
            out.check("jvp vs FD", tan, Jx @ vx, np.abs(Jx) @ np.abs(vx), RTOL_FD, fd.noise[rows, x_sl] @ np.abs(vx))
            out.check("jvp value vs kernel", value, fd.f0[rows], np.abs(fd.f0[rows]), RTOL_TIGHT)
        except enzyme.EnzymeError as exc:
            out.error("jvp", exc)
    if x_sl is not None and rows is not None and (helpers_free or pid % 4 == 2):
        Jx = fd.J[rows, x_sl]
        u = rng.uniform(-1, 1, rows.stop - rows.start)
        useed = float(u[0]) if prog.returns else u
        try:
            value, cot = _checked(out, "vjp", prog, case, enzyme.vjp(kern, wrt=x_idx, out=out_arg), useed)
            out.check("vjp vs FD", cot, u @ Jx, np.abs(u) @ np.abs(Jx), RTOL_FD, np.abs(u) @ fd.noise[rows, x_sl])
            out.check("vjp value vs kernel", value, fd.f0[rows], np.abs(fd.f0[rows]), RTOL_TIGHT)
        except enzyme.EnzymeError as exc:
            out.error("vjp", exc)

    # batched forward / reverse (lane 0 repeats the unbatched call)
    if n_in and pid % 6 == 1 and t is not None:
        width = int(rng.integers(2, 4))
        vs = [v] + [rng.uniform(-1, 1, n_in) for _ in range(width - 1)]
        lanes = run.batch_forward(vs)
        if lanes is not None:
            out.check(f"api-batch-forward[{width}] lane 0 vs api-forward", lanes[0], t, sv, RTOL_TIGHT, nv)
            for k in range(1, width):
                s_, n_ = _scales(fd, v=vs[k])
                out.check(f"api-batch-forward[{width}] lane {k} vs FD", lanes[k], fd.J @ vs[k], s_, RTOL_FD, n_)
    if n_in and pid % 6 == 4 and g is not None:
        width = int(rng.integers(2, 4))
        ws = [w] + [rng.uniform(-1, 1, n_out) for _ in range(width - 1)]
        lanes = run.batch_reverse(ws)
        if lanes is not None:
            out.check(f"api-batch-reverse[{width}] lane 0 vs api-reverse", lanes[0], g, sw, RTOL_TIGHT, nw)
            for k in range(1, width):
                s_, n_ = _scales(fd, w=ws[k])
                out.check(f"api-batch-reverse[{width}] lane {k} vs FD", lanes[k], ws[k] @ fd.J, s_, RTOL_FD, n_)

    # jacobian (output arrays) / hvp + hessian (scalar returns), every 5th program
    if pid % 5 == 0 and x_sl is not None and not (prog.returns and y_name is not None):
        _higher_order(run, x_idx, x_sl, y_name, pid, t, v)
    return {"v": v, "w": w, "g": g, "t": t}


def _higher_order(run: _Runner, x_idx: int, x_sl: slice, y_name: str | None, pid: int, t, v) -> None:
    prog, case, fd, out, rng = run.prog, run.case, run.fd, run.out, run.rng
    kern = run.kernel
    if y_name is not None:
        rows = case.out_slices[y_name]
        Jx = fd.J[rows, x_sl]
        mode = (None, Forward, Reverse)[(pid // 5) % 3]
        chunk = int(rng.integers(1, 9))
        try:
            jac = _checked(out, "jacobian", prog, case, enzyme.jacobian(kern, wrt=x_idx, out=y_name, mode=mode,
                                                                            chunk=chunk))
            out.check(f"jacobian[mode={mode}, chunk={chunk}] vs FD", jac, Jx, np.abs(Jx), RTOL_FD,
                      fd.noise[rows, x_sl])
            if t is not None and set(case.in_slices) == {"x"}:
                out.check("jacobian @ v vs api-forward", jac @ v[x_sl], t[rows],
                          np.abs(Jx) @ np.abs(v[x_sl]), RTOL_TIGHT)
        except enzyme.EnzymeError as exc:
            out.error(f"jacobian[mode={mode}]", exc)
    if not prog.returns:
        return
    # Hessian oracle: central differences of the reverse gradient (the derivative
    # built above, called at moved inputs: no new build)
    rev_mode = modes_of(prog, case)[0]
    e0 = np.zeros(case.n_out)
    e0[0] = 1.0

    def grad_x(xv: np.ndarray) -> np.ndarray:
        u = case.u0.copy()
        u[x_sl] = xv
        anns = run.reverse_args(e0, u=u)
        r = enzyme.autodiff(rev_mode, kern, *anns, seed=1.0)
        return run.reverse_result(anns, r.derivs)[x_sl]

    x0 = case.u0[x_sl].copy()
    try:
        gfd = fd_jacobian(grad_x, x0, grad_x(x0))
    except enzyme.EnzymeError as exc:
        out.error("gradient for the Hessian oracle", exc)
        return
    H_fd = gfd.J
    vx = rng.uniform(-1, 1, x0.size)
    try:
        hv = _checked(out, "hvp", prog, case, enzyme.hvp(kern, wrt=x_idx), vx)
        if not gfd.kinks:
            out.check("hvp vs FD of gradient", hv, H_fd @ vx, np.abs(H_fd) @ np.abs(vx), RTOL_FD,
                      gfd.noise @ np.abs(vx))
    except enzyme.EnzymeError as exc:
        out.error("hvp", exc)
        hv = None
    chunk = int(rng.integers(1, 9))
    try:
        H = _checked(out, "hessian", prog, case, enzyme.hessian(kern, wrt=x_idx, chunk=chunk))
        if not gfd.kinks:
            out.check(f"hessian[chunk={chunk}] vs FD of gradient", H, H_fd, np.abs(H_fd), RTOL_FD, gfd.noise)
        out.check("hessian symmetric", H, H.T, np.abs(H) + np.abs(H_fd), RTOL_TIGHT)
        if hv is not None:
            out.check("hvp vs hessian @ v", hv, H @ vx, np.abs(H) @ np.abs(vx), RTOL_TIGHT)
    except enzyme.EnzymeError as exc:
        out.error("hessian", exc)


def _mglobal_checks(run: _Runner) -> None:
    """Mutable-global programs: only the helpers (w.r.t. x) against central
    differences, after a reverse call has accumulated into the global's
    shadow. Every disagreeing helper is run again with the shadow zeroed:
    ``clean_shadow`` says whether it then agrees (a leak of the global's
    shadow) or not (another cause)."""
    prog, case, out, rng = run.prog, run.case, run.out, run.rng
    kern, mod = run.kernel, run.mod
    y_name = next((p.name for p in prog.params if p.kind == "io"), None)
    if prog.returns and y_name is not None:
        return  # the helpers would pass the written array y as Const (see _api_checks)
    try:
        enzyme.autodiff(Reverse, kern, *run.reverse_args(rng.uniform(-1, 1, case.n_out)))
    except enzyme.EnzymeError as exc:
        out.error("api-reverse (to dirty the global's shadow)", exc)
    shadow = mod.shadows[prog.mglobal]
    if float(shadow) == 0.0:
        shadow[...] = 0.5
    dirty = float(shadow)
    vx = rng.uniform(-1, 1, case.in_slices["x"].stop - case.in_slices["x"].start)
    rows = case.out_slices["ret"] if prog.returns else case.out_slices[y_name]
    u = rng.uniform(-1, 1, rows.stop - rows.start)
    _mglobal_helpers(run, out, y_name, vx, u, f"(global shadow {dirty:.3g})")
    if not out.disagreements:
        return
    shadow[...] = 0.0
    clean = Outcome(prog.pid, prog.family)
    _mglobal_helpers(run, clean, y_name, vx, u, "(global shadow 0)")
    still = {d["check"].split(" (global shadow")[0] for d in clean.disagreements}
    for d in out.disagreements:
        d["clean_shadow"] = "also disagrees" if d["check"].split(" (global shadow")[0] in still else "agrees"


def _mglobal_helpers(run: _Runner, out: Outcome, y_name: str | None, vx: np.ndarray, u: np.ndarray,
                     tag: str) -> None:
    prog, case, fd = run.prog, run.case, run.fd
    kern = run.kernel
    x_sl, x_idx = case.in_slices["x"], prog.index("x")
    rows = case.out_slices["ret"] if prog.returns else case.out_slices[y_name]
    out_arg = None if prog.returns else y_name
    Jx, Nx = fd.J[rows, x_sl], fd.noise[rows, x_sl]

    def fa() -> list:
        return fresh_args(prog, case)

    def attempt(what: str, fn: Any) -> None:
        try:
            fn()
        except enzyme.DifferentiationError as exc:
            # second-order and batched derivatives involving a global's
            # shadow are refused on purpose (wrong numbers otherwise)
            if exc.code not in ("global-second-order", "global-batch"):
                out.error(f"{what} {tag}", exc)
        except enzyme.EnzymeError as exc:
            out.error(f"{what} {tag}", exc)

    attempt("mglobal jvp", lambda: out.check(
        f"mglobal jvp vs FD {tag}", enzyme.jvp(kern, wrt=x_idx, out=out_arg)(*fa(), vx)[1], Jx @ vx,
        np.abs(Jx) @ np.abs(vx), RTOL_FD, Nx @ np.abs(vx)))
    useed = float(u[0]) if prog.returns else u
    attempt("mglobal vjp", lambda: out.check(
        f"mglobal vjp vs FD {tag}", enzyme.vjp(kern, wrt=x_idx, out=out_arg)(*fa(), useed)[1], u @ Jx,
        np.abs(u) @ np.abs(Jx), RTOL_FD, np.abs(u) @ Nx))
    if not prog.returns:
        for mode in (Forward, Reverse):  # chunk=64: one call, whatever the sizes
            attempt(f"mglobal jacobian[{mode}]", lambda mode=mode: out.check(
                f"mglobal jacobian[{mode}] vs FD {tag}",
                enzyme.jacobian(kern, wrt=x_idx, out=y_name, mode=mode, chunk=64)(*fa()), Jx, np.abs(Jx),
                RTOL_FD, Nx))
        return
    attempt("mglobal grad", lambda: out.check(
        f"mglobal grad vs FD {tag}", enzyme.grad(kern, argnums=x_idx)(*fa()), Jx[0], np.abs(Jx[0]),
        RTOL_FD, Nx[0]))
    attempt("mglobal value_and_grad", lambda: out.check(
        f"mglobal value_and_grad vs FD {tag}", enzyme.value_and_grad(kern, argnums=x_idx)(*fa())[1], Jx[0],
        np.abs(Jx[0]), RTOL_FD, Nx[0]))

    def grad_x(xv: np.ndarray) -> np.ndarray:
        local = fa()
        local[x_idx] = xv
        return enzyme.grad(kern, argnums=x_idx)(*local)

    x0 = case.values["x"]
    try:
        gfd = fd_jacobian(grad_x, x0, grad_x(x0))
    except enzyme.EnzymeError:
        return
    if gfd.kinks:
        return
    attempt("mglobal hvp", lambda: out.check(
        f"mglobal hvp vs FD of grad {tag}", enzyme.hvp(kern, wrt=x_idx)(*fa(), vx), gfd.J @ vx,
        np.abs(gfd.J) @ np.abs(vx), RTOL_FD, gfd.noise @ np.abs(vx)))
    attempt("mglobal hessian", lambda: out.check(
        f"mglobal hessian vs FD of grad {tag}", enzyme.hessian(kern, wrt=x_idx, chunk=64)(*fa()), gfd.J,
        np.abs(gfd.J), RTOL_FD, gfd.noise))


def check_program(prog: Program, seed: int, toolchain: Any = None, compile_kwargs: dict | None = None,
                  hook: Any = None, api: bool = True) -> Outcome:
    """Compile one program on its own and run its Python-API checks.

    The outcome carries (``c_values``) what the C side needs: the case and the
    API's forward and reverse results. ``hook(module)`` runs right after the
    compile (the reference verdict uses it to swap the derivative builds)."""
    start = time.perf_counter()
    out = Outcome(prog.pid, prog.family)
    rng = np.random.default_rng([seed, prog.pid, 7])
    try:
        mod = enzyme.compile(prog.full_source, toolchain=toolchain, **(compile_kwargs or {}))
    except enzyme.EnzymeError as exc:
        out.error("compile", exc)
        out.seconds = time.perf_counter() - start
        return out
    try:
        if hook is not None:
            hook(mod)
        kern = mod[prog.name]
        dtype = kern.dtype("p") if any(p.kind == "struct" for p in prog.params) else None
        fd = case = None
        for attempt in range(8):
            out.attempts = attempt + 1
            case = make_case(prog, rng, dtype)
            f0 = evaluate(prog, kern, case)
            if not np.all(np.isfinite(f0)) or np.max(np.abs(f0), initial=0.0) > 1e6:
                fd = None
                continue
            fd = fd_jacobian(lambda u, case=case: evaluate(prog, kern, case, u), case.u0, f0)
            if not fd.kinks and np.all(np.isfinite(fd.J)):
                break
            fd = None
        if fd is None or case is None:
            out.skipped = "no smooth input point found (kinks, jumps or huge values)"
            return out
        run = _Runner(prog, mod, case, fd, out, rng)
        if not api:  # only the input point and directions (for the reference chain)
            v, w = draw_directions(rng, prog, case)
            out.c_values = {"case": case, "fd": fd, "v": v, "w": w, "g": None, "t": None}
        elif prog.family == "mglobal":
            _mglobal_checks(run)
        else:
            api = _api_checks(run, prog.pid)
            out.c_values = {"case": case, "fd": fd, **api}
    except Exception as exc:  # noqa: BLE001 - a bug in the harness or the package: report it
        out.error("harness", exc)
        out.disagreements[-1]["traceback"] = traceback.format_exc()[-3000:]
    finally:
        out.seconds = time.perf_counter() - start
        mod.close()
    return out


# ---------------------------------------------------------------------------
# the C side: drivers calling __enzyme_autodiff / __enzyme_fwddiff
# ---------------------------------------------------------------------------

C_PRELUDE = "extern int enzyme_dup, enzyme_dupnoneed, enzyme_const, enzyme_out, enzyme_width;\n"

# C-side driver variants: (suffix, shape, activities). "direct" calls
# __enzyme_* on the kernel itself; "wrapped" on a static helper storing the
# result through a pointer, with active scalars passed by pointer (the shape
# of enzyme-ffi's generated wrappers). "full" differentiates every
# differentiable parameter; "x" only x (and output arrays), as the helpers do.
# enzyme.compile's C module has the first; the reference chain all four.
VARIANTS = (("", "direct", "full"), ("_dx", "direct", "x"), ("_wf", "wrapped", "full"), ("_wx", "wrapped", "x"))


def active_names(prog: Program, acts: str) -> set[str]:
    names = {p.name for p in prog.params if p.active and p.kind != "int"}
    if acts == "x":
        names &= {"x"} | {p.name for p in prog.params if p.kind == "io"}
    return names


def _base_decl(p: Param, prefix: str, const: bool | None = None) -> str:
    """The declaration of a shadow of ``p`` named ``prefix + name``."""
    if p.kind == "struct":
        ty = p.cdecl.split("*")[0].replace("const ", "").strip()
        return f"{'const ' if const else ''}{ty} *{prefix}{p.name}"
    if p.kind == "scal":
        return f"double {prefix}{p.name}"
    return f"{'const ' if const else ''}double *{prefix}{p.name}"


def c_drivers(prog: Program, width2: bool, variant: tuple[str, str, str] = VARIANTS[0]) -> str:
    """``kN_crev``, ``kN_cfwd`` (and ``kN_cfwd2``, width 2) for one kernel, with
    the variant's suffix. Every ``crev`` takes ``double seed`` (the return's
    seed: only the wrapped shape uses it, the direct one seeds 1) and ends with
    ``double *adj`` (active scalars' adjoints); every ``cfwd`` ends with ``double *tret``."""
    suffix, shape, acts = variant
    name = prog.name
    active = active_names(prog, acts)
    scal_act = [p for p in prog.params if p.kind == "scal" and p.name in active]
    lines: list[str] = []
    wrapped = shape == "wrapped"
    helper = f"{name}_wh{suffix}"
    if wrapped:  # the helper, as enzyme-ffi's codegen writes it
        hparams, hcall = [], []
        for p in prog.params:
            if p.kind == "scal" and p.name in active:
                hparams.append(f"const double *{p.name}")
                hcall.append(f"*{p.name}")
            else:
                hparams.append(p.cdecl)
                hcall.append(p.name)
        call = f"{name}({', '.join(hcall)})"
        if prog.returns:
            lines.append(f"static void {helper}({', '.join(hparams)}, double *ret) {{ *ret = {call}; }}")
        else:
            lines.append(f"static void {helper}({', '.join(hparams)}) {{ {call}; }}")

    def scalars_by_pointer(shadows: list[str], p: Param) -> tuple[list[str], list[str]]:
        loc = [f"double v_{p.name} = {p.name};"] + [f"double s{k}_{p.name} = {sh};" for k, sh in enumerate(shadows)]
        return loc, ["enzyme_dup", f"&v_{p.name}"] + [f"&s{k}_{p.name}" for k in range(len(shadows))]

    # reverse
    params, call, locs = [], [f"(void *){helper if wrapped else name}"], []
    for p in prog.params:
        params.append(p.cdecl)
        if p.name not in active:
            call += ["enzyme_const", p.name]
        elif p.kind == "scal":
            if wrapped:
                loc, args = scalars_by_pointer(["0.0"], p)
                locs += loc
                call += args
            else:
                call += ["enzyme_out", p.name]
        else:
            params.append(_base_decl(p, "d_", const=False))
            call += ["enzyme_dup", p.name, f"d_{p.name}"]
    params += ["double seed", "double *adj"]
    n_act = len(scal_act)
    if wrapped:
        rtype = "void"
        if prog.returns:
            locs.append("double r = 0.0, dr = seed;")
            call += ["enzyme_dupnoneed", "&r", "&dr"]
        store = " ".join(f"adj[{k}] = s0_{p.name};" for k, p in enumerate(scal_act))
    elif n_act == 0:
        rtype, store = "void", ""
    elif n_act == 1:
        rtype, store = "double", "adj[0] = r;"
    else:
        fields = " ".join(f"double d{k};" for k in range(n_act))
        lines.append(f"struct {name}_adj{suffix} {{ {fields} }};")
        rtype = f"struct {name}_adj{suffix}"
        store = " ".join(f"adj[{k}] = r.d{k};" for k in range(n_act))
    fn = f"__enzyme_autodiff_{name}{suffix}"
    lines.append(f"{rtype} {fn}(void *, ...);")
    assign = "" if rtype == "void" else f"{rtype} r = "
    body = [*locs, f"{assign}{fn}({', '.join(call)});", store]
    lines.append(f"void {name}_crev{suffix}({', '.join(params)}) {{\n    (void)seed;\n"
                 + "".join(f"    {b}\n" for b in body if b) + "}")
    # forward (width 1 and 2)
    for width in (1, 2) if width2 else (1,):
        wsuf = "" if width == 1 else "2"
        params, locs = [], []
        call = [f"(void *){helper if wrapped else name}"] + (["enzyme_width", str(width)] if width > 1 else [])
        for p in prog.params:
            params.append(p.cdecl)
            if p.name not in active:
                call += ["enzyme_const", p.name]
                continue
            shadows = [f"t{k}_" for k in range(width)]
            params += [_base_decl(p, sh, const=p.kind != "io") for sh in shadows]
            if wrapped and p.kind == "scal":
                loc, args = scalars_by_pointer([f"{sh}{p.name}" for sh in shadows], p)
                locs += loc
                call += args
            else:
                call += ["enzyme_dup", p.name] + [f"{sh}{p.name}" for sh in shadows]
        params.append("double *tret")
        if wrapped:
            rtype = "void"
            if prog.returns:
                locs.append("double r = 0.0, " + ", ".join(f"dr{k} = 0.0" for k in range(width)) + ";")
                call += ["enzyme_dupnoneed", "&r"] + [f"&dr{k}" for k in range(width)]
                store = " ".join(f"tret[{k}] = dr{k};" for k in range(width))
            else:
                store = ""
        elif not prog.returns:
            rtype, store = "void", ""
        elif width == 1:
            rtype, store = "double", "tret[0] = r;"
        else:
            lines.append(f"struct {name}_tan{width}{suffix} {{ double t[{width}]; }};")
            rtype = f"struct {name}_tan{width}{suffix}"
            store = " ".join(f"tret[{k}] = r.t[{k}];" for k in range(width))
        fn = f"__enzyme_fwddiff_{name}{wsuf}{suffix}"
        lines.append(f"{rtype} {fn}(void *, ...);")
        assign = "" if rtype == "void" else f"{rtype} r = "
        body = [*locs, f"{assign}{fn}({', '.join(call)});", store]
        lines.append(f"void {name}_cfwd{wsuf}{suffix}({', '.join(params)}) {{\n"
                     + "".join(f"    {b}\n" for b in body if b) + "}")
    return "\n".join(lines) + "\n"


def c_module_source(progs: Sequence[Program]) -> str:
    parts = [HEADER, C_PRELUDE]
    for prog in progs:
        parts.append(prog.source)
        parts.append(c_drivers(prog, width2=prog.pid % 2 == 0))
    return "\n".join(parts)


@dataclasses.dataclass
class _Buf:
    name: str
    kind: str  # "double" (array), "struct", "scalar" (a literal), "int"
    init: Any  # np.ndarray / structured array / float / int
    output: bool = False


def c_calls(prog: Program, cv: dict, variant: tuple[str, str, str] = VARIANTS[0]) -> list[tuple[str, list[_Buf]]]:
    """The C-side calls of one program for one driver variant: (driver,
    arguments in order). Output buffers are read back in order into one flat
    vector per call: the reverse call's shadows in parameter order then
    ``adj``; a forward call's output-array tangents (parameter-major,
    lane-minor) then ``tret``."""
    suffix, shape, acts = variant
    case: Case = cv["case"]
    v, w = cv["v"], cv["w"]
    active = active_names(prog, acts)
    vals = case_values(prog, case)
    calls = []
    # reverse: the direct shape seeds the return with 1 (Enzyme's implicit
    # seed), so its output seeds are w_y / w_r and its result is scaled back
    scale = float(w[0]) if prog.returns and shape == "direct" else 1.0
    args: list[_Buf] = []
    for p in prog.params:
        val = vals[p.name]
        if p.kind == "int":
            args.append(_Buf(p.name, "int", val))
            continue
        kind = "scalar" if p.kind == "scal" else ("struct" if p.kind == "struct" else "double")
        args.append(_Buf(p.name, kind, val))
        if p.name not in active or p.kind == "scal":
            continue
        shadow = w[case.out_slices[p.name]] / scale if p.kind == "io" else np.zeros_like(val)
        args.append(_Buf("d_" + p.name, kind, shadow, output=True))
    args.append(_Buf("seed", "scalar", float(w[0]) if prog.returns else 1.0))
    n_act = sum(1 for p in prog.params if p.kind == "scal" and p.name in active)
    args.append(_Buf("adj", "double", np.zeros(max(1, n_act)), output=True))
    calls.append((f"{prog.name}_crev{suffix}", args))
    # forward, width 1 and (even pids, full direct drivers) 2
    v2 = cv.setdefault("v2", np.random.default_rng([prog.pid, 11]).uniform(-1, 1, case.n_in))
    for width, dirs in ((1, [v]), (2, [v, v2])):
        if width == 2 and (prog.pid % 2 or suffix):
            continue
        pieces = [split_inputs(prog, case, d) for d in dirs]
        args = []
        for p in prog.params:
            val = vals[p.name]
            if p.kind == "int":
                args.append(_Buf(p.name, "int", val))
                continue
            kind = "scalar" if p.kind == "scal" else ("struct" if p.kind == "struct" else "double")
            args.append(_Buf(p.name, kind, val))
            if p.name not in active:
                continue
            for k in range(width):
                args.append(_Buf(f"t{k}_{p.name}", kind, pieces[k][p.name], output=p.kind == "io"))
        args.append(_Buf("tret", "double", np.zeros(width), output=True))
        calls.append((f"{prog.name}_cfwd{'' if width == 1 else '2'}{suffix}", args))
    return calls


def _flat_outputs(args: Sequence[_Buf], values: Sequence[Any]) -> np.ndarray:
    parts = []
    for buf, val in zip(args, values):
        if buf.output:
            parts.append(_struct_flat(val) if buf.kind == "struct" else np.asarray(val, dtype=float).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def run_c_calls_python(mod: Any, prog: Program, calls, out: Outcome | None = None,
                       case: Case | None = None) -> list[np.ndarray]:
    results = []
    for driver, args in calls:
        values = [b.init.copy() if isinstance(b.init, np.ndarray) else b.init for b in args]
        mod[driver](*values)
        results.append(_flat_outputs(args, values))
        if out is not None and case is not None:
            primal = {b.name: val for b, val in zip(args, values)}
            kind = "reverse" if "_crev" in driver else "forward"
            untouched(out, f"c-side {kind} call", prog, case,
                      [primal.get(p.name) for p in prog.params])
    return results


def _mask(prog: Program, case: Case, active: set[str]) -> np.ndarray:
    m = np.zeros(case.n_in, dtype=bool)
    for name, sl in case.in_slices.items():
        m[sl] = name in active
    return m


def check_c_side(prog: Program, cv: dict, results: Sequence[np.ndarray], out: Outcome, way: str,
                 variant: tuple[str, str, str] = VARIANTS[0]) -> None:
    """Compare one driver variant's results (from enzyme.compile or the
    reference chain) with FD and, for the full variant, with the API's results."""
    suffix, shape, acts = variant
    case: Case = cv["case"]
    fd: FD = cv["fd"]
    active = active_names(prog, acts)
    mask = _mask(prog, case, active)
    v, w, g, t = cv["v"] * mask, cv["w"], cv["g"], cv["t"]
    full = acts == "full"
    scale = float(w[0]) if prog.returns and shape == "direct" else 1.0
    rev = results[0]
    parts: dict[str, Any] = {}
    pos = 0
    for p in prog.params:
        if p.name in active and p.kind in ("arr", "io", "struct"):
            size = sum(c for _, c in STRUCT_FIELDS) if p.kind == "struct" else p.length
            seg = rev[pos:pos + size]
            pos += size
            parts[p.name] = _struct_from(case.values[p.name], seg) if p.kind == "struct" else seg
    k = 0
    for p in prog.params:
        if p.kind == "scal" and p.name in active:
            parts[p.name] = rev[pos + k]
            k += 1
    for p in prog.params:  # inactive inputs: no adjoint (compared as zeros against the masked oracle)
        if p.name in case.in_slices and p.name not in parts:
            val = case.values[p.name]
            parts[p.name] = (0.0 if p.kind == "scal" else _struct_from(val, np.zeros(sum(c for _, c in STRUCT_FIELDS)))
                             if p.kind == "struct" else np.zeros_like(val))
    gc = flat_inputs(prog, case, parts) * scale
    sw, nw = _scales(fd, w=w)
    out.check(f"{way} reverse J^T w vs FD", gc, (w @ fd.J) * mask, sw, RTOL_FD, nw)
    if g is not None and full:
        out.check(f"{way} reverse vs api-reverse", gc, g, sw, RTOL_TIGHT, nw)
    for idx, width in ((1, 1), (2, 2)):
        if idx >= len(results):
            break
        res = results[idx]
        dirs = [v, cv["v2"] * mask][:width]
        lanes = [np.zeros(case.n_out) for _ in range(width)]
        pos = 0
        for p in prog.params:
            if p.kind == "io" and p.name in active:
                for lane in range(width):
                    lanes[lane][case.out_slices[p.name]] = res[pos:pos + p.length]
                    pos += p.length
        if prog.returns:
            for lane in range(width):
                lanes[lane][0] = res[pos + lane]
        for lane in range(width):
            s_, n_ = _scales(fd, v=dirs[lane])
            label = f"{way} forward" + (f"[width=2] lane {lane}" if width == 2 else "")
            out.check(f"{label} J v vs FD", lanes[lane], fd.J @ dirs[lane], s_, RTOL_FD, n_)
            if lane == 0 and t is not None and full:
                out.check(f"{label} vs api-forward", lanes[lane], t, s_, RTOL_TIGHT, n_)
        if width == 1:
            sd, nd = _scales(fd, v=v, w=w)
            out.check(f"{way} dot identity: w.(J v) forward vs (J^T w).v reverse", float(w @ lanes[0]),
                      float(gc @ v), sd, RTOL_TIGHT, nd)


# ---------------------------------------------------------------------------
# the reference chain
# ---------------------------------------------------------------------------


def _c_literal(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else "0.0"


def reference_main(prog: Program, calls) -> str:
    lines = ["int printf(const char *, ...);", "int memcmp(const void *, const void *, unsigned long);",
             "void *memcpy(void *, const void *, unsigned long);", "int main(void) {"]
    for c, (driver, args) in enumerate(calls):
        names = []
        for b in args:
            var = f"c{c}_{b.name}"
            if b.kind == "int":
                names.append(str(int(b.init)))
            elif b.kind == "scalar":
                names.append(_c_literal(b.init))
            elif b.kind == "struct":
                st = b.init[0]
                w_ = ", ".join(_c_literal(x) for x in st["w"])
                lines.append(f"    struct {prog.name}_s {var} = {{ {_c_literal(st['a'])}, {{ {w_} }}, "
                             f"{_c_literal(st['b'])}, {int(st['m'])} }};")
                names.append(f"&{var}")
            else:
                data = ", ".join(_c_literal(x) for x in np.ravel(b.init))
                lines.append(f"    double {var}[{max(1, np.size(b.init))}] = {{ {data} }};")
                names.append(var)
        readonly = [b for b in args if not b.output and b.kind in ("double", "struct")
                    and any(p.name == b.name and p.kind in ("arr", "struct") for p in prog.params)]
        for b in readonly:
            var = f"c{c}_{b.name}"
            if b.kind == "struct":
                lines.append(f"    struct {prog.name}_s {var}_0 = {var};")
            else:
                lines.append(f"    double {var}_0[{max(1, np.size(b.init))}]; memcpy({var}_0, {var}, sizeof {var});")
        lines.append(f"    {driver}({', '.join(names)});")
        for b in readonly:
            var = f"c{c}_{b.name}"
            lines.append(f"    if (memcmp(&{var}, &{var}_0, sizeof {var})) printf(\"MODIFIED {b.name}\\n\");")
        for b in args:
            if not b.output:
                continue
            var = f"c{c}_{b.name}"
            if b.kind == "struct":
                lines.append(f"    printf(\"%.17g %.17g %.17g %.17g %.17g %.17g\\n\", {var}.a, {var}.w[0], "
                             f"{var}.w[1], {var}.w[2], {var}.w[3], {var}.b);")
            else:
                lines.append(f"    for (int q = 0; q < {np.size(b.init)}; q++) printf(\"%.17g\\n\", {var}[q]);")
        lines.append("    printf(\"--\\n\");")
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def reference_chain(prog: Program, cv: dict, tc: Any, work: Path,
                    variants: Sequence[tuple[str, str, str]] = VARIANTS) -> dict[tuple, Any]:
    """The C drivers (every variant) built by the plain reference chain (as
    tests/conformance/harness.py's run_plain) and run as an executable.
    When the executable dies, each variant is run alone: a variant whose own
    executable dies maps to the string "crashed (...)"."""
    try:
        return _reference_chain(prog, cv, tc, work, variants)
    except _Died:
        if len(variants) == 1:
            raise
    results: dict[tuple, Any] = {}
    for k, variant in enumerate(variants):
        sub = work / f"v{k}"
        sub.mkdir(exist_ok=True)
        try:
            results.update(_reference_chain(prog, cv, tc, sub, [variant]))
        except _Died as exc:
            results[variant] = f"crashed ({exc})"
            results[("modified", *variant)] = {}
    return results


class _Died(RuntimeError):
    pass


def _reference_chain(prog: Program, cv: dict, tc: Any, work: Path,
                     variants: Sequence[tuple[str, str, str]]) -> dict[tuple, Any]:
    per_variant = [(variant, c_calls(prog, cv, variant)) for variant in variants]
    calls = [c for _, cs in per_variant for c in cs]
    drivers = "".join(c_drivers(prog, width2=prog.pid % 2 == 0 and not variant[0], variant=variant)
                      for variant in variants)
    src = work / "k.c"
    src.write_text(HEADER + C_PRELUDE + prog.source + drivers + reference_main(prog, calls))
    steps = [
        [tc.clang, "-O2", "-Xclang", "-disable-llvm-passes", "-fno-math-errno", "-fPIC", "-emit-llvm", "-c",
         str(src), "-o", str(work / "k.bc"), "-I", enzyme.get_include()],
        [tc.opt, str(work / "k.bc"), f"--load-pass-plugin={tc.plugin}",
         "-passes=preserve-nvvm,default<O2>,enzyme,default<O3>", "-o", str(work / "k.ad.bc")],
        [tc.clang, "-O3", str(work / "k.ad.bc"), "-o", str(work / "k"), "-lm"],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"reference chain: {Path(cmd[0]).name} failed:\n{done.stderr[-3000:]}")
    done = subprocess.run([str(work / "k")], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise _Died(f"exit {done.returncode}")
    chunks, modified = [], []
    for chunk in done.stdout.split("--"):
        lines = chunk.split("\n")
        modified.append([ln.split()[1] for ln in lines if ln.startswith("MODIFIED")])
        chunks.append(np.array([float(x) for ln in lines if not ln.startswith("MODIFIED") for x in ln.split()]))
    results, pos = {}, 0
    for variant, cs in per_variant:
        results[variant] = chunks[pos:pos + len(cs)]
        results[("modified", *variant)] = {driver: modified[pos + i] for i, (driver, _) in enumerate(cs)}
        pos += len(cs)
    return results


def _reference_so(tc: Any, prog: Program, wrapper_c: str, work: Path) -> str:
    """A derivative library built by the plain reference chain from the
    program and enzyme-ffi's generated wrapper (two front-end bitcodes, linked)."""
    (work / "k.c").write_text(prog.full_source)
    (work / "w.c").write_text(wrapper_c)
    front = [tc.clang, "-O2", "-Xclang", "-disable-llvm-passes", "-fno-math-errno", "-fPIC", "-emit-llvm", "-c",
             "-I", enzyme.get_include()]
    steps = [front + [str(work / "k.c"), "-o", str(work / "k.bc")],
             front + [str(work / "w.c"), "-o", str(work / "w.bc")],
             [tc.llvm_link, str(work / "k.bc"), str(work / "w.bc"), "-o", str(work / "l.bc")],
             [tc.opt, str(work / "l.bc"), f"--load-pass-plugin={tc.plugin}",
              "-passes=preserve-nvvm,default<O2>,enzyme,default<O3>", "-o", str(work / "ad.bc")],
             [tc.clang, "-O3", "-fPIC", "-shared", str(work / "ad.bc"), "-o", str(work / "lib.so"), "-lm"]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"reference chain: {Path(cmd[0]).name} failed:\n{done.stderr[-3000:]}")
    return str(work / "lib.so")


def _reference_hook(prog: Program, tc: Any, work: Path) -> Any:
    """Make a module's kernel build every derivative (its generated wrapper,
    unchanged) with the plain reference chain instead of enzyme-ffi's."""
    from enzyme.activity import resolve_activities, resolve_hvp
    from enzyme.call import DerivativeFunction, HvpFunction
    from enzyme.codegen import generate_derivative, generate_hvp

    def hook(mod: Any) -> None:
        kern = mod[prog.name]
        cache: dict = {}

        def build(key: tuple, spec: Any, generate: Any, wrap: Any) -> Any:
            if key not in cache:
                wrapper = generate(spec, False)
                sub = work / f"d{len(cache)}"
                sub.mkdir()
                cache[key] = wrap(spec, wrapper, _reference_so(tc, prog, wrapper.c_source, sub), mod._owner)
            return cache[key]

        def derivative_function(mode: Any, kinds: tuple, ret: Any = None, width: int = 1) -> Any:
            return build((mode, kinds, ret, width), resolve_activities(kern.signature, mode, kinds, ret, width),
                         generate_derivative, DerivativeFunction)

        def hvp_function(wrt: int, width: int = 1) -> Any:
            return build(("hvp", wrt, width), resolve_hvp(kern.signature, wrt, width), generate_hvp, HvpFunction)

        kern.derivative_function = derivative_function
        kern.hvp_function = hvp_function

    return hook


def reference_verdict(prog: Program, seed: int, cv: dict | None, tc: Any, api_wrappers: bool = False) -> dict:
    """Does the plain reference chain show the disagreement too?

    ``c_drivers``: the failing checks of the program's C drivers built by
    the reference chain as an executable, per variant (direct calls of the
    kernel or calls through an enzyme-ffi-shaped wrapper; every differentiable
    parameter or only x). With ``api_wrappers``, also every Python-API check
    re-run with its derivative libraries built by the reference chain from
    enzyme-ffi's own generated wrappers (same Python logic, other pipeline)."""
    verdict: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="randprog-ref-") as tmp:
        if cv:
            try:
                results = reference_chain(prog, cv, tc, Path(tmp))
                failing: dict[str, list[str]] = {}
                for variant, res in results.items():
                    if variant[0] == "modified":
                        continue
                    out = Outcome(prog.pid, prog.family)
                    label = f"reference[{variant[1]},{variant[2]}]"
                    if isinstance(res, str):
                        failing[label] = [f"{label} {res}"]
                        continue
                    check_c_side(prog, cv, res, out, label, variant)
                    for driver, names in results[("modified", *variant)].items():
                        if names:
                            kind = "reverse" if "_crev" in driver else "forward"
                            out.disagreements.append({"check": f"{label} {kind} call leaves read-only inputs "
                                                      f"unchanged", "problem": f"modified {names}"})
                    failing[label] = [d["check"] for d in out.disagreements]
                verdict["c_drivers"] = failing
            except Exception as exc:  # noqa: BLE001
                verdict["c_drivers"] = f"failed: {str(exc)[-1500:]}"
        if api_wrappers and prog.family != "mglobal":
            work = Path(tmp) / "api"
            work.mkdir()
            try:
                ref = check_program(prog, seed, tc, hook=_reference_hook(prog, tc, work))
                verdict["api_wrappers"] = [d["check"] for d in ref.disagreements]
            except Exception as exc:  # noqa: BLE001
                verdict["api_wrappers"] = f"failed: {str(exc)[-1500:]}"
    return verdict


def direction(check: str) -> str:
    """What a check exercises: "reverse", "forward", "both" (dot identities,
    Hessians, jacobians of unknown mode) or "primal"."""
    c = check.lower()
    if " value vs" in c or "-primal vs" in c:
        return "primal"
    if "dot identity" in c or "hvp" in c or "hessian" in c or "mode=none" in c:
        return "both"
    if "reverse" in c or c.startswith(("grad", "vjp", "value_and_grad")) or "gradient" in c:
        return "reverse"
    if "forward" in c or c.startswith("jvp"):
        return "forward"
    return "both"


def classify(disagreements: list[dict], verdict: dict) -> dict[str, str]:
    """For each disagreeing check: ``enzyme`` when the reference chain's C
    drivers show a disagreement of the same direction (a C-side check: the
    same check in the direct, full variant), else ``enzyme-ffi``."""
    ref = verdict.get("c_drivers")
    ref = ref if isinstance(ref, dict) else {}
    ref_dirs = {direction(c) for checks in ref.values() for c in checks}
    direct_full = {c.split("] ", 1)[-1] for c in ref.get("reference[direct,full]", [])}
    out = {}
    for d in disagreements:
        check = d["check"]
        if check.startswith("c-side"):
            out[check] = "enzyme" if check.split("c-side ", 1)[-1] in direct_full else "enzyme-ffi"
            continue
        want = direction(check)
        caught = re.match(r"DerivativeMismatchError: the derivative (Reverse|Forward)", d.get("error", ""))
        if caught:
            # the first-use check refused a derivative: right if the reference
            # chain gets that mode wrong too (else a false alarm, or ours)
            mode = caught.group(1).lower()
            out[check] = "enzyme" if mode in ref_dirs or "both" in ref_dirs else "enzyme-ffi"
        elif d.get("problem", "").startswith("crashed"):
            out[check] = "enzyme" if any("crashed" in c for checks in ref.values() for c in checks) else "enzyme-ffi"
        elif d.get("problem", "").startswith("raised"):
            out[check] = "enzyme" if isinstance(verdict.get("c_drivers"), str) else "enzyme-ffi"
        elif want == "primal":
            out[check] = "enzyme-ffi"
        elif want == "both":
            out[check] = "enzyme" if ref_dirs - {"primal"} else "enzyme-ffi"
        else:
            out[check] = "enzyme" if want in ref_dirs or "both" in ref_dirs else "enzyme-ffi"
    return out


# ---------------------------------------------------------------------------
# running many programs
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    programs: int = 0
    checks: int = 0
    skipped: int = 0
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    sources: dict[int, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def add(self, out: Outcome, source: str) -> None:
        self.outcomes.append(out)
        self.sources[out.pid] = source
        self.programs += 1
        self.checks += out.checks
        self.skipped += bool(out.skipped)

    @property
    def disagreeing(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.disagreements]

    def by_family(self) -> dict[str, dict[str, int]]:
        fam: dict[str, dict[str, int]] = {}
        for o in self.outcomes:
            d = fam.setdefault(o.family, {"programs": 0, "checks": 0, "disagreeing": 0, "skipped": 0})
            d["programs"] += 1
            d["checks"] += o.checks
            d["disagreeing"] += bool(o.disagreements)
            d["skipped"] += bool(o.skipped)
        return fam

    def to_json(self) -> dict:
        return {
            "programs": self.programs, "checks": self.checks, "skipped": self.skipped,
            "disagreeing_programs": len(self.disagreeing), "seconds": round(self.seconds, 1),
            "families": self.by_family(),
            "disagreements": [{"pid": o.pid, "family": o.family, "source": self.sources.get(o.pid, ""),
                               "disagreements": o.disagreements} for o in self.disagreeing],
            "skipped_pids": [o.pid for o in self.outcomes if o.skipped],
        }


def _outcome_json(o: Outcome) -> dict:
    return {"pid": o.pid, "family": o.family, "checks": o.checks, "disagreements": o.disagreements,
            "skipped": o.skipped, "attempts": o.attempts, "seconds": round(o.seconds, 3)}


def _outcome_from(d: dict) -> Outcome:
    return Outcome(d["pid"], d["family"], d["checks"], d["disagreements"], d["skipped"], d["attempts"],
                   d["seconds"])


def _c_batch(progs: Sequence[Program], toolchain: Any, compile_kwargs: dict | None) -> Any:
    """One enzyme.compile for the C side of many programs; on failure, one
    per program (so the failing one is named). Returns {pid: module or exc}."""
    try:
        mod = enzyme.compile(c_module_source(progs), toolchain=toolchain, **(compile_kwargs or {}))
        return {p.pid: mod for p in progs}
    except enzyme.EnzymeError:
        pass
    found: dict[int, Any] = {}
    for p in progs:
        try:
            found[p.pid] = enzyme.compile(c_module_source([p]), toolchain=toolchain, **(compile_kwargs or {}))
        except enzyme.EnzymeError as exc:
            found[p.pid] = exc
    return found


def run_programs(pids: Sequence[int], seed: int, toolchain: Any = None, workers: int = 2,
                 families: Sequence[str] = tuple(FAMILIES), c_batch: int = C_BATCH,
                 reference: bool = False, progress: Any = None, log: Any = None,
                 compile_kwargs: dict | None = None) -> Report:
    """Generate and check programs ``pids`` of run ``seed``, in this process
    (a crash in native code ends it: see :func:`run_isolated`).

    ``progress(outcome)`` is called as each program finishes; ``log(event,
    pid)`` when a program's API checks start and before its C-side calls."""
    start = time.perf_counter()
    if toolchain is None:
        from enzyme import toolchain as _toolchain

        toolchain = _toolchain.resolve()
    log = log or (lambda event, pid: None)
    report = Report()
    progs = [generate(pid, seed, families) for pid in pids]
    groups = [progs[i:i + c_batch] for i in range(0, len(progs), c_batch)]

    def api(p: Program) -> Outcome:
        log("start", p.pid)
        out = check_program(p, seed, toolchain, compile_kwargs)
        log("apidone", p.pid)
        return out

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # each group's C module is queued before its programs, so it is ready when they are
        c_futures, p_futures = [], {}
        for group in groups:
            c_progs = [p for p in group if p.family != "mglobal"]
            c_futures.append(pool.submit(_c_batch, c_progs, toolchain, compile_kwargs) if c_progs else None)
            for p in group:
                p_futures[p.pid] = pool.submit(api, p)
        for group, c_future in zip(groups, c_futures):
            mods = c_future.result() if c_future is not None else {}
            for p in group:
                out = p_futures.pop(p.pid).result()
                if p.family != "mglobal" and not out.skipped and out.c_values:
                    mod = mods.get(p.pid)
                    if isinstance(mod, BaseException):
                        out.error("c-side compile", mod)
                    elif mod is not None:
                        log("cside", p.pid)
                        try:
                            results = run_c_calls_python(mod, p, c_calls(p, out.c_values), out, out.c_values["case"])
                            check_c_side(p, out.c_values, results, out, "c-side")
                        except enzyme.EnzymeError as exc:
                            out.error("c-side call", exc)
                if out.disagreements and reference and p.family != "mglobal":
                    log("reference", p.pid)
                    verdict = reference_verdict(p, seed, out.c_values, toolchain)
                    verdict["classification"] = classify(out.disagreements, verdict)
                    if any(v == "enzyme-ffi" for v in verdict["classification"].values()):
                        # narrow it down: enzyme-ffi's long-block pass off
                        again = check_program(p, seed, toolchain, {**(compile_kwargs or {}),
                                                                   "split_long_blocks": False})
                        verdict["without_split_long_blocks"] = [d["check"] for d in again.disagreements]
                    out.disagreements.append({"check": "reference chain verdict", **verdict})
                out.c_values = {}  # keep the report small
                report.add(out, p.full_source)
                if progress is not None:
                    progress(out)
            for mod in {id(m): m for m in mods.values() if not isinstance(m, BaseException)}.values():
                mod.close()
    report.seconds = time.perf_counter() - start
    return report


def _run_worker(pids: Sequence[int], seed: int, workers: int, families: Sequence[str], reference: bool,
                env: dict | None, reference_only: bool = False) -> tuple[list[dict], set[int], int, str]:
    """Run programs in a child process. Returns (outcomes, pids that may have
    crashed it, exit code, stderr tail); with ``reference_only``, the
    outcomes are reference verdicts."""
    with tempfile.TemporaryDirectory(prefix="randprog-worker-") as tmp:
        events = Path(tmp) / "events.jsonl"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--pids", ",".join(map(str, pids)),
               "--seed", str(seed), "--workers", str(workers), "--families", ",".join(families),
               "--events", str(events)] + ([] if reference else ["--no-reference"])
        cmd += ["--reference-only"] if reference_only else []
        done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, errors="replace")
        outcomes, events_of = [], {}
        if events.exists():
            for line in events.read_text().splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if "outcome" in item:
                    outcomes.append(item["outcome"])
                elif "verdict" in item:
                    outcomes.append(item["verdict"])
                elif "event" in item:
                    events_of.setdefault(item["pid"], set()).add(item["event"])
        # programs that may have crashed the process: their API checks were
        # running, or their C-side calls / reference chain were
        busy = {pid for pid, ev in events_of.items()
                if ("start" in ev and "apidone" not in ev) or ev & {"cside", "reference"}}
        return outcomes, busy, done.returncode, done.stderr[-6000:]


def run_isolated(pids: Sequence[int], seed: int, *, workers: int = 2, families: Sequence[str] = tuple(FAMILIES),
                 reference: bool = True, chunk: int = 250, env: dict | None = None, progress: Any = None) -> Report:
    """Run programs in child processes of ``chunk`` programs: a program whose
    derivative crashes the process is found (re-run alone) and reported as a
    disagreement ("crashed"), and the rest go on."""
    start = time.perf_counter()
    report = Report()
    pending = list(pids)
    while pending:
        batch, pending = pending[:chunk], pending[chunk:]
        outcomes, busy, code, stderr = _run_worker(batch, seed, workers, families, reference, env)
        done = set()
        for d in outcomes:
            out = _outcome_from(d)
            done.add(out.pid)
            report.add(out, generate(out.pid, seed, families).full_source)
            if progress is not None:
                progress(out)
        if code == 0 and done == set(batch):
            continue
        suspects = [p for p in batch if p in busy and p not in done]
        if not suspects:
            suspects = [p for p in batch if p not in done][:1]
        for pid in suspects:
            outs, _, code1, stderr1 = _run_worker([pid], seed, 1, families, reference, env)
            if code1 == 0 and outs:
                out = _outcome_from(outs[0])
            else:
                prog = generate(pid, seed, families)
                out = Outcome(pid, prog.family, checks=1)
                out.disagreements.append({"check": "process", "problem": f"crashed (exit {code1})",
                                          "stderr": stderr1[-3000:]})
                if reference and prog.family != "mglobal":
                    verdicts, _, _, err = _run_worker([pid], seed, 1, families, reference, env, reference_only=True)
                    verdict = dict(verdicts[0]) if verdicts else {"c_drivers": f"failed: {err[-1500:]}"}
                    verdict.pop("pid", None)
                    verdict["classification"] = classify(out.disagreements, verdict)
                    out.disagreements.append({"check": "reference chain verdict", **verdict})
            report.add(out, generate(pid, seed, families).full_source)
            if progress is not None:
                progress(out)
        pending = [p for p in batch if p not in done and p not in suspects] + pending
    report.seconds = time.perf_counter() - start
    return report


def format_disagreement(pid: int, family: str, disagreements: list[dict], source: str) -> str:
    lines = [f"--- program {pid} ({family}): {len(disagreements)} item(s)", source.rstrip()]
    for d in disagreements:
        lines.append("  * " + json.dumps(d, default=str)[:2000])
    return "\n".join(lines)


def summary(report: Report) -> str:
    lines = [f"programs {report.programs}, checks {report.checks}, skipped {report.skipped}, "
             f"programs with disagreements {len(report.disagreeing)}, {report.seconds:.0f} s"]
    for fam, d in sorted(report.by_family().items()):
        lines.append(f"  {fam}: {d}")
    for o in report.disagreeing:
        lines.append(format_disagreement(o.pid, o.family, o.disagreements, report.sources.get(o.pid, "")))
    return "\n".join(lines)


def _worker(args: argparse.Namespace) -> None:
    """The child process of run_isolated: events and outcomes, one JSON line each."""
    import faulthandler
    import threading

    faulthandler.enable()
    lock = threading.Lock()
    events = open(args.events, "a")  # noqa: SIM115 - closed at exit

    def emit(item: dict) -> None:
        with lock:
            events.write(json.dumps(item, default=str) + "\n")
            events.flush()

    pids = [int(p) for p in args.pids.split(",") if p]
    if args.reference_only:  # the reference verdict of programs whose API checks crash
        from enzyme import toolchain as _toolchain

        tc = _toolchain.resolve()
        for pid in pids:
            prog = generate(pid, args.seed, args.families.split(","))
            out = check_program(prog, args.seed, tc, api=False)
            emit({"verdict": {"pid": pid, **reference_verdict(prog, args.seed, out.c_values, tc)}})
        events.close()
        return
    run_programs(pids, args.seed, workers=args.workers, families=args.families.split(","),
                 reference=not args.no_reference, progress=lambda o: emit({"outcome": _outcome_json(o)}),
                 log=lambda event, pid: emit({"event": event, "pid": pid}))
    events.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Differential testing of enzyme-ffi with random C kernels.")
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--start", type=int, default=0, help="first program id")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="threads per child process")
    ap.add_argument("--chunk", type=int, default=250, help="programs per child process")
    ap.add_argument("--report", type=str, default="", help="write the report (JSON) here")
    ap.add_argument("--families", type=str, default=",".join(FAMILIES))
    ap.add_argument("--no-reference", action="store_true",
                    help="do not run the reference chain on disagreeing programs")
    ap.add_argument("--show", type=int, default=None, help="print program SHOW's source and exit")
    ap.add_argument("--cache-dir", type=str, default="", help="compile cache (default: a temporary one)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pids", type=str, default="", help=argparse.SUPPRESS)
    ap.add_argument("--events", type=str, default="", help=argparse.SUPPRESS)
    ap.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    if args.show is not None:
        print(generate(args.show, args.seed, families).full_source)
        return 0
    if args.worker:
        _worker(args)
        return 0
    cache = args.cache_dir or tempfile.mkdtemp(prefix="randprog-cache-")
    env = dict(os.environ, ENZYME_CACHE_DIR=cache)
    pids = list(range(args.start, args.start + args.programs))
    report = Report()
    t0 = time.perf_counter()

    def progress(o: Outcome) -> None:
        if o.disagreements:
            print(f"program {o.pid} ({o.family}): {len(o.disagreements)} disagreement(s): "
                  f"{', '.join(sorted({d['check'] for d in o.disagreements}))}", flush=True)

    try:
        for first in range(0, len(pids), args.chunk):
            part = run_isolated(pids[first:first + args.chunk], args.seed, workers=args.workers, families=families,
                                reference=not args.no_reference, chunk=args.chunk, env=env, progress=progress)
            for o in part.outcomes:
                report.add(o, part.sources[o.pid])
            report.seconds = time.perf_counter() - t0
            print(f"[{report.seconds:6.0f} s] programs {report.programs}, checks {report.checks}, skipped "
                  f"{report.skipped}, programs with disagreements {len(report.disagreeing)}", flush=True)
            if args.report:
                Path(args.report).write_text(json.dumps(report.to_json(), indent=1, default=str))
            if not args.cache_dir:  # derivative libraries of finished programs are not needed again
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache, ignore_errors=True)
    print()
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
