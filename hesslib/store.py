"""The results store: finished runs and derived results keyed by their configuration.

A store is one folder. Every entry lives in ``<root>/<kind>/<key>/`` and holds its
payload files, a readable ``config.json`` record and a ``manifest.json`` with the
sha256 and size of every file. The key is a hash of the entry's kind and
configuration, so the same configuration always finds the same entry and a second
build of the book recomputes nothing.

The store knows nothing of what it stores: a kind (a folder name such as ``"model"``
or ``"spectrum"``), a JSON-able configuration and files. The key covers exactly what
is in the configuration and nothing else: put the data set, the architecture, the
seed, and the environment (see :func:`environment_fingerprint`) into the
configuration when they should tell two entries apart. Parents recorded with
``parents=`` are provenance only; they do not enter the key.

Layout of a store root::

    <root>/<kind>/<key>/       finished entries (payload, config.json, manifest.json)
    <root>/.tmp/               entries being written; moved into place by os.rename
    <root>/.work/<kind>/<key>/ scratch folders for resumable work (checkpoints)
    <root>/.locks/<kind>/      lock files for :meth:`Store.lock` (left in place)

Writes are atomic: an entry is built in ``.tmp`` and renamed into place, and the
rename fails if another writer got there first, in which case the first entry is
kept. A crash leaves at most a folder in ``.tmp``, which no reader looks at and
:meth:`Store.clean_tmp` removes. The store needs a POSIX file system (rename of a
folder onto a non-empty folder fails; ``fcntl`` locks).

The root is resolved once, when the store is built: the ``root`` argument, else the
environment variable named by :data:`STORE_ENV` (``HESSLIB_STORE``), else
``./.store`` in the current working directory.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import io
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

try:  # POSIX only; without it Store.lock refuses to run.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import torch

__all__ = [
    "STORE_ENV",
    "CorruptEntryError",
    "Entry",
    "EntryInfo",
    "Store",
    "StoreError",
    "atomic_torch_save",
    "atomic_write_bytes",
    "canonical_json",
    "config_key",
    "environment_fingerprint",
]

logger = logging.getLogger(__name__)

STORE_ENV = "HESSLIB_STORE"
"""Environment variable naming the store root when ``Store()`` gets none."""

DEFAULT_ROOT = ".store"
"""Store root, relative to the working directory, when nothing else names one."""

KEY_LENGTH = 16
"""Hex digits kept of the sha256: 64 bits, collision-free for any realistic store."""

STALE_TMP_SECONDS = 24 * 3600.0
"""Age after which a ``.tmp`` folder is a crash leftover: far longer than any put."""

CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
TENSORS_FILE = "tensors.pt"
STATE_DICT_FILE = "state_dict.pt"
JSON_FILE = "data.json"

_RESERVED = frozenset({CONFIG_FILE, MANIFEST_FILE})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_KEY = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")
_HIDDEN = (".tmp", ".work", ".locks")
_CHUNK = 1 << 20

Payload = Mapping[str, bytes | Path] | Callable[[Path], None]


class StoreError(Exception):
    """A store operation was refused: a missing entry, file or bad archive."""


class CorruptEntryError(StoreError):
    """An entry's files do not match its manifest or its configuration."""


# --------------------------------------------------------------------- keys


def _plain(value: Any, where: str, *, finite: bool) -> Any:
    """Return ``value`` as plain JSON types, naming ``where`` when it cannot be."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if finite and not math.isfinite(value):
            raise ValueError(
                f"{where} is {value!r}; a configuration holds finite floats only: "
                "store it as a string such as 'inf'"
            )
        return float(value)
    if isinstance(value, Mapping):
        return _plain_mapping(value, where, finite=finite)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", finite=finite) for i, v in enumerate(value)]
    raise TypeError(
        f"{where} is {value!r} of type {type(value).__name__}, which is not "
        "JSON-able; convert it to str, int, float, bool, None, list or dict "
        "(for example str(path) or float(x))"
    )


def _plain_mapping(value: Mapping, where: str, *, finite: bool) -> dict:
    out = {}
    for name, item in value.items():
        if not isinstance(name, str):
            raise TypeError(
                f"{where} has key {name!r} of type {type(name).__name__}; "
                "keys must be str: convert it with str()"
            )
        out[name] = _plain(item, f"{where}[{name!r}]", finite=finite)
    return out


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a plain name; use letters, digits, '_', '-' "
            "or '.', starting with a letter or digit (at most 128 characters)"
        )
    return value


def canonical_json(kind: str, config: Mapping[str, Any]) -> str:
    """Return the canonical JSON text of ``{"config": config, "kind": kind}``.

    Keys are sorted, tuples become lists, floats are written by their shortest
    round-trip representation (stable across platforms), ints and floats stay
    distinct (``1`` and ``1.0`` differ).

    Args:
        kind: The entry kind, a plain name such as ``"model"``.
        config: A mapping of str to JSON-able values (nested mappings and
            sequences allowed, floats finite).

    Returns:
        Compact JSON text.

    Raises:
        TypeError: A value or key is not JSON-able; the message names the field.
        ValueError: A float is not finite, or ``kind`` is not a plain name.

    Example:
        >>> canonical_json("model", {"lr": 0.1, "arch": ("C1", 2)})
        '{"config":{"arch":["C1",2],"lr":0.1},"kind":"model"}'

    """
    _check_name(kind, "kind")
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config is a {type(config).__name__}; pass a mapping such as a dict"
        )
    plain = {"kind": kind, "config": _plain_mapping(config, "config", finite=True)}
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_key(kind: str, config: Mapping[str, Any]) -> str:
    """Return the entry key: the first 16 hex digits of the canonical JSON's sha256.

    The key covers exactly ``kind`` and what is in ``config``.

    Example:
        >>> config_key("m", {"b": 1, "a": 2}) == config_key("m", {"a": 2, "b": 1})
        True
        >>> len(config_key("model", {}))
        16

    """
    digest = hashlib.sha256(canonical_json(kind, config).encode("utf-8"))
    return digest.hexdigest()[:KEY_LENGTH]


def environment_fingerprint(device_type: str | torch.device) -> dict[str, str]:
    """Return what of the environment can change results, to put into a config.

    Args:
        device_type: The device the results are computed on, as a
            ``torch.device`` or a string; an index (``"cuda:1"``) is dropped.

    Returns:
        ``{"device_type", "torch", "python", "hesslib"}`` as strings. CUDA and
        cuDNN versions and the GPU model are not included.

    Example:
        >>> sorted(environment_fingerprint("cpu"))
        ['device_type', 'hesslib', 'python', 'torch']

    """
    import torch

    from hesslib import __version__

    return {
        "device_type": torch.device(device_type).type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "hesslib": __version__,
    }


# ------------------------------------------------------------ atomic writes


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed to disk
    (fsync) and replace ``path`` with ``os.replace``. Missing folders are created.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = atomic_write_bytes(Path(tmp) / "a.bin", b"abc")
        ...     path.read_bytes()
        b'abc'

    """
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Meant for resumable training checkpoints: a crash mid-save leaves the
    previous checkpoint intact.

    Example:
        >>> import tempfile, torch
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = atomic_torch_save({"step": 3}, Path(tmp) / "ckpt.pt")
        ...     torch.load(path, weights_only=True)
        {'step': 3}

    """
    import torch

    return _atomic_write(path, lambda handle: torch.save(obj, handle))


# ------------------------------------------------------------------ records


@functools.lru_cache(maxsize=1)
def _code_revision() -> str:
    """Return the git commit of the hesslib checkout, or ``"unknown"``."""
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():
        return "unknown"
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _package_version(name: str) -> str:
    module = sys.modules.get(name)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _versions() -> dict[str, str]:
    from hesslib import __version__

    return {
        "hesslib": __version__,
        "python": platform.python_version(),
        "torch": _package_version("torch"),
        "numpy": _package_version("numpy"),
    }


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _parent_ref(parent: EntryInfo | str) -> str:
    if isinstance(parent, EntryInfo):
        return parent.ref
    if isinstance(parent, str):
        kind, _, key = parent.partition("/")
        if _NAME.fullmatch(kind) and _KEY.fullmatch(key):
            return parent
    raise ValueError(
        f"parent {parent!r} is neither an Entry nor a 'kind/key' reference; pass "
        "the Entry returned by put/get or its .ref"
    )


@dataclass(frozen=True)
class EntryInfo:
    """The record of one entry, as read from its ``config.json``.

    Attributes:
        kind: The entry kind, e.g. ``"model"``.
        key: The 16-hex-digit key of ``kind`` and ``config``.
        created: UTC time of creation, ISO 8601.
        config: The configuration, as plain JSON (tuples became lists).
        parents: ``"kind/key"`` references of the entries it was derived from.
        versions: Versions of hesslib, python, torch and numpy that wrote it.
        revision: The git commit of the hesslib checkout, or ``"unknown"``.

    """

    kind: str
    key: str
    created: str
    config: dict[str, Any]
    parents: tuple[str, ...]
    versions: dict[str, str]
    revision: str

    @property
    def ref(self) -> str:
        """The ``"kind/key"`` reference used for ``parents`` and ``export``."""
        return f"{self.kind}/{self.key}"

    @classmethod
    def _from_record(cls, record: Mapping[str, Any]) -> EntryInfo:
        return cls(
            kind=record["kind"],
            key=record["key"],
            created=record["created"],
            config=dict(record["config"]),
            parents=tuple(record["parents"]),
            versions=dict(record["versions"]),
            revision=record["revision"],
        )


@dataclass(frozen=True)
class Entry(EntryInfo):
    """A finished, verified entry: its record, folder and payload file names.

    Attributes:
        path: The entry's folder ``<root>/<kind>/<key>``.
        files: Names of the payload files (without config.json, manifest.json).

    """

    path: Path
    files: tuple[str, ...]

    def file(self, name: str) -> Path:
        """Return the path of payload file ``name``, refusing names not stored."""
        if name not in self.files:
            raise StoreError(
                f"entry {self.path} has no file {name!r}; it holds {list(self.files)}"
            )
        return self.path / name


ParentRef = EntryInfo | str


def _read_json(path: Path, entry: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CorruptEntryError(
            f"entry {entry}: cannot read {path.name} ({error}); remove the entry "
            "and compute it again"
        ) from error


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    names = sorted(p.name for p in folder.iterdir())
    return {
        name: dict(zip(("size", "sha256"), _file_digest(folder / name), strict=True))
        for name in names
        if name != MANIFEST_FILE
    }


def _verify(folder: Path, kind: str, key: str) -> Entry:
    """Check ``folder`` against its manifest and its key, and return its Entry."""
    listed = _read_json(folder / MANIFEST_FILE, folder).get("files")
    present = {p.name for p in folder.iterdir()} - {MANIFEST_FILE}
    if not isinstance(listed, dict) or set(listed) != present:
        raise CorruptEntryError(
            f"entry {folder} holds files {sorted(present)} but its manifest lists "
            f"{sorted(listed or ())}; remove the entry and compute it again"
        )
    for name, expected in listed.items():
        size, digest = _file_digest(folder / name)
        if expected != {"size": size, "sha256": digest}:
            raise CorruptEntryError(
                f"{folder / name}: file {name!r} does not match the manifest of entry "
                f"{folder} ({size} bytes, sha256 {digest[:12]}...); remove the entry "
                "and compute it again"
            )
    return _check_record(folder, kind, key, sorted(present - _RESERVED))


def _check_record(folder: Path, kind: str, key: str, files: list[str]) -> Entry:
    record = _read_json(folder / CONFIG_FILE, folder)
    try:
        info = EntryInfo._from_record(record)
        same = (
            (info.kind, info.key)
            == (kind, key)
            == (kind, config_key(kind, info.config))
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        same = False
    if not same:
        raise CorruptEntryError(
            f"entry {folder}: config.json does not describe a {kind!r} entry with "
            f"key {key}; remove the entry and compute it again"
        )
    return Entry(**vars(info), path=folder, files=tuple(files))  # type: ignore


def _torch_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _cpu_tensors(tensors: Mapping[str, Any], what: str) -> dict[str, Any]:
    import torch

    out = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{what}[{name!r}] is a {type(value).__name__}; only str names and "
                "torch.Tensor values are stored here: use put_json for other data"
            )
        out[name] = value.detach().to("cpu", copy=True)
    return out


# -------------------------------------------------------------------- store


class Store:
    """A folder of entries keyed by kind and configuration.

    Args:
        root: The store folder. ``None`` reads the environment variable
            ``HESSLIB_STORE`` and falls back to ``./.store``. Resolved to an
            absolute path once, here; the folder is created on first write.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> store = Store(tmp.name)
        >>> entry = store.put_json("verdict", {"claim": "C1"}, {"holds": True})
        >>> store.get_json("verdict", {"claim": "C1"})
        {'holds': True}
        >>> [info.kind for info in store.list()]
        ['verdict']
        >>> tmp.cleanup()

    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get(STORE_ENV) or DEFAULT_ROOT
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    key = staticmethod(config_key)

    # ---------------------------------------------------------------- paths

    def _entry_dir(self, kind: str, key: str) -> Path:
        return self.root / _check_name(kind, "kind") / key

    def _tmp_dir(self, prefix: str) -> Path:
        parent = self.root / ".tmp"
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))

    # --------------------------------------------------------------- writes

    def put(
        self,
        kind: str,
        config: Mapping[str, Any],
        files: Payload,
        *,
        parents: Iterable[ParentRef] = (),
    ) -> Entry:
        """Store an entry, or return the one already stored under the same key.

        Args:
            kind: The entry kind, a plain name.
            config: The JSON-able configuration the key is computed from.
            files: Either a mapping of file name to ``bytes`` or to a ``Path`` to
                copy, or a callback ``writer(folder)`` that writes the payload
                files into ``folder`` (flat, plain names).
            parents: Entries (or ``"kind/key"`` references) this result was
                derived from; recorded in config.json, not part of the key.

        Returns:
            The verified entry. If one existed already, it is returned unchanged
            and ``files`` is not used: the same key means the same content.

        Raises:
            ValueError: A file name or parent reference is not valid.
            CorruptEntryError: An existing entry under this key is corrupt.

        """
        key = config_key(kind, config)
        refs = [_parent_ref(parent) for parent in parents]
        existing = self.get(kind, config)
        if existing is not None:
            logger.debug("store: %s/%s present, kept", kind, key)
            return existing
        staging = self._tmp_dir(f"{kind}-{key}")
        try:
            self._write_payload(staging, files)
            self._write_record(staging, kind, key, config, refs)
            return self._place(staging, kind, key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_payload(self, folder: Path, files: Payload) -> None:
        if callable(files):
            files(folder)
        else:
            for name, data in files.items():
                target = folder / _check_name(name, "file name")
                if isinstance(data, (bytes, bytearray, memoryview)):
                    target.write_bytes(bytes(data))
                elif isinstance(data, os.PathLike):
                    shutil.copyfile(data, target)
                else:
                    raise TypeError(
                        f"files[{name!r}] is a {type(data).__name__}; pass bytes or a "
                        "Path to copy (encode text with .encode())"
                    )
        for path in folder.iterdir():
            _check_name(path.name, "file name")
            if path.name in _RESERVED or not path.is_file() or path.is_symlink():
                raise ValueError(
                    f"payload {path.name!r} is reserved or not a plain file; write "
                    "plain files other than config.json and manifest.json"
                )

    def _write_record(
        self, folder: Path, kind: str, key: str, config: Mapping, parents: list[str]
    ) -> None:
        record = {
            "kind": kind,
            "key": key,
            "config": json.loads(canonical_json(kind, config))["config"],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "parents": parents,
            "versions": _versions(),
            "revision": _code_revision(),
        }
        text = json.dumps(record, indent=2, sort_keys=True)
        (folder / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
        manifest = json.dumps({"files": _manifest(folder)}, indent=2, sort_keys=True)
        (folder / MANIFEST_FILE).write_text(manifest + "\n", encoding="utf-8")
        for path in folder.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(folder)

    def _place(self, staging: Path, kind: str, key: str) -> Entry:
        """Rename a written folder into place unless another writer was first."""
        target = self._entry_dir(kind, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, target)
        except OSError as error:
            if not target.is_dir():
                raise
            logger.debug("store: %s lost the race (%s), kept the first", target, error)
        else:
            _fsync_dir(target.parent)
        return _verify(target, kind, key)

    # ---------------------------------------------------------------- reads

    def get(
        self, kind: str, config: Mapping[str, Any], *, verify: bool = True
    ) -> Entry | None:
        """Return the entry for ``kind`` and ``config``, or ``None`` if absent.

        Args:
            kind: The entry kind.
            config: The configuration it was stored with.
            verify: Check every file's size and sha256 against the manifest.
                Without it only the record is checked.

        Raises:
            CorruptEntryError: A file does not match; the message names the entry
                folder and the file.

        """
        return self.get_by_key(kind, config_key(kind, config), verify=verify)

    def get_by_key(self, kind: str, key: str, *, verify: bool = True) -> Entry | None:
        """Return the entry ``<kind>/<key>`` (e.g. a parent), or ``None``."""
        folder = self._entry_dir(kind, key)
        if not _KEY.fullmatch(key) or not folder.is_dir():
            return None
        if verify:
            return _verify(folder, kind, key)
        files = {p.name for p in folder.iterdir()} - _RESERVED
        return _check_record(folder, kind, key, sorted(files))

    def has(self, kind: str, config: Mapping[str, Any]) -> bool:
        """Return whether an entry exists (without verifying its files)."""
        return self._entry_dir(kind, config_key(kind, config)).is_dir()

    # ------------------------------------------------------ typed payloads

    def put_tensors(
        self,
        kind: str,
        config: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        *,
        parents: Iterable[ParentRef] = (),
    ) -> Entry:
        """Store named tensors (copied to CPU, detached) in ``tensors.pt``."""
        data = _torch_bytes(_cpu_tensors(tensors, "tensors"))
        return self.put(kind, config, {TENSORS_FILE: data}, parents=parents)

    def get_tensors(
        self, kind: str, config: Mapping[str, Any], *, map_location: Any = "cpu"
    ) -> dict[str, torch.Tensor] | None:
        """Load tensors stored by :meth:`put_tensors` (``weights_only=True``)."""
        return self._load_torch(kind, config, TENSORS_FILE, map_location)

    def put_state_dict(
        self,
        kind: str,
        config: Mapping[str, Any],
        state: Mapping[str, torch.Tensor] | torch.nn.Module,
        *,
        parents: Iterable[ParentRef] = (),
    ) -> Entry:
        """Store a model's state dict (or a module's) in ``state_dict.pt``."""
        if hasattr(state, "state_dict"):
            state = state.state_dict()
        data = _torch_bytes(_cpu_tensors(state, "state_dict"))
        return self.put(kind, config, {STATE_DICT_FILE: data}, parents=parents)

    def get_state_dict(
        self, kind: str, config: Mapping[str, Any], *, map_location: Any = "cpu"
    ) -> dict[str, torch.Tensor] | None:
        """Load a state dict stored by :meth:`put_state_dict`, or ``None``."""
        return self._load_torch(kind, config, STATE_DICT_FILE, map_location)

    def _load_torch(
        self, kind: str, config: Mapping, name: str, map_location: Any
    ) -> Any:
        import torch

        entry = self.get(kind, config)
        if entry is None:
            return None
        return torch.load(
            entry.file(name), map_location=map_location, weights_only=True
        )

    def put_json(
        self,
        kind: str,
        config: Mapping[str, Any],
        data: Any,
        *,
        parents: Iterable[ParentRef] = (),
    ) -> Entry:
        """Store JSON-able ``data`` (a table, a verdict) in ``data.json``.

        Key order is kept, tuples come back as lists, and NaN and infinities are
        allowed (Python's JSON dialect).

        Raises:
            TypeError: A value is not JSON-able; the message names where.

        """
        plain = _plain(data, "data", finite=False)
        text = json.dumps(plain, indent=2) + "\n"
        return self.put(kind, config, {JSON_FILE: text.encode()}, parents=parents)

    def get_json(self, kind: str, config: Mapping[str, Any]) -> Any:
        """Load data stored by :meth:`put_json`; ``None`` if there is no entry."""
        entry = self.get(kind, config)
        if entry is None:
            return None
        return json.loads(entry.file(JSON_FILE).read_text(encoding="utf-8"))

    # --------------------------------------------------------- maintenance

    def list(self, kind: str | None = None) -> list[EntryInfo]:
        """Return the records of all entries (of one ``kind``), oldest first.

        Files are not verified; an entry whose config.json cannot be read is
        skipped with a warning.
        """
        if kind is not None:
            kinds = [self.root / _check_name(kind, "kind")]
        elif self.root.is_dir():
            kinds = [p for p in self.root.iterdir() if p.name not in _HIDDEN]
        else:
            kinds = []
        infos = [info for folder in kinds for info in self._list_kind(folder)]
        return sorted(infos, key=lambda info: (info.created, info.kind, info.key))

    def _list_kind(self, folder: Path) -> Iterator[EntryInfo]:
        if not folder.is_dir() or not _NAME.fullmatch(folder.name):
            return
        for path in sorted(folder.iterdir()):
            if not _KEY.fullmatch(path.name):
                continue
            try:
                yield self.get_by_key(folder.name, path.name, verify=False)
            except CorruptEntryError as error:
                warnings.warn(f"skipping entry: {error}", stacklevel=3)

    def remove(self, kind: str, key: str) -> bool:
        """Remove entry ``<kind>/<key>``; return whether there was one.

        The folder is first renamed out of place, so readers never see half of it.
        """
        folder = self._entry_dir(kind, key)
        if not _KEY.fullmatch(key) or not folder.is_dir():
            return False
        trash = self._tmp_dir(f"removed-{kind}-{key}")
        os.rename(folder, trash / key)
        shutil.rmtree(trash)
        return True

    def clean_tmp(self, *, older_than: float = STALE_TMP_SECONDS) -> int:
        """Remove ``.tmp`` folders left by crashed writers; return how many.

        Args:
            older_than: Minimum age in seconds (by modification time), so that
                writers still running are left alone.

        """
        parent = self.root / ".tmp"
        if not parent.is_dir():
            return 0
        now = time.time()
        stale = [p for p in parent.iterdir() if now - p.stat().st_mtime >= older_than]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return len(stale)

    # ------------------------------------------------------ work and locks

    def workdir(self, kind: str, config: Mapping[str, Any]) -> Path:
        """Return (and create) the scratch folder ``<root>/.work/<kind>/<key>``.

        Resumable work, such as a training run's checkpoints, lives here until it
        is stored with :meth:`put`; then :meth:`remove_workdir` deletes it.
        """
        path = self.root / ".work" / _check_name(kind, "kind")
        path = path / config_key(kind, config)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_workdir(self, kind: str, config: Mapping[str, Any]) -> None:
        """Delete the scratch folder of ``kind`` and ``config`` if it exists."""
        path = self.root / ".work" / _check_name(kind, "kind")
        shutil.rmtree(path / config_key(kind, config), ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, kind: str, config: Mapping[str, Any]) -> Iterator[None]:
        """Hold an exclusive inter-process lock for one key (``fcntl.flock``).

        Use it around work that should run once, e.g. training before ``put``.
        ``put`` itself does not take it (it relies on an atomic rename), so it
        is safe to call inside. Not re-entrant within one process.
        """
        if fcntl is None:  # pragma: no cover - Windows
            raise StoreError("Store.lock needs fcntl (POSIX); run on Linux or macOS")
        path = self.root / ".locks" / _check_name(kind, "kind")
        path.mkdir(parents=True, exist_ok=True)
        with open(path / f"{config_key(kind, config)}.lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------ export, import

    def export(
        self, path: str | Path, entries: Iterable[ParentRef] | None = None
    ) -> Path:
        """Write entries (all by default) to one ``.tar`` or ``.tar.gz`` archive.

        Every entry is verified first. The archive holds ``<kind>/<key>/<file>``.

        Args:
            path: The archive to write; ``.gz`` or ``.tgz`` compresses.
            entries: Entries, records or ``"kind/key"`` references.

        Raises:
            StoreError: A named entry does not exist.
            CorruptEntryError: An entry does not match its manifest.

        """
        refs = [info.ref for info in self.list()] if entries is None else entries
        found = [self._must_get(_parent_ref(ref)) for ref in refs]
        mode = "w:gz" if str(path).endswith((".gz", ".tgz")) else "w"

        def write(handle: IO[bytes]) -> None:
            with tarfile.open(fileobj=handle, mode=mode) as archive:
                for entry in found:
                    for name in sorted(p.name for p in entry.path.iterdir()):
                        arcname = f"{entry.ref}/{name}"
                        archive.add(entry.path / name, arcname, filter=_anonymous)

        return _atomic_write(path, write)

    def _must_get(self, ref: str) -> Entry:
        kind, _, key = ref.partition("/")
        entry = self.get_by_key(kind, key)
        if entry is None:
            raise StoreError(f"no entry {ref} in {self.root}; see Store.list()")
        return entry

    def import_archive(self, path: str | Path) -> list[EntryInfo]:
        """Add the entries of an archive written by :meth:`export`.

        All entries are checked against their manifests and keys before any is
        added; entries already present are kept.

        Returns:
            The records of the archive's entries.

        Raises:
            CorruptEntryError: The archive holds a tampered or malformed entry;
                nothing is imported.

        """
        staging = self._tmp_dir("import")
        try:
            with tarfile.open(path) as archive:
                refs = _unpack(archive, staging, Path(path))
            for kind, key in refs:
                try:
                    _verify(staging / kind / key, kind, key)
                except CorruptEntryError as error:
                    raise CorruptEntryError(
                        f"archive {path} refused, nothing imported: {error}"
                    ) from error
            return [self._place(staging / kind / key, kind, key) for kind, key in refs]
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _unpack(archive: tarfile.TarFile, staging: Path, path: Path) -> list[tuple]:
    """Copy the archive's regular files into ``staging``; return (kind, key) pairs."""
    refs: dict[tuple[str, str], None] = {}
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.isdir() and 1 <= len(parts) <= 2:
            continue
        ok = member.isfile() and len(parts) == 3 and _KEY.fullmatch(parts[1])
        if not ok or not all(_NAME.fullmatch(part) for part in parts):
            raise CorruptEntryError(
                f"archive {path}: member {member.name!r} is not a <kind>/<key>/<file> "
                "regular file; import only archives written by Store.export"
            )
        target = staging.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.extractfile(member) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
        refs[parts[0], parts[1]] = None
    return list(refs)
