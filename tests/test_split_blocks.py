"""The long-block pass (native/split_blocks.cpp): long straight-line code is cut
into outlined pieces before Enzyme runs, so compile time stays linear; the
derivatives must not change. Oracles: forward-accumulated analytic derivatives
of the generated chain, central differences, and the same kernel compiled
without the pass."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from oracles import central_difference

import enzyme
from conftest import IN_CI
from enzyme import Duplicated, Forward, Reverse, autodiff
from enzyme import toolchain as toolchain_stage

N = 16


def chain_lines(size: int, start: str, indent: str = "    ") -> list[str]:
    """C statements a1..a<size> of a dependent chain over x[N], y[N]."""
    lines = [f"{indent}double a0 = {start};"]
    for k in range(1, size + 1):
        j, m = k % N, (k * 7) % N
        if k % 10 == 0:
            lines.append(f"{indent}double a{k} = sin(a{k - 1}) * y[{m}] + x[{j}];")
        else:
            lines.append(f"{indent}double a{k} = a{k - 1} * x[{j}] + y[{m}] * 0.5;")
    return lines


def chain_oracle(x: np.ndarray, y: np.ndarray, size: int, j0: int = 0):
    """Value and exact gradient of the chain started at x[j0], accumulated
    forward in Python."""
    a = x[j0]
    da_x, da_y = np.zeros(N), np.zeros(N)
    da_x[j0] = 1.0
    for k in range(1, size + 1):
        j, m = k % N, (k * 7) % N
        if k % 10 == 0:
            s, c = math.sin(a), math.cos(a)
            da_x, da_y = c * y[m] * da_x, c * y[m] * da_y
            da_x[j] += 1.0
            da_y[m] += s
            a = s * y[m] + x[j]
        else:
            da_x, da_y = x[j] * da_x, x[j] * da_y
            da_x[j] += a
            da_y[m] += 0.5
            a = a * x[j] + y[m] * 0.5
    return a, da_x, da_y


def straight_source(size: int) -> str:
    return "\n".join(["#include <math.h>", "double chain(const double *x, const double *y) {",
                      *chain_lines(size, "x[0]"), f"    return a{size};", "}", ""])


def looped_source(size: int) -> str:
    return "\n".join(["#include <math.h>",
                      "double looped(const double *x, const double *y, int reps) {",
                      "  double s = 0;", "  for (int r = 0; r < reps; r++) {",
                      *chain_lines(size, f"x[r % {N}]", "    "),
                      # a recurrence, not a sum: vectorizing a 1,500-statement
                      # body 16 ways costs the back end 10 s
                      f"    s = 0.5 * s + a{size};", "  }",
                      "  return s;", "}", ""])


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.9, 1.0, N), rng.uniform(0.0, 0.1, N)


@pytest.fixture(scope="module")
def split_pass(tc):
    if not tc.split_pass:
        message = f"the long-block pass is not available: {tc.split_pass_problem}"
        if IN_CI:
            pytest.fail(message + "\n(CI=true: the pass must be built)")
        pytest.skip(message)
    return tc.split_pass


def run_passes(tc, split_pass: str, passes: str, *options: str, path: str | None = None,
               ir: str | None = None) -> str:
    """opt with the pass plugin loaded, on a bitcode file (``path``) or on IR
    text (``ir``); returns the output IR."""
    command = [tc.opt, f"--load-pass-plugin={split_pass}", *options, f"-passes={passes}",
               *([path] if path else []), "-S", "-o", "-"]
    return subprocess.run(command, input=ir, capture_output=True, text=True, check=True).stdout


def count_pieces(ir: str) -> dict[str, int]:
    """Outlined pieces per parent function in IR text."""
    counts: dict[str, int] = {}
    for line in ir.splitlines():
        if line.startswith("define") and ".efi_piece" in line:
            name = line.split("@", 1)[1].split(".efi_piece", 1)[0].strip('"')
            counts[name] = counts.get(name, 0) + 1
    return counts


def pieces_after_pass(tc, split_pass: str, module) -> dict[str, int]:
    """Run O2 + the pass on a module's pre-AD bitcode: outlined pieces per function."""
    return count_pieces(run_passes(tc, split_pass, "default<O2>,efi-split-long-blocks",
                                   path=module._artifact.bc_path))


STRAIGHT = 400


@pytest.fixture(scope="module")
def straight(cc, split_pass):
    return cc(straight_source(STRAIGHT))


def test_long_straight_block_is_outlined(tc, split_pass, straight, cc):
    assert pieces_after_pass(tc, split_pass, straight).get("chain", 0) >= 5
    short = cc(straight_source(20))
    assert pieces_after_pass(tc, split_pass, short) == {}


def test_reverse_gradient_of_outlined_chain_is_exact(straight):
    x, y = inputs()
    dx, dy = np.zeros(N), np.zeros(N)
    value, want_dx, want_dy = chain_oracle(x, y, STRAIGHT)
    out = autodiff(enzyme.ReverseWithPrimal, straight.chain, Duplicated(x, dx), Duplicated(y, dy))
    assert out.primal == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dy, want_dy, rtol=1e-11, atol=1e-14)
    fd = central_difference(lambda v: straight.chain(v, y), x)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)


def test_forward_tangent_of_outlined_chain_is_exact(straight):
    x, y = inputs(1)
    tx, ty = np.linspace(-1, 1, N), np.linspace(0.5, -0.5, N)
    _, want_dx, want_dy = chain_oracle(x, y, STRAIGHT)
    out = autodiff(Forward, straight.chain, Duplicated(x, tx), Duplicated(y, ty))
    assert out.tangent == pytest.approx(want_dx @ tx + want_dy @ ty, rel=1e-11)


def test_same_gradient_without_the_pass(cc, straight):
    whole = cc(straight_source(STRAIGHT), split_long_blocks=False)
    assert whole._artifact.key != straight._artifact.key
    x, y = inputs(2)
    grads = []
    for mod in (straight, whole):
        dx, dy = np.zeros(N), np.zeros(N)
        autodiff(Reverse, mod.chain, Duplicated(x, dx), Duplicated(y, dy))
        grads.append(np.concatenate([dx, dy]))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-13, atol=1e-16)


def test_loop_bodies_have_a_higher_threshold(tc, split_pass, cc):
    # LICM hoists the loads and y[m] * 0.5, leaving about one instruction per
    # statement: a 600-statement body (over 256, under 1,000) stays whole, a
    # 1,500-statement body is cut.
    assert pieces_after_pass(tc, split_pass, cc(looped_source(600))) == {}
    long_body = cc(looped_source(1500))
    assert pieces_after_pass(tc, split_pass, long_body).get("looped", 0) >= 5
    x, y = inputs(3)
    dx, dy = np.zeros(N), np.zeros(N)
    autodiff(Reverse, long_body.looped, Duplicated(x, dx), Duplicated(y, dy), 3)
    want_dx, want_dy = np.zeros(N), np.zeros(N)
    for r in range(3):
        _, gx, gy = chain_oracle(x, y, 1500, j0=r % N)
        want_dx += 0.5 ** (2 - r) * gx
        want_dy += 0.5 ** (2 - r) * gy
    np.testing.assert_allclose(dx, want_dx, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dy, want_dy, rtol=1e-11, atol=1e-14)


def long_ir_function(name: str, before: str = "", after: str = "", length: int = 400) -> str:
    body = [f"  %v{k} = fmul double %v{k - 1}, %x" for k in range(1, length + 1)]
    return "\n".join([f"define double @{name}(double %x) {{", "entry:", "  %v0 = fadd double %x, 1.0",
                      before, *body, after, f"  ret double %v{length}", "}", ""])


def test_functions_where_outlining_changes_meaning_stay_whole(tc, split_pass):
    # stacksave/stackrestore bracket a block-scoped VLA; a piece holding one
    # of them would free the array too early. setjmp returns twice. A function
    # calling __enzyme_* is where Enzyme looks for its entry points.
    ir = "\n".join([
        "declare ptr @llvm.stacksave()", "declare void @llvm.stackrestore(ptr)",
        "declare i32 @setjmp(ptr) returns_twice", "declare double @__enzyme_autodiff(ptr, ...)",
        "@buf = global [200 x i64] zeroinitializer",
        long_ir_function("plain"),
        long_ir_function("stack", "  %sp = call ptr @llvm.stacksave()",
                         "  call void @llvm.stackrestore(ptr %sp)"),
        long_ir_function("jumps", "  %j = call i32 @setjmp(ptr @buf)"),
        long_ir_function("entry_point", "  %d = call double (ptr, ...) @__enzyme_autodiff(ptr @plain, double %x)"),
        "declare ptr @llvm.returnaddress(i32)",
        long_ir_function("return_address", "  %ra = call ptr @llvm.returnaddress(i32 0)"),
        long_ir_function("short", length=200),
    ])
    assert count_pieces(run_passes(tc, split_pass, "efi-split-long-blocks", ir=ir)) == {"plain": 11}


def test_missing_pass_is_reported_not_fatal(tc):
    path, digest, problem = toolchain_stage._find_split_pass(99, Path(tc.opt),
                                                             tc.opt_version)
    assert (path, digest) == ("", "")
    assert "_split_blocks_llvm99.so was not built" in problem and "llvm-99-dev" in problem


def test_pass_that_does_not_load_is_reported(tc, tmp_path):
    bogus = tmp_path / "_split_blocks_llvm15.so"
    bogus.write_bytes(b"not an ELF file")
    facts = toolchain_stage._split_pass_facts(bogus, Path(tc.opt))
    assert "does not load into" in facts["problem"]


def test_load_probe_always_runs_against_this_opt(tc, tmp_path, monkeypatch):
    # A file that is not a plugin at all: the probe (running the user's opt)
    # must catch it, whatever a build-time record beside it claims (a wheel
    # is built on another machine).
    installed = [Path(d) for d in enzyme.__path__]
    (tmp_path / "_split_blocks_llvm15.so").write_bytes(b"not an ELF file")
    monkeypatch.setattr(enzyme, "__path__", [str(tmp_path)])
    (tmp_path / "_split_blocks_llvm15.json").write_text(
        f'{{"llvm_version": "{tc.opt_version}", "opt": "{tc.opt}"}}')
    path, _, problem = toolchain_stage._find_split_pass(15, Path(tc.opt), tc.opt_version)
    assert path == "" and "does not load into" in problem
    assert not any(f for d in installed for f in d.glob("_split_blocks_llvm*.json"))  # none is written


UNROLLED_LOCAL_ARRAY = """
/* Fully unrolled loop whose body has a local array: after O2 one long block
   holds several lifetime.start/end pairs of the same stack slot. */
__attribute__((noinline)) void fill(double *t, double x) {
    for (int i = 0; i < 8; i++) t[i] = x * (i + 1);
}
__attribute__((noinline)) void bump(double *t) {
    for (int i = 0; i < 8; i++) t[i] *= 1.0001;
}
double unrolled(double x) {
    double s = 0;
#pragma clang loop unroll(full)
    for (int it = 0; it < 4; it++) {
        double t[8];
        fill(t, x + it);
%s
    }
    return s;
}
"""


def test_lifetime_markers_do_not_end_objects_early(cc, split_pass, tc):
    # End to end through Enzyme: a cut block holding several lives of one
    # array. (test_cut_keeps_each_life_of_a_stack_slot pins the exact bug
    # found in review, where a read of the array was folded to NaN.)
    body = []
    for k in range(90):
        body.append(f"        s = s * 0.{k % 3 + 1}5 + t[{k % 8}] * t[{(k * 3) % 8}];")
        if k % 30 == 29:
            body.append("        bump(t);")
    mod = cc(UNROLLED_LOCAL_ARRAY % "\n".join(body))
    assert pieces_after_pass(tc, split_pass, mod).get("unrolled", 0) >= 3
    out = autodiff(enzyme.ReverseWithPrimal, mod.unrolled, enzyme.Active(0.7))
    assert out.primal == pytest.approx(mod.unrolled(0.7), rel=1e-14)
    fd = (mod.unrolled(0.7 + 1e-6) - mod.unrolled(0.7 - 1e-6)) / 2e-6
    assert out.derivs[0] == pytest.approx(fd, rel=1e-6)


def test_always_inline_functions_can_be_cut(cc, split_pass):
    # A piece inherits alwaysinline; with noinline added the verifier rejected
    # the module. Reachable when C code calls __enzyme_autodiff on such a
    # function itself (enzyme-ffi's own wrappers inline it first).
    lines = ["#include <math.h>", "#include <enzyme/enzyme.h>", "__attribute__((always_inline)) double",
             "body(double x, const double *p) {", "    double a = x, b = 0.5 * x;"]
    for k in range(120):
        lines.append(f"    a = sin(a) * 0.{k % 7 + 1} + 0.3 * b; b = b * 0.5 + a * p[{k % 5}];")
    lines += ["    return a + b;", "}",
              "void body_grad(double x, const double *p, double *dp, double *dx) {",
              "    *dx = __enzyme_autodiff((void *)body, enzyme_out, x, enzyme_dup, p, dp);", "}", ""]
    split, whole = cc("\n".join(lines)), cc("\n".join(lines), split_long_blocks=False)
    p = np.linspace(0.1, 0.5, 5)
    grads = []
    for mod in (split, whole):
        dp, dx = np.zeros(5), np.zeros(1)
        mod.body_grad(0.3, p, dp, dx)
        grads.append(np.concatenate([dx, dp]))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
    fd = (whole.body(0.3 + 1e-6, p) - whole.body(0.3 - 1e-6, p)) / 2e-6
    assert grads[0][0] == pytest.approx(fd, rel=1e-5)


def test_debug_info_does_not_change_the_cut(tc, split_pass, cc):
    # 100 statements: about 190 instructions, under the threshold; -g adds
    # about 100 llvm.dbg.value calls, which must not count.
    source = straight_source(100)
    assert pieces_after_pass(tc, split_pass, cc(source, flags=["-g"])) == {}
    assert pieces_after_pass(tc, split_pass, cc(source)) == {}
    long_source = straight_source(STRAIGHT)
    assert (pieces_after_pass(tc, split_pass, cc(long_source, flags=["-g"]))
            == pieces_after_pass(tc, split_pass, cc(long_source)))


LIFETIMES_IR = """
declare void @llvm.lifetime.start.p0(i64, ptr)
declare void @llvm.lifetime.end.p0(i64, ptr)
declare void @use(ptr)
define double @two_lives(double %x) {
entry:
  %slot = alloca double
  call void @llvm.lifetime.start.p0(i64 8, ptr %slot)
  store double %x, ptr %slot
  call void @use(ptr %slot)
  %y = fmul double %x, 2.0
  %first = load double, ptr %slot
  call void @llvm.lifetime.end.p0(i64 8, ptr %slot)
  call void @llvm.lifetime.start.p0(i64 8, ptr %slot)
  store double %y, ptr %slot
  call void @use(ptr %slot)
  %second = load double, ptr %slot
  %sum = fadd double %first, %second
  %out = fadd double %sum, 1.0
  call void @llvm.lifetime.end.p0(i64 8, ptr %slot)
  ret double %out
}
"""


def test_cut_keeps_each_life_of_a_stack_slot(tc, split_pass):
    # Tiny pieces so that one of them holds a read of the slot, its
    # lifetime.end and the next lifetime.start: CodeExtractor hoisted that
    # start above the read and O3 folded the read to undef (NaN).
    out = run_passes(tc, split_pass, "efi-split-long-blocks,efi-inline-pieces,default<O3>",
                     "-efi-split-threshold=10", "-efi-split-chunk=4", ir=LIFETIMES_IR)
    body = out[out.index("@two_lives("):]
    body = body[:body.index("\n}")]
    assert "0x7FF8" not in body and body.count("load double") == 2, body


def test_a_probe_that_could_not_run_is_asked_again(tc, tmp_path, monkeypatch):
    """opt not starting (or timing out) says nothing about the pass: that
    answer is not remembered, and the next lookup probes again."""
    import subprocess

    from enzyme import paths

    store, subject = tmp_path / "probe.json", tmp_path / "_split_blocks_llvm15.so"
    subject.write_bytes(b"not an ELF file")
    calls = []

    def failing_run(*args, **kwargs):
        calls.append(args)
        raise subprocess.TimeoutExpired("opt", 60)

    monkeypatch.setattr(toolchain_stage.subprocess, "run", failing_run)
    for _ in range(2):
        facts = paths.stamped_json(store, subject, lambda: toolchain_stage._split_pass_facts(subject, Path(tc.opt)))
        assert facts["problem"] and facts["transient"]
    assert len(calls) == 2 and not store.exists()
    monkeypatch.undo()
    facts = paths.stamped_json(store, subject, lambda: toolchain_stage._split_pass_facts(subject, Path(tc.opt)))
    assert "does not load" in facts["problem"] and "transient" not in facts and store.exists()
