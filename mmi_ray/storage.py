"""Small file helpers that work on local paths and on storage URIs (s3://, gs://) via pyarrow."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from .errors import StorageError


def is_uri(path: str) -> bool:
    return "://" in path


RESULTS_ENV = "MMI_RAY_RESULTS"
JOB_RESULTS_DEFAULT = "~/mmi-ray-results"


def in_ray_job() -> bool:
    """Whether this process is a ``ray job submit`` driver: its working directory is a package Ray
    unpacked for the job (and deletes later)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ or "working_dir_files" in Path.cwd().parts


def results_root() -> Path:
    """Where a relative storage path (``run.storage_path``, a spec's ``storage_path``) lands:
    ``$MMI_RAY_RESULTS`` when set; under ``ray job submit``, ``~/mmi-ray-results`` on the node that
    runs the job's driver (the head, by default), since the job's working directory is deleted with
    the job; otherwise the directory the command runs in."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser()
    if in_ray_job():
        return Path(JOB_RESULTS_DEFAULT).expanduser()
    return Path.cwd()


def resolve_storage(path: str) -> str:
    """A storage URI as it is; a local path made absolute (a relative one under ``results_root()``)."""
    if is_uri(path):
        return path
    return str((results_root() / Path(path).expanduser()).resolve())


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


RETRY_ATTEMPTS_ENV = "MMI_RAY_STORAGE_RETRIES"
PATIENT_ATTEMPTS = 8
"""Tries of each request to an S3 endpoint (the AWS SDK's standard retry: backoff doubling up to
20 s): 8 wait out an endpoint gone for about 50 s, so a short outage costs a pause, not a failed
trial. ``MMI_RAY_STORAGE_RETRIES`` sets it."""
_FILESYSTEMS: dict[tuple, object] = {}


def filesystem_of(path: str, patient: bool = True):
    """(pyarrow filesystem, path in it) of a URI, one filesystem per bucket and kind. An s3:// one
    retries a failing request ``PATIENT_ATTEMPTS`` times (pyarrow's default gives up within about a
    second), or 2 times when not ``patient`` (a start-up check that must answer in seconds); its
    endpoint is ``AWS_ENDPOINT_URL`` when set, as ``FileSystem.from_uri`` takes it."""
    from pyarrow import fs

    scheme, _, rest = path.partition("://")
    if scheme.lower() != "s3" or "?" in rest:  # other stores, or options in the URI: pyarrow's reading
        return fs.FileSystem.from_uri(path)
    attempts = int(os.environ.get(RETRY_ATTEMPTS_ENV, PATIENT_ATTEMPTS)) if patient else 2
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    key = (rest.split("/", 1)[0], endpoint, attempts)
    if key not in _FILESYSTEMS:  # from_uri asks the endpoint for the bucket's region: once per bucket
        region = fs.FileSystem.from_uri(path)[0].region
        _FILESYSTEMS[key] = fs.S3FileSystem(region=region, endpoint_override=endpoint,
                                            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts))
    return _FILESYSTEMS[key], rest.rstrip("/")


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def parent(path: str) -> str:
    if is_uri(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return str(Path(path).parent)


def listdir(path: str) -> list[str]:
    """The names in a folder (files and folders), sorted; empty when it does not exist."""
    if not is_uri(path):
        p = Path(path)
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []
    from pyarrow import fs

    filesystem, p = filesystem_of(path)
    try:
        infos = filesystem.get_file_info(fs.FileSelector(p, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(basename(i.path) for i in infos)


def isdir(path: str) -> bool:
    if not is_uri(path):
        return Path(path).is_dir()
    from pyarrow import fs

    filesystem, p = filesystem_of(path)
    return filesystem.get_file_info(p).type == fs.FileType.Directory


def remove(path: str) -> None:
    """Delete a folder and what it holds (nothing when it is not there)."""
    if not is_uri(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    filesystem, p = filesystem_of(path)
    try:
        filesystem.delete_dir(p)
    except FileNotFoundError:
        pass


def upload_dir(local: str | Path, uri: str, last: tuple[str, ...] = ()) -> None:
    """Copy a local folder's files to ``uri``; the files named in ``last`` go after all others (a
    reader that finds them finds the whole folder)."""
    files = sorted((f for f in Path(local).rglob("*") if f.is_file()),
                   key=lambda f: (f.name in last, str(f)))
    filesystem, root = filesystem_of(uri)
    for f in files:
        rel = f.relative_to(local).as_posix()
        with filesystem.open_output_stream(f"{root}/{rel}") as out, open(f, "rb") as src:
            shutil.copyfileobj(src, out, 2**22)


def absolute(path: str | Path) -> str:
    """A folder's one name: a URI without a trailing slash, a local path resolved (links followed)."""
    path = str(path)
    return path.rstrip("/") if is_uri(path) else str(Path(path).expanduser().resolve())


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def copy_dir(src: str, dst: str) -> None:
    """Copy a folder whole or not at all, within one storage: local files hard-linked where the disk
    allows (checkpoint files are never written to again), a URI's objects copied by the server
    (nothing passes through this machine); on a URI the copy is made in place, file by file."""
    if not is_uri(src):
        tmp = Path(dst).with_name(f".tmp_{Path(dst).name}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, copy_function=_link_or_copy)
        tmp.rename(dst)
        return
    from pyarrow import fs

    filesystem, root = filesystem_of(src)
    _, target = filesystem_of(dst)
    for info in filesystem.get_file_info(fs.FileSelector(root, recursive=True)):
        if info.type == fs.FileType.File:
            filesystem.copy_file(info.path, target + info.path[len(root):])


CACHE_ENV = "MMI_RAY_CACHE"


def cache_root() -> Path:
    """Where files read from storage URIs are kept on this machine: ``$MMI_RAY_CACHE``, else
    ``~/.cache/mmi-ray``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmi-ray").expanduser()


def local_dir(path: str | Path) -> Path:
    """A folder as a local path: a local one as it is; a URI's files downloaded into this machine's
    cache (``cache_root()/storage``; a file already there with the same size is kept: run folders
    and checkpoints are written once)."""
    path = str(path)
    if not is_uri(path):
        return Path(path)
    import hashlib

    from pyarrow import fs

    filesystem, root = filesystem_of(path)
    dest = cache_root() / "storage" / hashlib.sha1(path.rstrip("/").encode()).hexdigest()[:16] / basename(path)
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    for info in infos:
        if info.type != fs.FileType.File:
            continue
        target = dest / info.path[len(root):].lstrip("/")
        if target.exists() and target.stat().st_size == info.size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        with filesystem.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 2**22)
        os.replace(tmp, target)
    return dest


def exists(path: str) -> bool:
    if not is_uri(path):
        return Path(path).exists()
    from pyarrow import fs

    filesystem, p = filesystem_of(path)
    return filesystem.get_file_info(p).type != fs.FileType.NotFound


def read_text(path: str) -> str:
    if not is_uri(path):
        return Path(path).read_text(encoding="utf-8")
    filesystem, p = filesystem_of(path)
    with filesystem.open_input_stream(p) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Write whole-file, atomically on local disks (temp file + rename)."""
    if not is_uri(path):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
        return
    filesystem, p = filesystem_of(path)
    filesystem.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(p) as f:
        f.write(text.encode("utf-8"))


MIN_FREE_BYTES = 200 * 2**20


def check_uri(path: str) -> None:
    """A storage URI that every node can reach: not ``file://`` (one machine's disk; give the path
    itself, or an NFS mount), and a scheme pyarrow knows."""
    scheme = path.split("://", 1)[0].lower()
    if scheme == "file":
        raise StorageError(f"{path}: a file:// URI is one machine's disk; give the local path itself "
                           f"({path.split('://', 1)[1] or '/'}), or shared storage (an NFS mount, s3://, gs://)")
    try:
        filesystem_of(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's own message names what is wrong
        raise StorageError(f"{path}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def ensure_writable(path: str) -> None:
    """Create the folder and prove it takes a file; local disks must have some room left. On a URI
    the first write is the check: a missing bucket, refused credentials or an endpoint that does not
    answer fail here, in seconds, before anything starts."""
    if is_uri(path):
        check_uri(path)
        probe = join(path, f".mmi-ray-write-test-{uuid.uuid4().hex[:8]}")
        try:  # what a sweep does: write, read back, delete (old checkpoints); quick to give up
            filesystem, p = filesystem_of(probe, patient=False)
            filesystem.create_dir(p.rsplit("/", 1)[0], recursive=True)
            with filesystem.open_output_stream(p) as f:
                f.write(b"ok")
            with filesystem.open_input_stream(p) as f:
                if f.read() != b"ok":
                    raise OSError(f"{probe} read back other than written")
            filesystem.delete_file(p)
        except Exception as e:  # noqa: BLE001
            text = str(e)
            if "not found" in text.lower() and "bucket" in text.lower():
                hint = ""
            elif "NETWORK_CONNECTION" in text or "Could not connect" in text or "timed out" in text.lower():
                hint = f" (endpoint: AWS_ENDPOINT_URL={os.environ.get('AWS_ENDPOINT_URL', 'unset')})"
            else:
                hint = (" (credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws for s3://, "
                        "GOOGLE_APPLICATION_CREDENTIALS for gs://)")
            raise StorageError(f"cannot write to {path}: {_one_line(e)}{hint}") from None
        return
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".mmi-ray-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"cannot write to {path} ({e.strerror or e})") from None
    need = int(os.environ.get("MMI_RAY_MIN_FREE_MB", MIN_FREE_BYTES // 2**20)) * 2**20
    free = shutil.disk_usage(p).free
    if free < need:
        raise StorageError(f"only {free // 2**20} MiB free at {path} (need at least {need // 2**20} MiB; "
                           "MMI_RAY_MIN_FREE_MB sets the floor)")
