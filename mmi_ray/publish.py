"""``mmi-ray export``: a chosen student to a ``save_pretrained`` folder with its model card, and
optionally to the Hugging Face Hub (``huggingface_hub``; token from ``HF_TOKEN`` or ``hf auth login``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .export import ADAPTER_CONFIG, Chosen, ExportError, choose, prepare_out, write_model
from .model_card import build_card


def export_student(source: str | Path, out: str | Path, arm: str | None = None, seed: int | None = None,
                   force: bool = False, repo_id: str | None = None, merge: bool = False) -> tuple[Chosen, Path]:
    """Write the folder (whole or not at all: built aside, then moved in) and return what was chosen.
    An ``out`` folder that exists and is not empty is refused unless ``force``."""
    out = Path(out)
    prepare_out(out, force)
    chosen = choose(source, arm, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        remote = write_model(chosen, tmp, merge)
        (tmp / "README.md").write_text(build_card(chosen, out.name, repo_id or str(out), remote,
                                                  adapter=(tmp / ADAPTER_CONFIG).exists()))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if repo_id:
        push(out, repo_id)
    return chosen, out


def push(folder: Path, repo_id: str) -> str:
    """Upload an exported folder as a model repository (created if absent); returns the commit URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ExportError("--push-to-hub needs huggingface_hub (pip install huggingface_hub)") from None
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message="mmi-ray export")
    except Exception as e:  # noqa: BLE001 - auth, network and name errors become one line
        raise ExportError(f"--push-to-hub {repo_id}: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]} "
                          f"(the folder {folder} is written)") from None
    return str(getattr(info, "commit_url", info))
