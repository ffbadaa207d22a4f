"""Where enzyme-ffi keeps its files (no policy beyond the XDG conventions)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_dir", "data_dir", "sha256_file", "atomic_write_bytes", "stamped_json",
           "file_identity"]


def cache_dir() -> Path:
    """The compile cache: ``$ENZYME_CACHE_DIR``, else ``$XDG_CACHE_HOME/enzyme-ffi``,
    else ``~/.cache/enzyme-ffi``."""
    explicit = os.environ.get("ENZYME_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "enzyme-ffi"


def data_dir() -> Path:
    """Where the default toolchain provider installs the plugin:
    ``$ENZYME_TOOLCHAIN_DIR``, else ``$XDG_DATA_HOME/enzyme-ffi/toolchain``,
    else ``~/.local/share/enzyme-ffi/toolchain``."""
    explicit = os.environ.get("ENZYME_TOOLCHAIN_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "enzyme-ffi" / "toolchain"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    costs the recomputation.
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
    if not isinstance(table, dict):
        table = {}
    table[key] = {"identity": ident, "facts": facts}
    try:
        atomic_write_bytes(store, json.dumps(table, indent=1).encode(), 0o600)
    except OSError:
        pass
    return facts
