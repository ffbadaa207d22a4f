"""Stage 5: run the compile chain in subprocesses, and cache what it makes.

The chain (checked on the pinned toolchain):

1. ``clang -O2 -Xclang -disable-llvm-passes -emit-llvm`` per source: the
   front end only (with -O2's TBAA and attributes), no LLVM optimisation yet;
2. ``llvm-link`` of the module's sources; a derivative build instead has clang
   link the module's bitcode into its generated wrapper's (``-mlink-bitcode-file``);
3. ``opt --load-pass-plugin=LLVMEnzyme
   -passes=preserve-nvvm,default<O2>,enzyme,default<O3> --vectorize-loops=false``:
   the reference chain of the design notes, with loop vectorisation off.
   ``preserve-nvvm`` must come before any inlining: it keeps custom-derivative
   registrations and marks the functions they name ``noinline`` (after
   clang's own -O2 such a function is often already inlined into its callers,
   and its rule silently unused);
4. ``clang -O3 -shared`` to a shared library (this step vectorises).

With ``native_cpu`` (the default) step 3 stops after Enzyme and a second
``opt -passes=default<O3> -mattr=<this CPU's features>`` follows: the host's
features reach the code only after Enzyme has differentiated the generic
x86-64 IR. A derivative library's copies of the module's globals are turned
into declarations (``llvm-extract --delete``) only after optimisation, so
that Enzyme sees their definitions as in the reference chain, while the
library uses the primal library's storage.

The flags before Enzyme are chosen by correctness on the conformance corpus
(tests/conformance) and the random programs (tests/test_random_programs.py),
never by speed alone. Measured with the pinned Enzyme (v0.0.289):

* ``--disable-loop-unrolling`` (used by earlier versions, with loop and SLP
  vectorisation off, to hand Enzyme simpler loops) leaves loop shapes whose
  derivatives Enzyme gets silently wrong: a forward derivative through a
  branch on ``fmin`` over local arrays came out as the primal values, an
  outer loop overwriting what an inner loop read, a strided loop of ``fmin``
  terms and a Runge-Kutta stage loop got wrong adjoints
  (tests/test_pipeline_regressions.py). Unrolling stays on.
* The loop vectorizer before Enzyme (the reference chain's default) makes
  Enzyme's type analysis hang on a small global array written in a loop
  (its runtime alias check subtracts the global's address), and with AVX2
  it emits masked gathers that Enzyme cannot differentiate. It is off up to
  Enzyme; the final clang step vectorises the derivative code.

When the long-block pass was built (``Toolchain.split_pass``) and the module
allows it, step 3 runs ``efi-split-long-blocks`` between O2 and Enzyme: basic
blocks longer than 256 instructions (1,000 inside loops) are cut into
32-instruction pieces, each outlined into its own function, because Enzyme's
activity analysis is quadratic in a block's length (the function's lifetime
markers are dropped first: outlining would misplace them). ``efi-inline-pieces`` then lets O3
inline the pieces of blocks up to 2,000 instructions back; longer ones stay
separate functions, since LLVM's register allocator is superlinear in a
function's size.

A module's primal library skips step 3 when its sources call or register
nothing of Enzyme's (no ``__enzyme`` in them): clang optimises and links
the front end's bitcode directly. The stored bitcode is the front end's, so
every derivative build runs the whole pipeline above.

Every tool runs as a subprocess: a crash or an Enzyme error becomes an
exception, never the death of the user's interpreter. Artifacts are cached
under a key that hashes every input that changes the output; files are
published with ``os.replace`` under a per-key file lock, and an entry whose
recorded hashes do not match is rebuilt, never loaded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from . import signature as _signature
from .diagnostics import explain
from .errors import (
    BuildTimeoutError,
    CacheError,
    CompileError,
    DifferentiationError,
    EnzymeError,
    FlagError,
    LinkError,
    ToolchainError,
)
from .paths import (
    abandon_cache,
    atomic_write_bytes,
    cache_root,
    env_seconds,
    fallback_root,
    file_identity,
    get_include,
    private_dir,
    sha256_file,
    stamped_json,
)
from .toolchain import Toolchain, probe_store

__all__ = ["SourceInput", "ModuleArtifact", "ModuleFacts", "build_module", "build_derivative", "run_tool",
           "build_helper",
           "SHADOW_PREFIX",
           "cache_root", "PRE_AD_FLAGS", "subprocess_runs", "FlagError", "LinkError"]


FORMAT_VERSION = "5"  # bump when the cache layout or the chain changes
# -fno-math-errno: with errno semantics clang marks libm calls (tanh, erf, ...)
# writeonly, Enzyme's preprocessing adds readnone, and the LLVM 15 verifier
# then aborts opt ("Attributes 'readnone and writeonly' are incompatible").
PRE_AD_FLAGS = ("-O2", "-fno-math-errno", "-fPIC", "-Xclang", "-disable-llvm-passes")
# Up to and including Enzyme, and after it; one opt run is both, joined by a
# comma: exactly the reference chain.
OPT_PASSES = "preserve-nvvm,default<O2>,enzyme"
POST_AD_PASSES = "default<O3>"
# With enzyme-ffi's long-block pass (native/split_blocks.cpp): after O2 has
# simplified the code, before Enzyme analyses it.
OPT_PASSES_SPLIT = "preserve-nvvm,default<O2>,efi-split-long-blocks,enzyme,efi-inline-pieces"
# Extra ``opt`` flags for step 3, see the module docstring (any flag here must
# first keep the conformance corpus and the random programs passing).
OPT_FLAGS: tuple[str, ...] = ("--vectorize-loops=false",)
POST_AD_FLAGS = ("-O3", "-fPIC", "-shared")

# Counts subprocess launches; tests use it to prove a cache hit runs none.
subprocess_runs = 0
_runs_lock = threading.Lock()

_memo_lock = threading.Lock()
# In-process memos. Each entry remembers the identity (inode, size, mtime) of
# the files whose hashes were checked; a file swapped on disk since then sends
# the request back through the hash check before anything is loaded again.
_module_memo: dict[str, tuple[ModuleArtifact, tuple]] = {}
_derivative_memo: dict[str, tuple[Path, tuple]] = {}


def _identity(*paths: str | Path) -> tuple:
    return tuple(file_identity(path) for path in paths)


# File name endings clang reads as C++ (as its driver does).
CXX_SUFFIXES = (".cpp", ".cc", ".cxx", ".c++", ".cp", ".C", ".CPP")
# C++ is compiled without exceptions: Enzyme v0.0.289 differentiates a caught
# exception wrongly (a catch returning a constant gave a gradient of
# [0.5, nan, 0.17] instead of 0: tests/test_cxx.py), so `throw` and `try`
# are compile errors unless the user's flags= say -fexceptions.
CXX_FLAGS = ("-fno-exceptions",)


@dataclass(frozen=True)
class SourceInput:
    """A C or C++ source: its text, and the name diagnostics should use."""

    text: str
    display_name: str
    path: str | None = None  # the real file, when the user gave one
    language: str = "c"  # or "c++"
    flags: tuple[str, ...] = ()  # this file's own (from a compilation database)


SHADOW_PREFIX = "__efi_shadow_"


@dataclass(frozen=True)
class ModuleFacts:
    """What the orchestrator learned from a module's sources, for the build.

    ``extra`` is stored with the cache entry as is. ``shared_globals`` are the
    external global variables every library of the module must share (they
    are defined once, in the module's primal library); ``shadowed_globals``
    (name, bytes) get a zeroed shadow global ``__efi_shadow_<name>`` attached
    with Enzyme's ``enzyme_shadow`` metadata.
    """

    extra: dict = field(hash=False, compare=False)
    shared_globals: tuple[str, ...] = ()
    shadowed_globals: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ModuleArtifact:
    key: str
    bc_path: str
    so_path: str
    bc_sha256: str
    link_args: tuple[str, ...]  # -L/-l/-Wl flags for every shared library built from it
    extra: dict = field(hash=False, compare=False)
    dep_stamps: tuple[tuple[str, int, int], ...] = ()
    shared_globals: tuple[str, ...] = ()  # defined in so_path only; derivatives link to it
    opt_flags: tuple[str, ...] = ()  # Enzyme options (e.g. -enzyme-loose-types) for every build
    native_cpu: bool = False  # optimise for this machine's CPU after Enzyme
    split_long_blocks: bool = True  # run the long-block pass when the toolchain has it
    vector_math: bool = False  # libmvec in vectorised loops after Enzyme, where available
    # Builds the module again (same sources, same options): a derivative
    # build needs the module's bitcode, and the cache may have been cleared
    # since the module was loaded.
    rebuild: Callable[[], ModuleArtifact] | None = field(default=None, compare=False, repr=False)


def _package_version() -> str:
    from . import __version__

    return __version__


@functools.lru_cache(maxsize=1)
def _header_digest() -> str:
    # the shipped header cannot change under a running process
    digest = hashlib.sha256()
    for header in sorted(Path(get_include()).rglob("*.h")):
        digest.update(header.read_bytes())
    return digest.hexdigest()


T = TypeVar("T")


def _with_cache(work: Callable[[Path], T]) -> T:
    """Run ``work`` in the cache; if the cache fails under it (disk full,
    made read-only, removed), warn once and redo it in a private temporary
    directory for the rest of the process: cache trouble never breaks a
    compile."""
    root = cache_root()
    try:
        return work(root)
    except EnzymeError:
        raise  # a build failure (e.g. BuildTimeoutError, a TimeoutError) is not cache trouble
    except OSError as exc:
        if root == fallback_root():
            raise CacheError(f"enzyme-ffi could not write its build files, even in the private "
                             f"temporary directory {root}: {exc}. Free some disk space or set "
                             "ENZYME_CACHE_DIR (and TMPDIR) to a writable place.") from exc
        fallback = abandon_cache()
        warnings.warn(f"enzyme-ffi: the cache dir {root} failed ({exc}); using the private "
                      f"temporary dir {fallback} for the rest of this process.", stacklevel=4)
        return work(fallback)




def _timeout() -> float:
    return env_seconds("ENZYME_COMPILE_TIMEOUT", 600.0, ToolchainError)


PARSE_MEMORY_DEFAULT_MB = 4096


def _parse_memory_limit() -> int:
    """The address-space bound of the signature parser, in bytes: libclang
    reads what the sources include, and ``#include </dev/zero>`` would
    otherwise grow until the timeout (or the machine) gives out."""
    raw = os.environ.get("ENZYME_PARSE_MEMORY_MB", "").strip()
    if not raw:
        return PARSE_MEMORY_DEFAULT_MB << 20
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not (256 <= value <= 1 << 24):
        raise ToolchainError(
            f"ENZYME_PARSE_MEMORY_MB={raw!r} is not a usable memory bound for the signature "
            f"parser: it must be a whole number of MiB from 256 to {1 << 24}. Fix: set it to, "
            f"e.g., {PARSE_MEMORY_DEFAULT_MB} (the default), or unset it.")
    return value << 20


_checked_tmpdirs: set[str] = set()


def _check_tmpdir() -> None:
    """clang writes its intermediate files to $TMPDIR: an unusable one fails
    the link step with words that would otherwise be taken for Enzyme's."""
    tmpdir = os.environ.get("TMPDIR")
    if not tmpdir or tmpdir in _checked_tmpdirs:
        return
    if not (os.path.isdir(tmpdir) and os.access(tmpdir, os.W_OK | os.X_OK)):
        problem = "does not exist" if not os.path.exists(tmpdir) else "is not a writable directory"
        raise ToolchainError(f"TMPDIR={tmpdir!r} {problem}, and clang writes its temporary files "
                             "there. Fix: point TMPDIR at a writable directory, or unset it.")
    _checked_tmpdirs.add(tmpdir)


def _is_parse_worker(cmd: Sequence[str]) -> bool:
    return list(cmd) == _signature.worker_command()


def run_tool(cmd: Sequence[str], input: str | None = None) -> subprocess.CompletedProcess:
    """Run one step of a build (a tool, or the signature parser) in a
    subprocess, under ``ENZYME_COMPILE_TIMEOUT``; ``input`` goes to its stdin."""
    global subprocess_runs
    limit = _timeout()
    _check_tmpdir()
    cmd = list(cmd)
    parse = _is_parse_worker(cmd)
    memory = 0
    if parse:
        # The bound is set by the worker itself, first thing: preexec_fn is
        # unsafe here (the parse runs in a thread while clang is started).
        memory = _parse_memory_limit()
        # Only the soft limit, and never above a hard limit the user set
        # (ulimit -v): raising it is not allowed and failed every parse.
        cmd[-1] = ("import resource\n"
                   "_soft, _hard = resource.getrlimit(resource.RLIMIT_AS)\n"
                   f"_want = {memory} if _hard == resource.RLIM_INFINITY else min({memory}, _hard)\n"
                   "if _soft == resource.RLIM_INFINITY or _soft > _want:\n"
                   "    resource.setrlimit(resource.RLIMIT_AS, (_want, _hard))\n"
                   + cmd[-1])
    with _runs_lock:
        subprocess_runs += 1
    _log.debug("run: %s", "the signature parser (libclang, in a subprocess)" if parse
               else " ".join(shlex.quote(c) for c in cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                              timeout=limit, input=input,
                              stdin=subprocess.DEVNULL if input is None else None)
    except subprocess.TimeoutExpired as exc:
        if parse:
            raise BuildTimeoutError(
                f"parsing the sources' signatures (libclang) did not finish within {limit:g} s and "
                "was stopped. Check what the sources #include (a device or a pipe never ends), or "
                "raise ENZYME_COMPILE_TIMEOUT (seconds).") from exc
        raise BuildTimeoutError(
            f"`{Path(cmd[0]).name}` did not finish within {limit:g} s and was stopped. "
            "Large kernels can take Enzyme a long time: raise ENZYME_COMPILE_TIMEOUT (seconds), "
            "or split the kernel.") from exc
    except OSError as exc:
        raise ToolchainError(f"cannot run {cmd[0]}: {exc}. Run `python -m enzyme doctor`.") from exc
    if parse and done.returncode != 0:
        done.stderr += (f"\n(the parser's memory is bounded to {memory >> 20} MiB, "
                        "ENZYME_PARSE_MEMORY_MB; a source including a device such as /dev/zero "
                        "exhausts it)")
    elif done.returncode != 0:
        for code in (errno.ENOSPC, errno.EDQUOT):
            if os.strerror(code) in done.stderr:
                # the build directory's disk: cache trouble, which falls back
                raise OSError(code, f"{os.strerror(code)} (reported by {Path(cmd[0]).name})")
    return done


_DIAG = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): (?:fatal )?error: ", re.M)


def _exceptions_hint(stderr: str) -> str:
    if "with exceptions disabled" not in stderr:
        return ""
    return ("\nenzyme-ffi compiles C++ without exceptions: Enzyme gives wrong derivatives through "
            "a thrown and caught exception. Fix: report errors through return values (or "
            "assert/abort), or pass flags=['-fexceptions'] to compile with them anyway; then "
            "derivatives of calls that throw are wrong, and an exception that leaves an "
            "extern \"C\" kernel ends the process (std::terminate).")


def clang_diagnostics(stderr: str, rename: dict[str, str]) -> tuple[str, ...]:
    """Split clang's stderr into one block per error (with its source line),
    naming files as the user knows them."""
    for real, shown in rename.items():
        stderr = stderr.replace(real, shown)
    starts = [m.start() for m in _DIAG.finditer(stderr)]
    blocks = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(stderr)
        block = stderr[start:end].rstrip()
        # keep the error, its source line and caret; drop trailing notes/warnings
        lines = block.splitlines()
        keep = [lines[0]] + [ln for ln in lines[1:4]
                             if not re.match(r"^(\S+:\d+:\d+: |\d+ errors? generated)", ln)]
        blocks.append("\n".join(keep))
    return tuple(blocks)


def differentiation_error(stderr: str, kernel: str, pattern: str, headline: str) -> DifferentiationError:
    """A DifferentiationError carrying Enzyme's own words, the kernel, the
    activity pattern and, for known failures, what to do."""
    message, failure = explain(stderr)
    text = f"{headline}\n{message}"
    if failure is not None:
        text += f"\nWhat happened: {failure.what}.\nFix: {failure.hint}."
    return DifferentiationError(text, kernel=kernel, pattern=pattern, enzyme_message=message,
                                hint=failure.hint if failure else "",
                                code=failure.code if failure else "")


@contextmanager
def _key_lock(root: Path, key: str):
    locks = private_dir(root / "locks")
    with open(locks / f"{key}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


def _canonical_digest(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=True).encode()).hexdigest()


def _manifest_bytes(content: dict) -> bytes:
    """A manifest as stored: its content and the hash of that content. What
    a manifest records (a module's signatures, above all) decides how memory
    is passed to native code, so it is checked like the libraries are."""
    return json.dumps({**content, "digest": _canonical_digest(content)}).encode()


_warned_manifests: set[tuple[str, str]] = set()


def _read_manifest(path: Path, key: str) -> dict | None:
    """The manifest of a cache entry, or None when it is missing, unreadable,
    for another key, not of the expected shape, or its content does not
    match its recorded hash (a damaged entry is a miss, rebuilt)."""
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # a FIFO, a device
                return None
            manifest = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    recorded = manifest.pop("digest", None)
    if recorded is None:  # made before manifests were hashed: rebuilt, without fuss
        return None
    if recorded != _canonical_digest(manifest):
        if (str(path), str(recorded)) not in _warned_manifests:
            _warned_manifests.add((str(path), str(recorded)))
            warnings.warn(f"enzyme-ffi: the cache entry {path} was modified after it was written "
                          "(its content does not match its recorded hash); it is rebuilt.",
                          stacklevel=2)
        return None
    if (manifest.get("key") != key
            or not isinstance(manifest.get("files"), dict)
            or not all(isinstance(v, str) for v in manifest["files"].values())):
        return None
    return manifest


def _files_intact(root: Path, files: dict[str, str]) -> bool:
    try:
        return all(sha256_file(root / name) == digest for name, digest in files.items())
    except OSError:
        return False


def _deps_intact(deps: dict[str, str]) -> bool:
    try:
        return all(sha256_file(Path(dep)) == digest for dep, digest in deps.items())
    except OSError:
        return False


def parse_depfile(text: str) -> list[str]:
    """The prerequisites of a make-style dependency file (clang's ``-MD``),
    unescaped as clang escapes them: ``\\ `` is a space, ``\\#`` a ``#``,
    backslashes before those are doubled, ``$$`` is a ``$``, and a backslash
    before a newline continues the line. Splitting on whitespace instead
    broke every path with a space in it."""
    words: list[str] = []
    word: list[str] = []
    started = False  # a word may be empty only if something made it start
    i, n = 0, len(text)

    def end_word() -> None:
        nonlocal started
        if started:
            words.append("".join(word))
        word.clear()
        started = False

    while i < n:
        ch = text[i]
        if ch == "\\":
            j = i
            while j < n and text[j] == "\\":
                j += 1
            count, nxt = j - i, text[j] if j < n else ""
            if nxt in (" ", "#"):
                word.append("\\" * (count // 2))
                started = True
                if count % 2:  # an escaped space or hash belongs to the word
                    word.append(nxt)
                    i = j + 1
                else:
                    i = j
                continue
            if nxt == "\n" or (nxt == "\r" and text[j + 1:j + 2] == "\n"):
                word.append("\\" * (count - 1))
                started = started or count > 1
                end_word()  # a continuation separates words
                i = j + (2 if nxt == "\r" else 1)
                continue
            word.append("\\" * count)
            started = True
            i = j
            continue
        if ch == "$" and text[i + 1:i + 2] == "$":
            word.append("$")
            started = True
            i += 2
            continue
        if ch in " \t\r\n":
            end_word()
            i += 1
            continue
        word.append(ch)
        started = True
        i += 1
    end_word()
    # The first rule's target ends with an unescaped ':' (clang writes one rule).
    for k, w in enumerate(words):
        if w.endswith(":"):
            return words[k + 1:]
    return []


def _user_headers(depfile: Path, sources: set[str], system_roots: tuple[str, ...]) -> list[str]:
    """The user headers a compile read (real paths), from its dependency
    file. Only regular files are recorded: a device or pipe the C includes
    (``/dev/stdin``) cannot be hashed, or changes with every read, and is not
    something a cache entry can depend on."""
    try:
        text = depfile.read_text(errors="surrogateescape")
    except OSError:
        return []
    found = []
    for dep in parse_depfile(text):
        real = os.path.realpath(dep)
        if real in sources or real.startswith(system_roots):
            continue
        try:
            if not stat.S_ISREG(os.stat(dep).st_mode):
                continue
        except OSError:  # gone since clang read it (or /proc/self/fd/... of clang's own)
            continue
        found.append(real)
    return found


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    """A fingerprint of this machine's CPU (model and feature flags): code
    built with -march=native is only valid where the fingerprint matches, so
    it is part of the cache key (a home directory shared by different
    machines then keeps one entry per CPU, never runs another's)."""
    lines = [ln for ln in _cpuinfo().splitlines()
             if ln.startswith(("model name", "flags", "vendor_id", "cpu family", "model\t"))]
    if lines:
        text = "\n".join(dict.fromkeys(lines))
    else:
        import platform

        text = f"{platform.machine()} {platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return ""


def _module_key(tc: Toolchain, sources: Sequence[SourceInput], args: Sequence[str],
                link_args: Sequence[str], split_long_blocks: bool, native_cpu: bool,
                vector_math: bool = False) -> str:
    material = {
        "format": FORMAT_VERSION, "package": _package_version(), "toolchain": tc.identity,
        "parse": _signature.PARSE_VERSION,  # the entry stores the parse's results
        "header": _header_digest(), "pre": PRE_AD_FLAGS, "cxx": CXX_FLAGS,
        "passes": _passes(tc, split_long_blocks), "post_passes": POST_AD_PASSES, "opt": OPT_FLAGS,
        "post": POST_AD_FLAGS, "args": list(args), "link": list(link_args),
        "cpu": host_cpu() if native_cpu else "",
        "vector_math": _vector_material(tc, native_cpu, vector_math),
        "sources": [[s.display_name, hashlib.sha256(s.text.encode()).hexdigest(), s.language,
                     list(s.flags)] for s in sources],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _passes(tc: Toolchain, split_long_blocks: bool) -> str:
    """opt's pass pipeline up to and including Enzyme (part of cache keys;
    the plugins' hashes are in the toolchain's identity)."""
    return OPT_PASSES_SPLIT if split_long_blocks and tc.split_pass else OPT_PASSES


def _opt_pipeline(tc: Toolchain, split_long_blocks: bool, native_cpu: bool,
                  vector_math: bool = False) -> list[str]:
    """opt's plugin and pass arguments for the run through Enzyme; without
    ``native_cpu`` the same run goes on with the post-AD optimisation."""
    vector = None if native_cpu else vector_math_support(tc, False) if vector_math else None
    plugins = [tc.plugin, tc.split_pass] if (split_long_blocks or vector) and tc.split_pass else [tc.plugin]
    passes = _passes(tc, split_long_blocks)
    if not native_cpu:
        passes += f",{_post_ad_passes(vector)}"
    return [*(f"--load-pass-plugin={p}" for p in plugins), f"-passes={passes}", *_vector_options(vector)]


# glibc's libmvec (x86-64): the libm functions of one or two double arguments
# it has vector versions of (most since glibc 2.35; each is probed).
_LIBMVEC_FUNCTIONS = ("acos", "acosh", "asin", "asinh", "atan", "atanh", "cbrt", "cos", "cosh", "erf",
                      "erfc", "exp", "exp10", "exp2", "expm1", "log", "log10", "log1p", "log2", "sin",
                      "sinh", "tan", "tanh", "atan2", "hypot", "pow")
_TWO_ARGUMENTS = ("atan2", "hypot", "pow")
VECTOR_MATH_FLAGS = ("-fveclib=libmvec",)  # the final clang step's, linking libmvec
# compile(reassociate=True): clang may reorder floating-point sums and
# products (a reduction `s += ...` vectorizes), assume no signed zeros and no
# traps; NaN and infinity semantics are kept (not -ffast-math)
REASSOCIATE_FLAGS = ("-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math")


_LIBMVEC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib")


@functools.lru_cache(maxsize=8)
def vector_math_support(tc: Toolchain, native_cpu: bool) -> tuple[str, tuple[str, ...], str] | None:
    """``(instruction sets, functions, library)`` for efi-vector-math
    (native/vector_math.cpp): the libmvec ISA letters this build may call
    (``b``, SSE, always; ``c``/``d`` with AVX/AVX2 and ``e`` with AVX-512F on
    this CPU when ``native_cpu``), the functions this glibc has and the
    library's path (linked by path: no -dev symlink needed); None where
    libmvec cannot be used (not x86-64, no libmvec, or no pass plugin). No
    subprocess: a warm compile runs none."""
    import ctypes
    import platform
    if platform.machine() not in ("x86_64", "AMD64") or not tc.split_pass:
        return None
    path = next((os.path.join(d, "libmvec.so.1") for d in _LIBMVEC_DIRS
                 if os.path.isfile(os.path.join(d, "libmvec.so.1"))), None)
    if path is None:
        return None

    def probe() -> dict:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            return {"functions": []}
        return {"functions": [f for f in _LIBMVEC_FUNCTIONS
                              if hasattr(library, f"_ZGVbN2{'vv' if f in _TWO_ARGUMENTS else 'v'}_{f}")]}

    # (remembered with the library's identity: a warm process loads nothing)
    functions = tuple(stamped_json(probe_store(), Path(path), probe, variant="libmvec functions")["functions"])
    if not functions:
        return None
    isa = "b"
    if native_cpu:
        # (the CPU's own flags, read here: clang's -march=native probe is a
        # subprocess, and this runs before any build, in every thread)
        flags = _cpu_flags()
        isa += "d" if "avx2" in flags else "c" if "avx" in flags else ""
        isa += "e" if "avx512f" in flags else ""
    return isa, functions, path


def _cpu_flags() -> set[str]:
    return next((set(line.split(":", 1)[1].split()) for line in _cpuinfo().splitlines()
                 if line.startswith("flags")), set())


def _vector_material(tc: Toolchain, native_cpu: bool, vector_math: bool) -> list:
    """What vector math changes in a build, for cache keys."""
    support = vector_math_support(tc, native_cpu) if vector_math else None
    return [support[0], list(support[1]), support[2], VECTOR_MATH_FLAGS] if support else []


def _post_ad_passes(vector: tuple[str, tuple[str, ...], str] | None) -> str:
    return f"efi-vector-math,{POST_AD_PASSES}" if vector else POST_AD_PASSES


def _vector_options(vector: tuple[str, tuple[str, ...], str] | None) -> list[str]:
    return [f"-efi-vector-isa={vector[0]}", f"-efi-vector-functions={','.join(vector[1])}"] if vector else []


def _final_flags(tc: Toolchain, native_cpu: bool, vector_math: bool) -> tuple[list[str], list[str]]:
    """The final clang step's extra flags and libraries."""
    support = vector_math_support(tc, native_cpu) if vector_math else None
    return (list(VECTOR_MATH_FLAGS), [support[2]]) if support else ([], [])


@functools.lru_cache(maxsize=4)
def native_features(clang: str) -> str:
    """The target features of this machine's CPU, as ``opt -mattr`` takes
    them: what ``clang -march=native`` would put on every function.

    They are added only after Enzyme has run. The front end and the passes up
    to Enzyme see the generic x86-64 target, as in the reference chain: with
    ``-march=native`` there, the vectorizer before Enzyme emitted masked
    gathers/scatters (AVX2) that Enzyme v0.0.289 cannot differentiate in
    reverse mode (Enzyme's own test ReverseMode/remat.c failed to build).
    ``opt -mattr`` appends the features to each function's attributes, which
    the final clang step then compiles for.
    """
    def probe() -> dict:
        done = run_tool([clang, "-march=native", "-###", "-x", "c", "-c", os.devnull, "-o", os.devnull])
        return {"features": ",".join(re.findall(r'"-target-feature" "([+-][^"]+)"', done.stderr))}

    # remembered per clang binary and CPU (a home directory may be shared by
    # machines with different CPUs)
    return stamped_json(probe_store(), Path(clang), probe, variant=f"native features {host_cpu()}")["features"]


def _optimize_for_host(tc: Toolchain, bitcode: str, work: Path,
                       on_error: Callable[[str], Exception], vector_math: bool = False) -> str:
    """The post-AD optimisation, for this machine's CPU."""
    out = str(work / "native.bc")
    vector = vector_math_support(tc, True) if vector_math else None
    plugin = [f"--load-pass-plugin={tc.split_pass}"] if vector else []
    done = run_tool([tc.opt, bitcode, *plugin, f"-passes={_post_ad_passes(vector)}", *_vector_options(vector),
                     f"-mattr={native_features(tc.clang)}", *OPT_FLAGS, "-o", out])
    if done.returncode != 0:
        raise on_error(done.stderr)
    return out


def _link_and_differentiate(tc: Toolchain, bitcode: Sequence[str], out_so: Path,
                            link_args: Sequence[str], work: Path,
                            on_enzyme_error: Callable[[str], Exception],
                            extern_globals: Sequence[str] = (), opt_flags: Sequence[str] = (),
                            split_long_blocks: bool = True, native_cpu: bool = False,
                            on_link_error: Callable[[str], Exception] | None = None,
                            vector_math: bool = False) -> None:
    if len(bitcode) == 1:
        linked = bitcode[0]
    else:
        linked = str(work / "linked.bc")
        done = run_tool([tc.llvm_link, *bitcode, "-o", linked])
        if done.returncode != 0:
            raise on_enzyme_error(done.stderr)
    ad = str(work / "ad.bc")
    done = run_tool([tc.opt, linked, *_opt_pipeline(tc, split_long_blocks, native_cpu, vector_math),
                     *OPT_FLAGS, *opt_flags, "-o", ad])
    if done.returncode != 0:
        raise on_enzyme_error(done.stderr)
    if native_cpu:
        ad = _optimize_for_host(tc, ad, work, on_enzyme_error, vector_math)
    if extern_globals:
        # Only now turn the module's global definitions into declarations:
        # this library then uses the primal library's globals (it is linked
        # against it), so state and shadows are shared by every library of the
        # module. Before Enzyme the definitions must be there, as in the
        # reference chain: a declaration hides, e.g., that a global function
        # pointer holds malloc, and Enzyme then refuses it as an active global
        # without a shadow. (Nothing before this step may assume a definition's
        # value: the globals are external and not constant, or truly constant.)
        extern = str(work / "extern.bc")
        done = run_tool([tc.llvm_extract, "--delete", *(f"--glob={g}" for g in extern_globals),
                     ad, "-o", extern])
        if done.returncode != 0:
            raise on_enzyme_error(done.stderr)
        ad = extern
    final_flags, final_libraries = _final_flags(tc, native_cpu, vector_math)
    done = run_tool([tc.clang, *POST_AD_FLAGS, *final_flags, ad, "-o", str(out_so),
                     *link_args, *final_libraries, "-lm"])
    if done.returncode != 0:
        raise (on_link_error or on_enzyme_error)(done.stderr)


def headers_unchanged(artifact: ModuleArtifact) -> bool:
    """Are the user headers an artifact was built from unchanged (size and
    mtime)? For a module already loaded, that and its sources are all that
    can make it stale: its libraries are in memory, whatever happens to the
    files since."""
    try:
        return all(_stamp(path) == (path, size, mtime) for path, size, mtime in artifact.dep_stamps)
    except OSError:
        return False


# Flags that change what clang makes of a source (or where it puts it): the
# chain needs bitcode from every front-end run and a library from the link.
_OUTPUT_FLAGS = {"-o", "-E", "-S", "-c", "-fsyntax-only", "-###", "--analyze", "--precompile",
                 "-fdriver-only", "--preprocess", "--assemble", "--compile", "--output"}
_OUTPUT_PREFIXES = ("-M", "--output=", "-emit-", "--emit-")
# Options whose value is the next argument: that value is not a flag.
_TAKES_VALUE = {"-I", "-D", "-U", "-include", "-imacros", "-isystem", "-iquote", "-idirafter",
                "-iprefix", "-isysroot", "--sysroot", "-x", "-target", "-Xlinker", "-std", "-L", "-l",
                "-mllvm"}


def check_flags(args: Sequence[str]) -> None:
    """Refuse, before anything runs, a flag that changes clang's output kind
    (``-o``, ``-E``, ``-c``, ``-M...``, ``-emit-llvm``, ...): each step of
    the chain chooses its own outputs, and such a flag made a later step fail
    with a message about Enzyme for code that never calls it."""
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in _TAKES_VALUE:
            skip = True
            continue
        bad = arg in _OUTPUT_FLAGS or arg.startswith(_OUTPUT_PREFIXES) or (
            arg.startswith("-o") and len(arg) > 2 and not arg.startswith("-obj"))
        if bad:
            raise FlagError(
                f"flags=[..., {arg!r}, ...]: this flag changes what clang produces or where it "
                "puts it, and enzyme-ffi's build chain chooses the output of every step itself "
                "(bitcode, then a shared library). Fix: remove it from flags=.")


def build_module(tc: Toolchain, sources: Sequence[SourceInput], args: Sequence[str],
                 link_args: Sequence[str], describe: Callable[[list[str]], ModuleFacts],
                 opt_flags: Sequence[str] = (), native_cpu: bool = False,
                 split_long_blocks: bool = True, vector_math: bool = False) -> ModuleArtifact:
    """Compile a module's sources to pre-AD bitcode and a primal shared library.

    ``describe(paths, cache_dir)`` is called on a cache miss with the C files
    as written to disk and the per-file cache directory, in a thread, while
    clang compiles them (clang's diagnostics win when both fail); its
    :class:`ModuleFacts` say which globals to share and
    shadow, and its ``extra`` is stored with the entry (the orchestrator
    stores the parsed signatures there).
    """
    check_flags(args)
    key = _module_key(tc, sources, [*args, *opt_flags], link_args, split_long_blocks, native_cpu,
                      vector_math)
    with _memo_lock:
        hit = _module_memo.get(key)
    if hit is not None:
        artifact, identity = hit
        try:
            if (_identity(artifact.so_path, artifact.bc_path) == identity
                    and headers_unchanged(artifact)):
                return artifact
        except OSError:
            pass

    def at(root: Path) -> ModuleArtifact:
        entries = private_dir(root / "modules")
        manifest_path = entries / f"{key}.json"

        def load() -> ModuleArtifact | None:
            manifest = _read_manifest(manifest_path, key)
            names = _generation_names(manifest, key)
            if (manifest is None or names is None
                    or not isinstance(manifest.get("deps"), dict) or "extra" not in manifest
                    or not _files_intact(entries, manifest["files"])
                    or not _deps_intact(manifest["deps"])):
                return None
            bc_name, so_name = names
            return ModuleArtifact(
                key=key, bc_path=str(entries / bc_name), so_path=str(entries / so_name),
                bc_sha256=manifest["files"][bc_name], link_args=tuple(link_args),
                extra=manifest["extra"], dep_stamps=tuple(_stamp(d) for d in manifest["deps"]),
                shared_globals=tuple(manifest.get("shared", ())), opt_flags=tuple(opt_flags),
                native_cpu=native_cpu, split_long_blocks=split_long_blocks, vector_math=vector_math)

        artifact = load()
        if artifact is None:
            with _key_lock(root, key):
                artifact = load()  # another process may have finished it meanwhile
                if artifact is None:
                    artifact = _build_module_locked(tc, sources, args, link_args,
                                                    describe, key, entries, manifest_path,
                                                    tuple(opt_flags), native_cpu,
                                                    split_long_blocks, vector_math)
        return artifact

    artifact = dataclasses.replace(_with_cache(at), rebuild=functools.partial(
        build_module, tc, sources, args, link_args, describe, opt_flags, native_cpu,
        split_long_blocks, vector_math))
    with _memo_lock:
        _module_memo[key] = (artifact, _identity(artifact.so_path, artifact.bc_path))
    return artifact


def _build_module_locked(tc, sources, args, link_args, describe, key, entries, manifest_path,
                         opt_flags, native_cpu, split_long_blocks, vector_math):
    with tempfile.TemporaryDirectory(prefix="build-", dir=entries.parent) as tmp:
        work = Path(os.path.realpath(tmp))  # compared with the depfile's real paths
        paths, rename, bitcode, headers = [], {}, [], []
        for i, source in enumerate(sources):
            if source.path:
                path = os.path.realpath(source.path)
            else:
                path = str(work / f"source{i}.{'cpp' if source.language == 'c++' else 'c'}")
                Path(path).write_text(source.text)
                rename[path] = source.display_name
            paths.append(path)
        system_roots = ("/usr/include", "/usr/lib", "/usr/local/include", tc.resource_dir)
        system_roots = tuple(r for r in system_roots if r)
        objects = private_dir(entries.parent / "objects")
        digests = _Digests()  # each header hashed once per build, not once per file including it

        def compile_one(i: int) -> tuple[str, list[str]]:
            path, source = paths[i], sources[i]
            out = str(work / f"source{i}.bc")
            cxx = CXX_FLAGS if source.language == "c++" else ()
            command = [tc.clang, *PRE_AD_FLAGS, *cxx, "-emit-llvm", "-c", "-x", source.language,
                       path, "-o", out, "-MD", "-MF", str(work / f"source{i}.d"), *args,
                       *source.flags]
            object_key = _object_key(tc, command, source, path)
            cached = _cached_object(objects, object_key, out, digests)
            if cached is not None:
                return cached
            done = run_tool(command)
            if done.returncode != 0:
                diags = clang_diagnostics(done.stderr, rename)
                shown = rename.get(path, path)
                raise CompileError(f"clang could not compile {shown}:\n"
                                   + ("\n".join(diags) or done.stderr.strip())
                                   + _exceptions_hint(done.stderr), diags)
            found = _user_headers(work / f"source{i}.d", set(paths), system_roots)
            _store_object(objects, object_key, out, found, digests)
            return out, found

        # The files compile in parallel (one clang per core) and are cached
        # one by one, so an edit recompiles only its file; the signature
        # parser (a subprocess) runs alongside.
        jobs = max(1, min(len(sources), os.cpu_count() or 1))
        with _progress(f"compiling {len(sources)} source file(s)"), \
                concurrent.futures.ThreadPoolExecutor(jobs + 1) as pool:
            described = pool.submit(describe, paths, str(objects))
            compiled = [pool.submit(compile_one, i) for i in range(len(sources))]
            for future in compiled:  # the first failure in source order is reported
                out, found = future.result()
                bitcode.append(out)
                headers += found
            facts = described.result()
        if facts.shadowed_globals:
            bitcode.append(_shadow_bitcode(tc, facts.shadowed_globals, work))
        if len(bitcode) > 1:
            linked = str(work / "module.bc")
            done = run_tool([tc.llvm_link, *bitcode, "-o", linked])
            if done.returncode != 0:
                raise CompileError("llvm-link could not link the sources:\n" + done.stderr.strip())
        else:
            linked = bitcode[0]
        if facts.shadowed_globals:
            linked = _attach_shadows(tc, linked, [name for name, _ in facts.shadowed_globals], work)
        so = work / "module.so"

        def module_failure(stderr: str) -> Exception:
            return differentiation_error(
                stderr, "<module>", "(calls in the C source)",
                "Building the module failed in the Enzyme step (this runs the __enzyme_* "
                "calls written in your C):")

        def optimizer_failure(stderr: str) -> Exception:
            return CompileError("opt failed while optimising the module (no Enzyme is involved: "
                                "the sources call no __enzyme_* function); this is a bug in LLVM "
                                f"or enzyme-ffi, please report it:\n{stderr.strip()[-3000:]}")

        def link_failure(stderr: str) -> Exception:
            bitcode_archive = _bitcode_archive(stderr)
            if bitcode_archive:
                return LinkError(
                    f"{bitcode_archive} holds LLVM bitcode (it was built with -flto), which the "
                    "system linker cannot link into a shared library.\nFix: give its C sources to "
                    "compile(sources=[...]) (then Enzyme also differentiates through its code), or "
                    "build the library without -flto.")
            return LinkError("linking the module's shared library failed (the linker's words "
                             f"follow):\n{stderr.strip()[-3000:]}\nFix: check libraries= and "
                             "library_dirs= (a library must exist as lib<name>.so or lib<name>.a "
                             "in one of them or in the system's directories), and that every "
                             "function the C calls is defined in it or in a linked library.")

        if any("__enzyme" in source.text for source in sources):
            _link_and_differentiate(tc, [linked], so, link_args, work, module_failure,
                                    opt_flags=opt_flags, split_long_blocks=split_long_blocks,
                                    native_cpu=native_cpu, on_link_error=link_failure,
                                    vector_math=vector_math)
        else:
            # No Enzyme call or registration in the sources: the primal library
            # needs no Enzyme pass, and clang optimises and links in one step.
            optimized = (_optimize_for_host(tc, linked, work, optimizer_failure, vector_math)
                         if native_cpu else linked)
            final_flags, final_libraries = _final_flags(tc, native_cpu, vector_math and native_cpu)
            done = run_tool([tc.clang, *POST_AD_FLAGS, *final_flags, optimized, "-o", str(so), *link_args,
                             *final_libraries, "-lm"])
            if done.returncode != 0:
                raise link_failure(done.stderr)
        extra = facts.extra
        shared = list(facts.shared_globals) + [SHADOW_PREFIX + n for n, _ in facts.shadowed_globals]
        # Each build of a key gets file names of its own (its bitcode's hash):
        # a rebuild after a header changed must not reuse the old library's
        # path, or dlopen in a process that loaded the old one hands that
        # one back (it matches loaded libraries by name), old code and all.
        tag = sha256_file(Path(linked))[:12]
        bc_name, so_name = f"{key}-{tag}.bc", f"{key}-{tag}.so"
        old = _generation_names(_read_manifest(manifest_path, key), key) or ()
        shutil.copyfile(linked, work / bc_name)
        os.replace(so, work / so_name)
        files = {bc_name: sha256_file(work / bc_name), so_name: sha256_file(work / so_name)}
        deps = {}
        for header in sorted(set(headers)):
            # (None: replaced by a device since clang read it, or unreadable: /proc/self/mem)
            if digests.get(header) is not None:
                deps[header] = digests.get(header)
        for name in files:
            os.replace(work / name, entries / name)
        manifest = {"key": key, "files": files, "deps": deps, "extra": extra, "shared": shared}
        atomic_write_bytes(manifest_path, _manifest_bytes(manifest), 0o600)
        for name in old:  # the previous build's files (a process that loaded them keeps its mapping)
            if name not in files:
                with suppress(OSError):
                    os.unlink(entries / name)
    return ModuleArtifact(key=key, bc_path=str(entries / bc_name), so_path=str(entries / so_name),
                          bc_sha256=files[bc_name], link_args=tuple(link_args), extra=extra,
                          dep_stamps=tuple(_stamp(d) for d in deps), shared_globals=tuple(shared),
                          opt_flags=opt_flags, native_cpu=native_cpu,
                          split_long_blocks=split_long_blocks, vector_math=vector_math)


def _bitcode_archive(stderr: str) -> str:
    """The archive the linker could not read because it holds LLVM bitcode
    (an -flto build), or ""."""
    for match in re.finditer(r"(\S+\.a): error adding symbols: file format not recognized", stderr):
        try:
            with open(match.group(1), "rb") as handle:
                if b"BC\xc0\xde" in handle.read(1 << 20):
                    return match.group(1)
        except OSError:
            continue
    return ""


def _object_key(tc: Toolchain, command: Sequence[str], source: SourceInput, path: str) -> str:
    """The cache key of one file's pre-AD bitcode: the toolchain, the clang
    command (its flags; the temporary paths in it do not count) and the
    file's path and text (``__FILE__`` and diagnostics name the path)."""
    skip = {path, command[command.index("-o") + 1], command[command.index("-MF") + 1]}
    flags = [a for a in command[1:] if a not in skip]
    material = {"format": FORMAT_VERSION, "toolchain": tc.identity, "flags": flags,
                "file": os.path.realpath(source.path) if source.path else source.display_name,
                "text": hashlib.sha256(source.text.encode()).hexdigest()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


class _Digests:
    """The sha256 of files, each read once (None when it cannot be hashed);
    shared by the threads of one build."""

    def __init__(self) -> None:
        self._known: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def get(self, path: str) -> str | None:
        with self._lock:
            if path in self._known:
                return self._known[path]
        try:
            digest: str | None = sha256_file(Path(path))
        except OSError:
            digest = None
        with self._lock:
            return self._known.setdefault(path, digest)


def _cached_object(objects: Path, key: str, out: str,
                   digests: _Digests) -> tuple[str, list[str]] | None:
    """A file's bitcode from the per-file cache, copied to ``out``, with its
    headers; None when absent, or when the bitcode or a header it read
    changed (anything amiss is a miss: cache trouble never breaks a build)."""
    try:
        record = json.loads((objects / f"{key}.json").read_text())
        if not (isinstance(record, dict) and isinstance(record.get("deps"), dict)
                and all(digests.get(dep) == digest for dep, digest in record["deps"].items())):
            return None
        shutil.copyfile(objects / f"{key}.bc", out)
        if sha256_file(Path(out)) != record.get("bc"):
            return None
        return out, list(record["deps"])
    except (OSError, ValueError):
        return None


def _store_object(objects: Path, key: str, out: str, headers: Sequence[str],
                  digests: _Digests) -> None:
    deps = {header: digests.get(header) for header in sorted(set(headers))}
    deps = {header: digest for header, digest in deps.items() if digest is not None}
    with suppress(OSError):  # (a full disk only loses the shortcut)
        tmp = objects / f".{key}.{os.getpid()}.{threading.get_ident()}.bc.tmp"
        shutil.copyfile(out, tmp)
        os.replace(tmp, objects / f"{key}.bc")
        atomic_write_bytes(objects / f"{key}.json",
                           json.dumps({"bc": sha256_file(Path(out)), "deps": deps}).encode(), 0o600)


class _progress:
    """Reports a build step that runs longer than ``PROGRESS_AFTER`` seconds:
    through ``logging`` (logger ``enzyme``, INFO), and as a progress line on
    stderr when it is a terminal. A step that ends sooner says nothing."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.done = threading.Event()
        self.shown = False

    def __enter__(self) -> _progress:
        self.start = time.monotonic()
        _log.debug("%s ...", self.what)
        self.thread = threading.Thread(target=self._report, daemon=True, name="enzyme-progress")
        self.thread.start()
        return self

    def _report(self) -> None:
        wait = PROGRESS_AFTER
        while not self.done.wait(wait):
            elapsed = time.monotonic() - self.start
            _log.info("%s: %.0f s so far", self.what, elapsed)
            if _stderr_is_terminal():
                sys.stderr.write(f"\r[enzyme-ffi] {self.what}: {elapsed:.0f} s ")
                sys.stderr.flush()
                self.shown = True
            wait = 5.0

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        elapsed = time.monotonic() - self.start
        _log.debug("%s: done in %.2f s", self.what, elapsed)
        if self.shown:
            sys.stderr.write(f"\r[enzyme-ffi] {self.what}: done in {elapsed:.0f} s\n")
            sys.stderr.flush()


PROGRESS_AFTER = 2.0  # seconds
_log = logging.getLogger("enzyme")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _generation_names(manifest: dict | None, key: str) -> tuple[str, str] | None:
    """The (bitcode, library) file names a module manifest lists, when it
    lists exactly those two, named after the key."""
    if manifest is None or not isinstance(manifest.get("files"), dict) or len(manifest["files"]) != 2:
        return None
    names = sorted(manifest["files"])
    bc = [n for n in names if n.endswith(".bc") and n.startswith(f"{key}-")]
    so = [n for n in names if n.endswith(".so") and n.startswith(f"{key}-")]
    if len(bc) != 1 or len(so) != 1 or "/" in bc[0] + so[0]:
        return None
    return bc[0], so[0]


def _shadow_bitcode(tc: Toolchain, shadowed: Sequence[tuple[str, int]], work: Path) -> str:
    """Bitcode defining a zeroed shadow for each active global. They are
    external definitions, so no pass drops them from the primal library; not
    marked ``used``, so a derivative library refers to a shadow only where
    its code does (which tells which derivatives involve which globals)."""
    source = work / "shadows.c"
    source.write_text("".join(
        f"__attribute__((aligned(16))) unsigned char {SHADOW_PREFIX}{name}[{max(size, 1)}] "
        "= {0};\n" for name, size in shadowed))
    out = str(work / "shadows.bc")
    done = run_tool([tc.clang, *PRE_AD_FLAGS, "-emit-llvm", "-c", str(source), "-o", out])
    if done.returncode != 0:
        raise CompileError("enzyme-ffi could not compile the shadow globals (a bug):\n"
                           + done.stderr.strip())
    return out


def _attach_shadows(tc: Toolchain, bitcode: str, names: Sequence[str], work: Path) -> str:
    """Give each named global Enzyme's ``enzyme_shadow`` metadata pointing at
    its shadow (C has no way to say this; the textual IR does)."""
    text_path, out = work / "annotated.ll", str(work / "annotated.bc")
    done = run_tool([tc.llvm_dis, bitcode, "-o", str(text_path)])
    if done.returncode != 0:
        raise CompileError("llvm-dis failed on the module (a bug):\n" + done.stderr.strip())
    text = text_path.read_text()
    nodes = []
    for i, name in enumerate(names):
        node = f"!{900000 + i}"
        text, count = re.subn(rf"^(@{re.escape(name)} = (?!external ).*)$",
                              rf"\1, !enzyme_shadow {node}", text, count=1, flags=re.M)
        if count != 1:
            raise CompileError(f"enzyme-ffi could not find the definition of global '{name}' in "
                               "the module's IR (a bug).")
        nodes.append(f"{node} = !{{ptr @{SHADOW_PREFIX}{name}}}")
    text_path.write_text(text + "\n" + "\n".join(nodes) + "\n")
    done = run_tool([tc.llvm_as, str(text_path), "-o", out])
    if done.returncode != 0:
        raise CompileError("llvm-as rejected the annotated module (a bug):\n" + done.stderr.strip())
    return out


def build_derivative(tc: Toolchain, module: ModuleArtifact, wrapper_source: str,
                     kernel: str, pattern: str) -> Path:
    """Compile a generated wrapper against a module's bitcode through Enzyme;
    return the shared library's path (cached)."""
    material = json.dumps([FORMAT_VERSION, _package_version(), tc.identity, module.bc_sha256,
                           wrapper_source, PRE_AD_FLAGS, _passes(tc, module.split_long_blocks),
                           OPT_FLAGS, POST_AD_PASSES, POST_AD_FLAGS,
                           host_cpu() if module.native_cpu else "", list(module.link_args),
                           _vector_material(tc, module.native_cpu, module.vector_math),
                           list(module.shared_globals), list(module.opt_flags),
                           module.so_path if module.shared_globals else ""])
    key = hashlib.sha256(material.encode()).hexdigest()[:32]
    with _memo_lock:
        hit = _derivative_memo.get(key)
    if hit is not None:
        try:
            if _identity(hit[0]) == hit[1]:
                return hit[0]
        except OSError:
            pass

    def at(root: Path) -> Path:
        entries = private_dir(root / "derivatives")
        manifest_path = entries / f"{key}.json"

        def intact() -> bool:
            manifest = _read_manifest(manifest_path, key)
            return (manifest is not None and set(manifest["files"]) == {f"{key}.so"}
                    and _files_intact(entries, manifest["files"]))

        if not intact():
            on_disk = _module_on_disk(module)
            if on_disk.bc_sha256 != module.bc_sha256:  # rebuilt: its own key
                return build_derivative(tc, on_disk, wrapper_source, kernel, pattern)
            with _key_lock(root, key):
                if not intact():
                    with _progress(f"building {pattern} of '{kernel}'"):
                        _build_derivative_locked(tc, module, wrapper_source, kernel, pattern, key,
                                                 entries, manifest_path)
        return entries / f"{key}.so"

    so_path = _with_cache(at)
    with _memo_lock:
        _derivative_memo[key] = (so_path, _identity(so_path))
    return so_path


def build_helper(tc: Toolchain, source: str, include_dirs: Sequence[str], what: str) -> Path:
    """Compile plain C (no Enzyme: glue such as enzyme.jax's XLA handler) to
    a shared library; cached by the source, the toolchain and the headers it
    includes. Raises :class:`CompileError` with clang's diagnostics."""
    headers = sorted(str(h) for d in include_dirs for h in Path(d).rglob("*.h"))
    material = json.dumps([FORMAT_VERSION, _package_version(), tc.identity, source,
                           [(h, sha256_file(h)) for h in headers]])
    key = hashlib.sha256(material.encode()).hexdigest()[:32]

    def at(root: Path) -> Path:
        entries = private_dir(root / "helpers")
        out = entries / f"{key}.so"
        if out.is_file():
            return out
        with _key_lock(root, key):
            if out.is_file():
                return out
            with tempfile.TemporaryDirectory(dir=entries) as work:
                c_file = Path(work) / "helper.c"
                c_file.write_text(source)
                so = Path(work) / "helper.so"
                done = run_tool([tc.clang, "-std=c11", "-O2", "-fPIC", "-shared",
                                 *(f"-I{d}" for d in include_dirs), str(c_file), "-o", str(so)])
                if done.returncode != 0:
                    raise CompileError(f"compiling {what} failed:\n{done.stderr.strip()}")
                os.replace(so, out)
        return out

    return _with_cache(at)


def _module_on_disk(module: ModuleArtifact) -> ModuleArtifact:
    """``module``, with its bitcode (and, for shared globals, its library) on
    disk as it was built: a derivative build reads them. A module loaded
    before the cache was cleared or damaged is rebuilt; a rebuild that does
    not give the very same code (a header changed meanwhile) cannot serve the
    loaded module, and says so."""
    def intact(artifact: ModuleArtifact) -> bool:
        try:
            return (sha256_file(Path(artifact.bc_path)) == artifact.bc_sha256
                    and (not artifact.shared_globals or os.path.isfile(artifact.so_path)))
        except OSError:
            return False

    if intact(module):
        return module
    if module.rebuild is not None and headers_unchanged(module):
        rebuilt = module.rebuild()
        if rebuilt.bc_sha256 == module.bc_sha256 and intact(rebuilt):
            return rebuilt
        # The same sources, flags, headers and toolchain (the key), compiled
        # again: the same code, but not the same bytes (the bitcode names the
        # temporary file a source string was written to). A derivative needs
        # no more, unless it shares globals with the loaded primal library,
        # whose file the rebuild replaced by another.
        if rebuilt.key == module.key and not module.shared_globals and intact(rebuilt):
            return rebuilt
    raise CacheError(
        f"the module's bitcode {module.bc_path}, which every derivative is built from, was "
        "removed or changed after the module was compiled (was the cache cleared?), and it "
        "could not be rebuilt as it was (its sources or headers changed since). Fix: call "
        "enzyme.compile(...) again and take the kernels from the new module.")


def _build_derivative_locked(tc, module, wrapper_source, kernel, pattern, key, entries,
                             manifest_path) -> None:
    with tempfile.TemporaryDirectory(prefix="build-", dir=entries.parent) as tmp:
        work = Path(tmp)
        wrapper_c = work / "wrapper.c"
        wrapper_c.write_text(wrapper_source)
        # clang links the module's bitcode into the wrapper's as it compiles
        # it (the same linker llvm-link uses): one subprocess fewer per build.
        linked_bc = str(work / "wrapper.bc")
        if module.extra.get("calls_enzyme"):
            # The module's own code calls Enzyme (a reverse derivative made a
            # kernel, to differentiate it again): its functions must come
            # first, since Enzyme v0.0.289 lowers its calls in the order of
            # the module's functions, and an outer derivative met before the
            # inner call it differentiates through fails ("No forward mode
            # derivative found for __enzyme_autodiff...").
            alone = str(work / "wrapper-alone.bc")
            done = run_tool([tc.clang, *PRE_AD_FLAGS, "-emit-llvm", "-c", str(wrapper_c), "-o", alone])
            if done.returncode == 0:
                done = run_tool([tc.llvm_link, module.bc_path, alone, "-o", linked_bc])
        else:
            done = run_tool([tc.clang, *PRE_AD_FLAGS, "-emit-llvm", "-c", str(wrapper_c),
                         "-Xclang", "-mlink-bitcode-file", "-Xclang", module.bc_path, "-o", linked_bc])
        if done.returncode != 0:
            raise DifferentiationError(
                f"enzyme-ffi generated a wrapper for '{kernel}' that clang rejected; this is a "
                f"bug in enzyme-ffi, please report it with this message:\n{done.stderr[-3000:]}",
                kernel=kernel, pattern=pattern, enzyme_message=done.stderr)

        def failure(stderr: str) -> Exception:
            return differentiation_error(stderr, kernel, pattern,
                                         f"Enzyme could not differentiate '{kernel}' as {pattern}:")

        def link_failure(stderr: str) -> Exception:
            return LinkError(f"linking the derivative library of '{kernel}' ({pattern}) failed "
                             f"(the linker's words follow):\n{stderr.strip()[-3000:]}\nFix: check "
                             "that the libraries= the module was compiled with still exist.")

        so = work / f"{key}.so"
        # With shared globals, link against the primal library, which defines them.
        link = [*module.link_args, module.so_path] if module.shared_globals else module.link_args
        _link_and_differentiate(tc, [linked_bc], so, link, work, failure,
                                extern_globals=module.shared_globals, opt_flags=module.opt_flags,
                                split_long_blocks=module.split_long_blocks,
                                native_cpu=module.native_cpu, on_link_error=link_failure,
                                vector_math=module.vector_math)
        files = {f"{key}.so": sha256_file(so)}
        os.replace(so, entries / f"{key}.so")
        atomic_write_bytes(manifest_path, _manifest_bytes({"key": key, "files": files}), 0o600)
