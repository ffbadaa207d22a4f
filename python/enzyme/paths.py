"""Where enzyme-ffi keeps its files (the XDG conventions), what makes a
directory the compile cache, and which cache directory this process uses
(a private temporary one when the configured one is unusable or unsafe).
Every stage that keeps files (the toolchain's probes, the builds) asks here."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import warnings
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from .errors import CacheError

__all__ = ["env_seconds", "cache_dir", "data_dir", "sha256_file", "atomic_write_bytes", "stamped_json",
           "file_identity", "NotRegularFileError", "CACHE_MARKER", "CACHE_LAYOUT", "is_marked_cache",
           "foreign_entries", "claim_cache_root", "clear_cache", "cache_root", "private_dir",
           "fallback_root", "abandon_cache", "CACHE_SUBDIRS", "get_include"]

# The Cache Directory Tagging convention (backup tools skip such a directory),
# with a line of our own: only a tag naming enzyme-ffi makes a directory ours.
CACHE_MARKER = "CACHEDIR.TAG"
_MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This file is a cache directory tag created by enzyme-ffi.\n"
                "# `python -m enzyme cache clear` deletes only what enzyme-ffi created here.\n")
_MARKER_LINE = "created by enzyme-ffi"
# Everything the cache itself creates in its root: entry directories, the
# toolchain probe store, temporary build directories and the temporary files
# of atomic writes (left behind by a killed process).
CACHE_LAYOUT = ("modules", "derivatives", "objects", "locks", "toolchain-probe.json", CACHE_MARKER)
_LAYOUT_PATTERNS = ("build-*", ".*.tmp")
_MARKER_TEMPORARY = f".{CACHE_MARKER}.*.tmp"  # atomic_write_bytes's name for it

_resolved_lock = threading.Lock()
_resolved: dict[tuple[str, ...], Path] = {}


def cache_dir() -> Path:
    """The compile cache: ``$ENZYME_CACHE_DIR``, else ``$XDG_CACHE_HOME/enzyme-ffi``,
    else ``~/.cache/enzyme-ffi``, as an absolute path with symlinks resolved.

    Resolved once per setting: build directories and recorded dependencies
    are compared as real paths, so a relative or symlinked spelling of the
    directory would make every entry look changed (and a relative one would
    move with the working directory)."""
    explicit = os.environ.get("ENZYME_CACHE_DIR") or ""
    xdg = os.environ.get("XDG_CACHE_HOME") or ""
    key = (explicit, xdg, os.environ.get("HOME") or "")
    with _resolved_lock:
        known = _resolved.get(key)
    if known is not None:
        return known
    variable = "ENZYME_CACHE_DIR" if explicit else "XDG_CACHE_HOME" if xdg else "HOME"
    try:
        if explicit:
            path = Path(explicit).expanduser()
        else:
            base = xdg or str(Path.home() / ".cache")
            path = Path(base).expanduser() / "enzyme-ffi"
        path = Path(os.path.realpath(path))
    except (RuntimeError, KeyError, OSError, ValueError) as exc:
        # "~nosuchuser/...", no home directory, a NUL in the value
        raise CacheError(f"the cache directory cannot be located from {variable}="
                         f"{os.environ.get(variable, '')!r}: {str(exc).rstrip('.')}. Fix: set ENZYME_CACHE_DIR to an "
                         "absolute path of a directory only you can write.") from exc
    with _resolved_lock:
        _resolved[key] = path
    return path


def data_dir() -> Path:
    """Where the default toolchain provider installs the plugin:
    ``$ENZYME_TOOLCHAIN_DIR``, else ``$XDG_DATA_HOME/enzyme-ffi/toolchain``,
    else ``~/.local/share/enzyme-ffi/toolchain``."""
    explicit = os.environ.get("ENZYME_TOOLCHAIN_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "enzyme-ffi" / "toolchain"


class NotRegularFileError(OSError):
    """A file to hash is a device, FIFO, socket or directory: reading it may
    never end (``/dev/zero``) or block (a FIFO), so it is never hashed."""


def sha256_file(path: Path) -> str:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat on the open
    # descriptor, not a stat before open, so a swap in between cannot slip a
    # device past the check.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{path} is not a regular file (mode {mode:o})")
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_TIMEOUT = 7 * 86400.0  # beyond this a "timeout" is a typo (and poll() takes at most ~24 days)


def env_seconds(name: str, default: float, error: type[Exception] = CacheError) -> float:
    """A timeout from environment variable ``name`` (``default`` when unset),
    or ``error`` saying how to fix a value that is not a number of seconds
    in (0, 7 days] (``nan``, ``0`` and ``-1`` included: none of them means
    "no timeout" here)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 < value <= MAX_TIMEOUT):  # also refuses nan
        raise error(f"{name}={raw!r} is not a usable timeout: it must be a number of seconds "
                    f"greater than 0 and at most {MAX_TIMEOUT:.0f} (7 days). Fix: set it to, "
                    f"e.g., {default:g} (the default), or unset it.")
    return value


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new
    one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def file_identity(path: str | os.PathLike) -> tuple[int, int, int]:
    """(size, mtime_ns, inode): changes when a file is rewritten or replaced."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def stamped_json(store: Path, subject: Path, compute: Callable[[], dict], variant: str = "") -> dict:
    """Facts about ``subject`` (a file) computed once and remembered in
    ``store`` until the file's size, mtime or inode changes. ``variant``
    separates facts that also depend on something else (another tool).

    Probing a toolchain costs subprocesses and hashing; remembering it keeps a
    warm ``enzyme.compile`` free of both. A broken or unwritable store only
    costs the recomputation. Facts marked ``"transient": True`` (a probe
    that timed out or could not start) are returned but not remembered, so
    the next process asks again.
    """
    key = str(subject.resolve()) + (f" | {variant}" if variant else "")
    ident = list(file_identity(subject))  # JSON stores it as a list
    try:
        table = json.loads(store.read_text())
        entry = table.get(key)
        if entry and entry.get("identity") == ident:
            return entry["facts"]
    except (OSError, ValueError, AttributeError):
        table = {}
    facts = compute()
    if facts.get("transient"):
        return facts
    if not isinstance(table, dict):
        table = {}
    table[key] = {"identity": ident, "facts": facts}
    try:
        atomic_write_bytes(store, json.dumps(table, indent=1).encode(), 0o600)
    except OSError:
        pass
    return facts


# ---- What is a cache directory ----------------------------------------------
# `cache clear` deletes files, so it must only ever delete what the cache made:
# the root carries a marker written when the cache claims it, and only the
# names of the cache's own layout are deleted from a marked root.

def is_marked_cache(root: Path) -> bool:
    """Does ``root`` (a directory) carry enzyme-ffi's cache marker?"""
    marker = root / CACHE_MARKER
    try:
        if not stat.S_ISREG(os.lstat(marker).st_mode):
            return False
        with open(marker, errors="replace") as handle:
            return _MARKER_LINE in handle.read(4096)
    except OSError:
        return False


def _is_layout_name(name: str) -> bool:
    return name in CACHE_LAYOUT or any(fnmatch.fnmatchcase(name, p) for p in _LAYOUT_PATTERNS)


def foreign_entries(root: Path) -> list[str]:
    """The names in ``root`` that the cache does not create, sorted."""
    return sorted(name for name in os.listdir(root) if not _is_layout_name(name))


def claim_cache_root(root: Path) -> None:
    """Mark ``root`` (an existing directory) as enzyme-ffi's cache, unless it
    is marked already. An unmarked directory is claimed only when it is
    empty (but for another process's marker being written): a directory
    holding anything is someone's, even when the names look like the
    cache's own (a user's ``modules/``), and a :class:`CacheError` says so
    (nothing is written to it)."""
    if is_marked_cache(root):
        return
    held = sorted(n for n in os.listdir(root) if not fnmatch.fnmatchcase(n, _MARKER_TEMPORARY))
    if held:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise CacheError(f"{root} is not an enzyme-ffi cache directory: it has no {CACHE_MARKER} "
                         f"marker and holds {shown}. Fix: set ENZYME_CACHE_DIR to a new or empty "
                         "directory (or, if it is an old enzyme-ffi cache, delete it).")
    atomic_write_bytes(root / CACHE_MARKER, _MARKER_TEXT.encode(), 0o600)


def clear_cache(root: Path) -> tuple[list[str], list[str]]:
    """Delete what the cache created in ``root``: (deleted names, names kept).

    Raises :class:`CacheError`, deleting nothing, when ``root`` is a regular
    file, a symlink to something that is not a marked cache, or a non-empty
    directory without the cache's marker. The root itself is removed only
    when nothing else is left in it."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise CacheError(f"cannot inspect the cache directory {root}: {exc}.") from exc
    linked = stat.S_ISLNK(st.st_mode)
    if linked:
        target = Path(os.path.realpath(root))
        if not (target.is_dir() and is_marked_cache(target)):
            raise CacheError(f"{root} is a symbolic link to {target}, which is not an enzyme-ffi "
                             "cache directory; nothing was deleted. Fix: point ENZYME_CACHE_DIR at "
                             "the cache directory itself.")
        root = target
    elif not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"{root} is not a directory, so not an enzyme-ffi cache; nothing was "
                         "deleted. Fix: point ENZYME_CACHE_DIR at the cache directory.")
    marked = is_marked_cache(root)
    foreign = foreign_entries(root)
    if not marked and os.listdir(root):
        # Names alone prove nothing: a user's modules/ or build-2024/ would
        # match the layout (and went, with their contents).
        held = foreign or sorted(os.listdir(root))
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise CacheError(f"{root} is not an enzyme-ffi cache directory (no {CACHE_MARKER} marker; "
                         f"it holds {shown}); nothing was deleted. Fix: point ENZYME_CACHE_DIR at "
                         "the cache directory, or delete it yourself.")
    deleted = []
    # The marker goes last (an interrupted clear leaves a directory still
    # known as ours), and stays while anything of someone else's remains.
    names = sorted((n for n in os.listdir(root) if _is_layout_name(n)
                    and not (foreign and n == CACHE_MARKER)), key=lambda n: n == CACHE_MARKER)
    for name in names:
        path = root / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()  # a symlink is removed, never followed
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CacheError(f"could not delete {path}: {exc}.") from exc
        deleted.append(name)
    if not foreign and not linked:  # the link would point nowhere
        try:
            root.rmdir()  # empty by now; rmdir cannot delete anything else
        except OSError:
            pass
    return deleted, foreign


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if needed and check that only this user can
    write it: shared libraries in it are loaded into the process."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} is owned by uid {st.st_uid}, not by you")
    if st.st_mode & 0o022:
        raise PermissionError(f"{path} is writable by other users (mode {st.st_mode & 0o777:o})")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path} is not writable")
    return path


_fallback_root: Path | None = None
_refused_roots: set[str] = set()  # warn once per refused directory, not per compile
_cache_abandoned = False  # the cache failed mid-build: use the fallback from now on
# The cache's subdirectories hold libraries that get loaded too: each one is
# checked as the root is (a world-writable modules/ is as bad as a root).
CACHE_SUBDIRS = ("modules", "derivatives", "objects", "locks")


def cache_root() -> Path:
    """The cache directory, created private (0700) and marked as enzyme-ffi's
    (see ``paths.claim_cache_root``). When it cannot be located, created or
    written, when others could plant files in it or in its subdirectories,
    or when it is someone's directory rather than a cache, a private
    temporary directory is used instead, with a warning: cache trouble never
    breaks a compile."""
    if _cache_abandoned:
        return fallback_root()
    shown = os.environ.get("ENZYME_CACHE_DIR", "")
    try:
        root = cache_dir()
        shown = str(root)
        private_dir(root)
        claim_cache_root(root)
        for sub in CACHE_SUBDIRS:
            private_dir(root / sub)
        return root
    except (OSError, CacheError) as exc:
        fallback = fallback_root()
        if shown not in _refused_roots:
            _refused_roots.add(shown)
            warnings.warn(f"enzyme-ffi: cache dir {shown} refused ({exc}); using the private "
                          f"temporary dir {fallback} for this process. Set "
                          "ENZYME_CACHE_DIR to a directory only you can write.", stacklevel=3)
        return fallback


def fallback_root() -> Path:
    """The private temporary cache of this process (made on first use)."""
    global _fallback_root
    if _fallback_root is None:
        # realpath: $TMPDIR may be a symlink, and build paths are compared as real paths
        _fallback_root = Path(os.path.realpath(tempfile.mkdtemp(prefix="enzyme-ffi-cache-")))
        with suppress(OSError, CacheError):
            claim_cache_root(_fallback_root)
    return _fallback_root


def abandon_cache() -> Path:
    """The cache failed under a build: use the private temporary cache for the
    rest of the process; returns it."""
    global _cache_abandoned
    _cache_abandoned = True
    return fallback_root()


def get_include() -> str:
    """Directory of the shipped C header, for ``#include <enzyme/enzyme.h>``.

    Examples
    --------
    >>> import os, enzyme
    >>> os.path.exists(os.path.join(enzyme.get_include(), "enzyme", "enzyme.h"))
    True
    """
    return _INCLUDE_DIR


_INCLUDE_DIR = str(Path(__file__).resolve().parent / "include")
