"""Where a lake is: a local directory, or a prefix of an object store (``s3://bucket/prefix``).

:class:`LakeStore` is the one place that knows: the URL of each table, the options
delta-rs takes for the store, how pyarrow reads the store's Parquet files, where a
local lock for the lake's compactions lives, and where the writer's write-ahead log
goes.  Credentials and the endpoint come from the store's standard environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``; delta-rs reads them itself)
or from the ``[lake.storage]`` options (which win); secrets never show in a repr, a
log or the status document (:func:`uns.config_options.masked_options`).

The write-ahead log stays on local disk: a remote lake needs ``lake.wal_dir``
(:func:`wal_dir_of`).  This module loads neither deltalake nor pyarrow (the
engine's process uses it), except :meth:`LakeStore.arrow_filesystem`, on the
reading side.  docs/scale-out.md tells which stores are safe for concurrent writers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, cast
from urllib.parse import unquote

from uns.config import LakeSection
from uns.config_options import masked_options
from uns.errors import LakeError
from uns.lake.wal import wal_dir_for

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = [
    "OPTIONS_ENV",
    "REMOTE_SCHEMES",
    "LakeStore",
    "TableFiles",
    "as_store",
    "is_definition_folder",
    "wal_dir_of",
]

#: explicit store options: name -> value pairs or a mapping
Options = Iterable[tuple[str, str]] | Mapping[str, str]
#: the URL schemes of the object stores delta-rs writes (a plain path or file:// is local)
REMOTE_SCHEMES: Final = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "azure", "adl"})
#: how a lake's explicit options reach the commit worker and the context-id reader (JSON)
OPTIONS_ENV: Final = "UNS_LAKE_STORAGE_OPTIONS"
#: the S3 settings pyarrow needs, by the option names delta-rs takes and their environment twins
_S3_SETTINGS: Final = {
    "access_key": (("aws_access_key_id", "access_key_id"), ("AWS_ACCESS_KEY_ID",)),
    "secret_key": (("aws_secret_access_key", "secret_access_key"), ("AWS_SECRET_ACCESS_KEY",)),
    "session_token": (("aws_session_token", "session_token", "token"), ("AWS_SESSION_TOKEN",)),
    "region": (("aws_region", "region"), ("AWS_REGION", "AWS_DEFAULT_REGION")),
    "endpoint": (("aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint"), ("AWS_ENDPOINT_URL",)),
    "allow_http": (("aws_allow_http", "allow_http"), ("AWS_ALLOW_HTTP",)),
}


class LakeStore:
    """A lake's location and its store options (immutable)."""

    __slots__ = ("_options", "remote", "scheme", "url")

    def __init__(self, location: str | Path, options: Options = ()) -> None:
        text = str(location)
        scheme, sep, rest = text.partition("://")
        scheme = scheme.lower() if sep else ""
        if scheme == "file":
            text, scheme = rest, ""
        if scheme and scheme not in REMOTE_SCHEMES:
            raise LakeError(
                f"unsupported lake URL {text!r} (a directory, or {', '.join(sorted(REMOTE_SCHEMES))}://)"
            )
        if scheme and not rest.strip("/"):
            raise LakeError(f"lake URL {text!r} names no bucket")
        self.scheme = scheme
        self.remote = bool(scheme)
        self.url = f"{scheme}://{rest.strip('/')}" if scheme else text
        pairs = options.items() if isinstance(options, Mapping) else options
        self._options: dict[str, str] = {str(k).lower(): str(v) for k, v in pairs}
        if not self.remote and is_definition_folder(Path(text)):
            raise LakeError(
                f"{text} is the lake's definition in the uns source tree (tables.toml, views/), "
                "not a lake: choose another directory, e.g. ./uns-lake"
            )

    def __repr__(self) -> str:
        shown = masked_options(tuple(sorted(self._options.items())))
        return f"LakeStore({self.url!r}, options={shown!r})"

    def __str__(self) -> str:
        return self.url

    @property
    def local(self) -> Path:
        """The lake's directory (LakeError for a remote lake)."""
        if self.remote:
            raise LakeError(f"the lake at {self.url} is not a local directory")
        return Path(self.url)

    def table_uri(self, table: str) -> str:
        return f"{self.url}/{table}" if self.remote else str(Path(self.url) / table)

    def delta_options(self) -> dict[str, str] | None:
        """The explicit options, for delta-rs's ``storage_options`` (None: none given)."""
        return dict(self._options) or None

    def options_json(self) -> str:
        """The explicit options as :data:`OPTIONS_ENV` carries them to a child process."""
        return json.dumps(self._options)

    def exists(self) -> bool:
        """A local lake's directory exists (a remote lake is found when its tables are read)."""
        return self.remote or Path(self.url).is_dir()

    def lock_dir(self) -> Path:
        """Where this machine's lock of the lake's compactions lives (lake/locks.py): the
        lake's own directory, or for a remote lake one of the system's temporary directory
        named after its URL (so the engines and ``uns lake compact`` of one machine meet)."""
        if not self.remote:
            return Path(self.url)
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / "uns-lake-locks" / digest
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _setting(self, name: str) -> str | None:
        keys, env_names = _S3_SETTINGS[name]
        for key in keys:
            if key in self._options:
                return self._options[key]
        return next((os.environ[e] for e in env_names if os.environ.get(e)), None)

    def arrow_filesystem(self) -> pyarrow.fs.FileSystem:
        """A pyarrow filesystem for reading the store's Parquet files (paths without the
        scheme).  S3 takes the same options and environment as delta-rs; other stores
        use pyarrow's own defaults for their credentials."""
        import pyarrow.fs as pafs  # noqa: PLC0415 - the reading side only

        if self.scheme not in ("s3", "s3a"):
            fs, _path = pafs.FileSystem.from_uri(self.url)
            return fs
        endpoint = self._setting("endpoint")
        scheme = "http" if (self._setting("allow_http") or "").lower() in ("1", "true", "yes") else "https"
        if endpoint and "://" in endpoint:
            scheme, _, endpoint = endpoint.partition("://")
        return pafs.S3FileSystem(
            access_key=self._setting("access_key"),
            secret_key=self._setting("secret_key"),
            session_token=self._setting("session_token"),
            region=self._setting("region") or "us-east-1",
            endpoint_override=endpoint or None,
            scheme=scheme,
        )

    def arrow_path(self, uri: str) -> str:
        """A file URI of this store as :meth:`arrow_filesystem` names it."""
        return uri.partition("://")[2] if self.remote else uri

    def files(self, table: str) -> TableFiles:
        """Read access to the files of ``table`` (its Delta log, its data files)."""
        return TableFiles(self, table)


class TableFiles:
    """The files of one table, read by their path relative to the table as its Delta log
    names them (URL-encoded): from the lake's directory, or through the object store's
    pyarrow filesystem.  What the audit trail needs: the log's commits, the data files'
    bytes (to hash them), whether a file exists."""

    __slots__ = ("_fs", "_root", "local_dir", "store", "table")

    def __init__(self, store: LakeStore, table: str) -> None:
        self.store = store
        self.table = table
        #: the table's directory for a local lake (None for a remote one)
        self.local_dir = None if store.remote else Path(store.url) / table
        self._fs: pyarrow.fs.FileSystem | None = None
        self._root = store.arrow_path(store.table_uri(table))

    def local_path(self, rel: str) -> Path:
        """A local lake's file (LakeError for a remote lake: use :meth:`open`)."""
        if self.local_dir is None:
            raise LakeError(f"the lake at {self.store.url} is not a local directory")
        return self.local_dir / unquote(rel)

    def arrow_path(self, rel: str) -> str:
        """The file as :meth:`LakeStore.arrow_filesystem` names it."""
        return str(self.local_path(rel)) if self.local_dir is not None else f"{self._root}/{unquote(rel)}"

    def filesystem(self) -> pyarrow.fs.FileSystem | None:
        """The remote store's pyarrow filesystem (None: a local lake, plain paths)."""
        if self.local_dir is None and self._fs is None:
            self._fs = self.store.arrow_filesystem()
        return self._fs

    def open(self, rel: str) -> BinaryIO:
        """The file for reading; FileNotFoundError when it is not there."""
        if self.local_dir is not None:
            return self.local_path(rel).open("rb")
        fs = self.filesystem()
        assert fs is not None
        return cast("BinaryIO", fs.open_input_stream(self.arrow_path(rel)))

    def read_text(self, rel: str) -> str | None:
        """The file's text (None when it is not there)."""
        try:
            with self.open(rel) as f:
                return f.read().decode("utf-8")
        except FileNotFoundError:
            return None

    def names(self, rel_dir: str) -> list[str]:
        """The names of the files in a folder of the table (``_delta_log``); [] when it has none."""
        if self.local_dir is not None:
            folder = self.local_dir / rel_dir
            return [p.name for p in folder.iterdir()] if folder.is_dir() else []
        import pyarrow.fs as pafs  # noqa: PLC0415

        fs = self.filesystem()
        assert fs is not None
        selector = pafs.FileSelector(f"{self._root}/{rel_dir}", allow_not_found=True)
        return [info.base_name for info in fs.get_file_info(selector)]

    def exists(self, rel: str) -> bool:
        if self.local_dir is not None:
            return self.local_path(rel).exists()
        import pyarrow.fs as pafs  # noqa: PLC0415

        fs = self.filesystem()
        assert fs is not None
        return bool(fs.get_file_info(self.arrow_path(rel)).type != pafs.FileType.NotFound)


def as_store(location: str | Path | LakeStore, options: Options = ()) -> LakeStore:
    """``location`` as a :class:`LakeStore` (a store is taken as it is)."""
    return location if isinstance(location, LakeStore) else LakeStore(location, options)


def store_from_env(location: str) -> LakeStore:
    """The store a parent process described: its URL and :data:`OPTIONS_ENV`."""
    return LakeStore(location, json.loads(os.environ.get(OPTIONS_ENV) or "{}"))


def wal_dir_of(store: LakeStore, config: LakeSection) -> Path:
    """The writer's write-ahead log directory: ``lake.wal_dir``, else ``<lake>/_wal[-<writer_id>]``
    (a remote lake has no default: its WAL must be on a local disk)."""
    if config.wal_dir:
        return Path(config.wal_dir)
    if store.remote:
        raise LakeError(
            f"the lake at {store.url} is remote: set lake.wal_dir (UNS_LAKE_WAL_DIR) to a local directory"
        )
    return wal_dir_for(store.local, config.writer_id)


def is_definition_folder(path: Path) -> bool:
    """Whether ``path`` is the top-level ``lake/`` folder of a uns checkout (the lake's
    declarative definition), which a lake must never be written into."""
    return (path / "tables.toml").is_file() and (path / "views").is_dir()
