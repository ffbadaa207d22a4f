"""Narrow unit tests of wrapper generation (no toolchain needed): the C
definition and the cffi cdef come from one generator and must agree."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile

import pytest

from enzyme.activity import (
    Active,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseWithPrimal,
    resolve_activities,
)
from enzyme.codegen import BATCH_CDEF, generate_derivative
from enzyme.params import Role
from enzyme.signature import CType, Param, Signature

DBL = CType("scalar", "double", "double", "float64")
FLT = CType("scalar", "float", "float", "float32")
INT = CType("scalar", "int", "int", "int32")
CPTR = CType("pointer", "const double *", "double", "float64", const=True)
PTR = CType("pointer", "float *", "float", "float32")
SIG = Signature("k", (Param("x", DBL), Param("y", FLT), Param("n", INT), Param("a", CPTR),
                      Param("b", PTR)), DBL, "k.c:1")

REVERSE_KINDS = [(Active, Const), (Active, Const), (Const,), (Const, Duplicated),
                 (Const, Duplicated, DuplicatedNoNeed)]
FORWARD_KINDS = [(Duplicated, Const), (Duplicated, Const), (Const,), (Const, Duplicated),
                 (Const, Duplicated, DuplicatedNoNeed)]


def _patterns():
    for mode in (Reverse, ReverseWithPrimal):
        for kinds in itertools.product(*REVERSE_KINDS):
            for ret in (None, Const):
                yield mode, kinds, ret
    for mode in (Forward, ForwardWithPrimal):
        for kinds in itertools.product(*FORWARD_KINDS):
            for ret in (None, Const):
                yield mode, kinds, ret


@pytest.mark.parametrize("mode, kinds, ret", list(_patterns()))
def test_cdef_matches_c_definition(mode, kinds, ret):
    spec = resolve_activities(SIG, mode, kinds, ret)
    wrapper = generate_derivative(spec)
    definition = next(line.replace("__attribute__((noinline)) ", "")
                      for line in wrapper.c_source.splitlines()
                      if f"void {wrapper.entry}(" in line)
    entry_cdef, packed_cdef, batch_cdef = wrapper.cdef.splitlines()
    assert definition.rstrip(" {") == entry_cdef.rstrip(";")
    # the packed twin passes every parameter through one slot array, in order
    assert packed_cdef == f"void {wrapper.packed_entry}(void **);"
    packed = next(line for line in wrapper.c_source.splitlines()
                  if line.startswith(f"void {wrapper.packed_entry}("))
    assert packed.count("s[") == len(wrapper.params)
    # the batch twin: every parameter strided, through the local alias, each
    # written one zeroed (when asked) before the call
    assert batch_cdef == f"void {wrapper.batch_entry}{BATCH_CDEF};"
    lines = wrapper.c_source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"void {wrapper.batch_entry}("))
    loop = next(line for line in lines[start:] if "for (long long i = lo" in line)
    local = wrapper.entry.replace("__efi_d_", "__efi_dl_")
    call = loop[loop.index(f"{local}("):]
    assert [call.count(f"b{k} + i * s{k}") for k in range(len(wrapper.params))] == [1] * len(wrapper.params)
    assert loop.count("__builtin_memset") == sum(p.writable for p in wrapper.params)
    # every out-pointer is written after the Enzyme call
    for param in wrapper.params:
        if param.role.is_output:
            assert f"*{param.name} = " in wrapper.c_source
    # only pointers and Duplicated scalars carry shadows
    shadows = [p for p in wrapper.params if p.role is Role.SHADOW]
    assert len(shadows) == sum(a.has_shadow for a in spec.args)


def test_cdefs_agree_with_the_c_compiler():
    """The cffi declarations against the definitions, checked by a C
    compiler rather than by comparing strings made from one value: each
    wrapper is preceded by its own cdef, and C rejects a declaration that
    conflicts with the definition (types, order or number of parameters)."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-15")
    if compiler is None:
        pytest.skip("no C compiler on PATH")
    units = []
    for mode, kinds, ret in _patterns():
        wrapper = generate_derivative(resolve_activities(SIG, mode, kinds, ret))
        units.append(wrapper.cdef + "\n" + wrapper.c_source)
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "wrappers.c")
        with open(source, "w") as handle:
            handle.write("\n".join(units))
        done = subprocess.run([compiler, "-fsyntax-only", "-Werror", "-Wno-unused-function", source],
                              capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # and the check can fail: a cdef with one parameter type changed
    wrapper = generate_derivative(resolve_activities(SIG, Reverse, [Active, Const, Const, Const, Const]))
    wrong = wrapper.cdef.replace("double a0", "float a0", 1)
    assert wrong != wrapper.cdef
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "wrong.c")
        with open(source, "w") as handle:
            handle.write(wrong + "\n" + wrapper.c_source)
        done = subprocess.run([compiler, "-fsyntax-only", source], capture_output=True, text=True)
    assert done.returncode != 0 and "conflicting types" in done.stderr


def test_same_request_same_code_different_request_different_entry():
    a = generate_derivative(resolve_activities(SIG, Reverse, [Active, Const, Const, Const, Const]))
    b = generate_derivative(resolve_activities(SIG, Reverse, [Active, Const, Const, Const, Const]))
    c = generate_derivative(resolve_activities(SIG, Reverse, [Const, Active, Const, Const, Const]))
    assert a == b
    assert a.entry != c.entry
