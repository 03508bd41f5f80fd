"""Pushing an exported folder to the Hugging Face Hub.

The token is handed straight to `HfApi` and nowhere else: it is never printed, logged, returned or written.
Errors come back as `zoo.pull.HubError` with a message that says what to fix.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from zoo.pull import HubError, HubLimits, check_repo_id, hub_operation


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str = "Upload from PreZoo", limits: HubLimits | None = None) -> str:
    """Create `repo_id` if needed and upload `folder` to it, within `limits` (default: from the environment);
    returns the repo URL.

    Without `token`, huggingface_hub resolves one itself (HF_TOKEN, then the `hf auth login` cache).
    Unchanged files are skipped by the Hub, so pushing the same folder again is a cheap no-op.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"cannot push {folder}: no such folder")
    if not any(p.is_file() for p in folder.rglob("*")):
        raise HubError(f"cannot push {folder}: the folder has no files")
    check_repo_id(repo_id)
    with hub_operation(repo_id, limits=limits) as headers:
        api = HfApi(token=token, headers=headers)
        url = api.create_repo(repo_id, exist_ok=True, private=private)
        api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message)
    return str(url)
