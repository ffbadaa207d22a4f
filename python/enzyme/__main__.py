"""Command line: ``python -m enzyme doctor | install-toolchain | cache info|clear``."""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__, toolchain
from .errors import EnzymeError
from .paths import cache_dir, clear_cache


def _doctor() -> int:
    print(f"enzyme-ffi {__version__} (python {sys.version.split()[0]})")
    try:
        print(f"cache dir:           {cache_dir()}")
    except EnzymeError as exc:
        print(f"cache dir:           PROBLEM: {exc}")
    print(f"default plugin path: {toolchain.default_plugin_path()}")
    try:
        tc = toolchain.resolve()
    except EnzymeError as exc:
        print(f"\nPROBLEM: {exc}")
        return 1
    print(f"plugin:    {tc.plugin}  (found via {tc.plugin_source})")
    print(f"           sha256 {tc.plugin_sha256}"
          + ("  [pinned]" if tc.plugin_sha256 == toolchain.PINNED_PLUGIN_SHA256 else ""))
    print(f"LLVM:      {tc.llvm_major}")
    print(f"clang:     {tc.clang}  ({tc.clang_version})")
    print(f"opt:       {tc.opt}  ({tc.opt_version})")
    print(f"llvm-link: {tc.llvm_link}")
    print(f"resource:  {tc.resource_dir}")
    if tc.libclang:
        print(f"libclang:  {tc.libclang}  (parses signatures)")
    else:
        print("libclang:  the compiling clang has none; the Python package's bundled one parses "
              f"signatures.\n           For parser and compiler to agree: apt-get install "
              f"libclang1-{tc.llvm_major}")
    if tc.split_pass:
        print(f"long-block pass: {tc.split_pass}")
    else:
        print(f"long-block pass: missing. {tc.split_pass_problem}\n"
              "           (everything works; functions with thousands of straight-line "
              "statements compile in quadratic time)")
    from .build import vector_math_support
    vector = vector_math_support(tc, True)
    if vector:
        print(f"vector math: {vector[2]} (instruction sets {vector[0]}; {len(vector[1])} functions)")
    else:
        print("vector math: unavailable (needs x86-64, glibc's libmvec and the long-block pass plugin);"
              "\n           loops calling libm functions run scalar")
    try:
        import clang.cindex  # noqa: F401

        from . import Active, Reverse, autodiff, compile

        start = time.perf_counter()
        mod = compile("double square(double x) { return x * x; }", toolchain=tc)
        value = autodiff(Reverse, mod.square, Active(3.0)).derivs[0]
        elapsed = time.perf_counter() - start
    except (EnzymeError, ImportError, OSError) as exc:
        print(f"\nPROBLEM: the smoke derivative failed: {exc}")
        return 1
    if value != 6.0:
        print(f"\nPROBLEM: d/dx x*x at 3 gave {value}, expected 6.0")
        return 1
    print(f"smoke:     d/dx x*x at x=3 = {value}  ({elapsed:.2f} s)  OK")
    from .call import fast_path_enabled

    print(f"fast path: {'enabled' if fast_path_enabled() else 'not available (Python path only)'}")
    return 0


def _cache(action: str) -> int:
    try:
        root = cache_dir()
        if action == "clear":
            deleted, kept = clear_cache(root)
            if not deleted and not kept:
                print(f"nothing to clear in {root}")
            else:
                print(f"cleared {root}")
            if kept:
                print(f"kept {len(kept)} entries enzyme-ffi did not create: {', '.join(kept[:10])}")
            return 0
    except EnzymeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    modules = len(list((root / "modules").glob("*.json"))) if root.is_dir() else 0
    derivs = len(list((root / "derivatives").glob("*.json"))) if root.is_dir() else 0
    print(f"cache dir:   {root}")
    print(f"modules:     {modules}")
    print(f"derivatives: {derivs}")
    print(f"size:        {size / 1e6:.1f} MB in {len(files)} files")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enzyme", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="show the toolchain found and run a smoke derivative")
    install = sub.add_parser("install-toolchain",
                             help="install clang-15/llvm-15 (as root) and the pinned plugin")
    install.add_argument("--force", action="store_true", help="fetch the plugin again")
    install.add_argument("--no-apt", action="store_true", help="do not touch Debian packages")
    install.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    cache = sub.add_parser("cache", help="inspect or clear the compile cache")
    cache.add_argument("action", choices=["info", "clear"])
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return _doctor()
    if args.command == "cache":
        return _cache(args.action)
    try:
        path = toolchain.install_toolchain(force=args.force, apt=not args.no_apt, dry_run=args.dry_run)
    except EnzymeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'would install the Enzyme plugin at' if args.dry_run else 'Enzyme plugin ready:'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
