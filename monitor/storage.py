"""Files where they live: local paths or object-store URLs (s3://, gs://, az://), through pyarrow filesystems.

Credentials come from each process's environment by each provider's usual chain, never from the
URL (a URL is shown in logs, errors and records, so one with a user or password is refused):
S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN], AWS_PROFILE or an instance/pod
role, AWS_REGION (else the bucket's region is looked up), and for S3-compatible stores (MinIO,
Ceph, R2 …) AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, as the AWS CLI reads them. GCS: Google's
application default credentials. Azure: AZURE_STORAGE_ACCOUNT_NAME, with AZURE_STORAGE_ACCOUNT_KEY
or Azure's default credential.

Object stores have no rename, but an object appears whole or not at all when its upload
completes: `write_file` uploads in one piece there, and locally writes a dot-file and renames it.
"""
from __future__ import annotations

import functools
import os
import posixpath
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

from monitor.errors import InputError
from monitor.redaction import redact

REMOTE = ("s3", "gs", "az")
LOCAL = pafs.LocalFileSystem()


class StoreError(InputError):
    """A store could not be reached, or answered with an error: one line for the user; a batch job tries again."""


def is_url(path: str) -> bool:
    """Whether `path` names an object in a store (a supported scheme or not) rather than a local file."""
    return "://" in str(path)


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `path` and the path inside it (`bucket/key` in a store, absolute locally)."""
    if not is_url(path):
        return LOCAL, os.path.abspath(path)
    scheme, rest = path.split("://", 1)
    scheme = scheme.lower()
    if scheme not in REMOTE:
        raise InputError(f"{redact(path)}: unsupported storage ({scheme}://); use a local path, s3://, gs:// or az://")
    bucket = rest.split("/", 1)[0]
    if "@" in bucket:
        raise InputError(f"{redact(path)}: credentials in the URL are refused (they would be logged); "
                         f"give them through the environment or a profile")
    if not bucket:
        raise InputError(f"{redact(path)}: no bucket in the URL")
    return _filesystem(scheme, bucket, *_settings(scheme)), rest.rstrip("/")


def _settings(scheme: str) -> tuple:
    """The environment a filesystem is made from (a cache key: tests start stores on new ports)."""
    env = os.environ.get
    if scheme == "s3":
        return env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"), env("AWS_REGION") or env("AWS_DEFAULT_REGION")
    if scheme == "az":
        return (env("AZURE_STORAGE_ACCOUNT_NAME"),)
    return ()


@functools.lru_cache(maxsize=32)
def _filesystem(scheme: str, bucket: str, *settings) -> pafs.FileSystem:
    if scheme == "s3":
        endpoint, region = settings
        if endpoint:
            return pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1")
        return pafs.S3FileSystem(region=region or pafs.resolve_s3_region(bucket))
    if scheme == "gs":
        return pafs.GcsFileSystem()
    account = settings[0]
    if not account:
        raise InputError(f"az://{bucket}: set AZURE_STORAGE_ACCOUNT_NAME (az://CONTAINER/PATH names no account)")
    return pafs.AzureFileSystem(account_name=account, account_key=os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"))


def _location(path: str, inner: str) -> str:
    """`inner` (a path inside the filesystem of `path`) as a path or URL like `path`."""
    return f"{path.split('://', 1)[0]}://{inner}" if is_url(path) else inner


def absolute(path: str) -> str:
    """`path` made absolute (actors do not share the driver's working directory); a URL without a trailing /."""
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def join(base: str, *names: str) -> str:
    """`base`/names, normalised (`..` resolved); a name that is itself absolute or a URL replaces `base`."""
    for name in names:
        if is_url(name) or os.path.isabs(name):
            base = name
        elif is_url(base):
            scheme, rest = base.split("://", 1)
            base = f"{scheme}://{posixpath.normpath(posixpath.join(rest, name)).lstrip('/')}"
        else:
            base = os.path.normpath(os.path.join(base, name))
    return base


def parent(path: str) -> str:
    """The folder (or prefix) holding `path`."""
    if is_url(path):
        scheme, rest = path.rstrip("/").split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return os.path.dirname(os.path.abspath(path))


def _fail(path: str, e: OSError) -> StoreError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return StoreError(f"{redact(path)}: {text}")


def info(path: str) -> pafs.FileInfo:
    fs, inner = resolve(path)
    try:
        return fs.get_file_info(inner)
    except OSError as e:
        raise _fail(path, e) from None


def fingerprint(i: pafs.FileInfo) -> str | None:
    """Size and modification time: a file that changes is scored again."""
    return f"{i.size}:{i.mtime_ns}" if i.type == pafs.FileType.File else None


def files(root: str) -> list[tuple[str, str]]:
    """(path or URL, fingerprint) of every file below `root`, from the listing alone (no file is opened)."""
    fs, inner = resolve(root)
    try:
        found = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    except OSError as e:
        raise _fail(root, e) from None
    return [(_location(root, i.path), fingerprint(i)) for i in found if i.type == pafs.FileType.File]


def fingerprints(paths: list[str]) -> list[str | None]:
    """The fingerprint of each of `paths` (None for a missing file), asked of each filesystem in one call."""
    out: dict[str, str | None] = {}
    by_fs: dict[int, tuple[pafs.FileSystem, list[tuple[str, str]]]] = {}
    for p in paths:
        fs, inner = resolve(p)
        by_fs.setdefault(id(fs), (fs, []))[1].append((p, inner))
    for fs, items in by_fs.values():
        try:
            infos = fs.get_file_info([inner for _, inner in items])
        except OSError as e:
            raise _fail(items[0][0], e) from None
        out.update((p, fingerprint(i)) for (p, _), i in zip(items, infos))
    return [out[p] for p in paths]


def open_input(path: str):
    """A seekable file object on `path` that reads what is asked for (ranged GETs in a store), never the whole file."""
    fs, inner = resolve(path)
    return fs.open_input_file(inner)


def read_bytes(path: str) -> bytes | None:
    """A small file's content (a ledger, a manifest), None when there is none."""
    fs, inner = resolve(path)
    try:
        with fs.open_input_stream(inner) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _fail(path, e) from None


def write_file(path: str, write) -> None:
    """Create `path` with `write(file)` so no reader ever sees part of it: locally a dot-file, fsync, rename;
    in a store one upload of the whole content, made in memory first (a failed upload leaves no object)."""
    fs, inner = resolve(path)
    if fs is not LOCAL:
        buf = pa.BufferOutputStream()
        write(buf)
        with fs.open_output_stream(inner) as f:
            f.write(buf.getvalue())
        return
    folder, name = os.path.split(inner)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, inner)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def delete_tree(path: str) -> None:
    """Remove `path` and all below it; nothing there is fine."""
    fs, inner = resolve(path)
    kind = fs.get_file_info(inner).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(inner)
    elif kind == pafs.FileType.File:
        fs.delete_file(inner)


def replace_tree(src: str, dst: str) -> None:
    """Put the files below `src` (if any) at `dst`, instead of whatever was there: a rename locally; in a store,
    a server-side copy and delete per object (not atomic: the caller records completion after this)."""
    fs, inner = resolve(src)
    _, target = resolve(dst)
    delete_tree(dst)
    if fs is LOCAL:
        if os.path.exists(inner):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(inner, target)
        return
    for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True)):
        if i.type == pafs.FileType.File:
            fs.move(i.path, target + i.path[len(inner):])


def writable(flag: str, path: str) -> None:
    """`path` is a folder (or prefix) we can write in: checked before any work, not after a long run."""
    if not is_url(path):
        if os.path.exists(path) and not os.path.isdir(path):
            raise InputError(f"{flag} {path}: exists and is not a folder")
    probe = join(path, f".vqmon-write-check-{uuid.uuid4().hex[:8]}")
    try:
        write_file(probe, lambda f: None)
        fs, inner = resolve(probe)
        fs.delete_file(inner)
    except OSError as e:
        reason = e.strerror if not is_url(path) and e.strerror else str(e).strip().splitlines()[0]
        raise InputError(f"{flag} {redact(path)}: cannot write there ({reason})") from None
