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


def _fs(path: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(path)


def exists(path: str) -> bool:
    if not is_uri(path):
        return Path(path).exists()
    from pyarrow import fs

    filesystem, p = _fs(path)
    return filesystem.get_file_info(p).type != fs.FileType.NotFound


def read_text(path: str) -> str:
    if not is_uri(path):
        return Path(path).read_text(encoding="utf-8")
    filesystem, p = _fs(path)
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
    filesystem, p = _fs(path)
    filesystem.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(p) as f:
        f.write(text.encode("utf-8"))


MIN_FREE_BYTES = 200 * 2**20


def ensure_writable(path: str) -> None:
    """Create the folder and prove it takes a file; local disks must have some room left."""
    if is_uri(path):
        try:
            write_text(join(path, ".mmi-ray-write-test"), "ok")
        except Exception as e:  # noqa: BLE001
            raise StorageError(f"cannot write to {path} ({type(e).__name__}: {e})") from None
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
