"""Export to Hugging Face format: an ``Auto*``-loadable folder, a model card, and ``push_to_hub``.

The order is always *save locally first, then push*: a failed upload never costs the trained model.
:func:`save_model_folder` writes into a hidden sibling folder and renames it into place only once
everything is on disk, so a crash never leaves a half-written folder that looks complete.
Tokens never reach the card, the config or the logs: hyperparameters whose key looks like a
credential, or whose value contains a known token, are dropped, and every text file is scanned
for known tokens before the folder is published or pushed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hfssl.card import REDACTED, ModelCardInfo, assert_no_secrets, known_secrets, write_model_card
from hfssl.errors import UserError
from hfssl.report import REPORT_NAME

logger = logging.getLogger(__name__)



@dataclass
class HubArgs:
    """Where and how to publish the exported model on the Hugging Face Hub."""

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the exported folder to the Hub after saving it locally."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository 'user/name'; required with --push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_token: str | None = field(
        default=None,
        repr=False,  # never shown in logs or printed configs
        metadata={"help": "Hub token; normally leave unset and use HF_TOKEN or `hf auth login`."},
    )

    def __post_init__(self) -> None:
        if self.hub_model_id is not None:
            _check_repo_id(self.hub_model_id)
        elif self.push_to_hub:
            raise ValueError("push_to_hub needs hub_model_id, e.g. --hub_model_id your-user/bert-small")


def _check_repo_id(repo_id: str) -> None:
    """Raise a ValueError unless ``repo_id`` is a valid 'user/name' Hub id."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"hub_model_id {repo_id!r} is not a valid Hub repository id: {err}") from None
    if repo_id.count("/") != 1:
        raise ValueError(f"hub_model_id {repo_id!r} must look like 'user/name' (or 'org/name')")


def _fsync_tree(folder: Path) -> None:
    """Flush every file and the folder itself, so the rename publishes complete data."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    os.close(fd)


def publish_folder(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` folder to ``target``, swapping out an old ``target`` if present (put back
    if the rename fails): readers see the old folder or the new one, never a mix."""
    if not target.exists():
        os.rename(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)  # put the previous model back
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_model_folder(
    model,
    folder,
    *,
    tokenizer=None,
    processor=None,
    card: ModelCardInfo | None = None,
    overwrite: bool = False,
    secrets: Iterable[str] = (),
) -> Path:
    """Save ``model`` (+ tokenizer / processor / model card) as a ``from_pretrained`` folder, atomically.

    Call it on the main process only, with the unwrapped model (``accelerator.unwrap_model``). Everything is written to ``.{name}.tmp-XXXX`` next to
    ``folder`` and renamed into place at the end; an existing non-empty ``folder`` is replaced only
    with ``overwrite=True``. Returns the folder path.
    """
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    target = Path(folder).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"cannot save the model to {target}: it exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{target} already exists and is not empty; pass overwrite=True to replace it, or choose another folder"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)  # safetensors + config.json (safetensors is the only format in v5)
        for extra in (tokenizer, processor):
            if extra is not None:
                extra.save_pretrained(tmp)
        write_vocab_txt(tokenizer, tmp)
        if card is not None:
            if card.report is not None and Path(card.report).is_file():
                shutil.copyfile(card.report, tmp / REPORT_NAME)
            else:
                card = dataclasses.replace(card, report=None)  # no picture: the card must not point at one
            write_model_card(tmp, card, secrets=secrets)
        assert_no_secrets(tmp, known_secrets(secrets))
        _fsync_tree(tmp)
        publish_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved model to %s", target)
    return target


def _push_error(folder: Path, repo_id: str, reason: str) -> RuntimeError:
    return RuntimeError(
        f"the model is saved locally at {folder}; pushing to {repo_id} failed: {reason}; "
        f"set HF_TOKEN or run `hf auth login`, or upload later with `hf upload {repo_id} {folder}`"
    )


def push_folder(
    folder,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload hfssl model",
    endpoint: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` to it; returns the repository URL.

    The token comes from ``token``, else HF_TOKEN / the stored login; it is never printed.
    ``endpoint`` overrides HF_ENDPOINT (e.g. a private Hub or a test server). Any failure raises a
    RuntimeError that says where the local copy is and how to upload it later.
    """
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise FileNotFoundError(f"nothing to push: {folder} is not a folder (save the model first)")
    _check_repo_id(repo_id)
    try:
        token = token or huggingface_hub.get_token()
    except Exception as err:
        raise _push_error(folder, repo_id, f"could not read the Hub token ({type(err).__name__})") from None
    if not token:
        raise _push_error(folder, repo_id, "no Hugging Face token found")
    if huggingface_hub.constants.is_offline_mode():
        raise _push_error(folder, repo_id, "offline mode is on (unset HF_HUB_OFFLINE)")
    assert_no_secrets(folder, known_secrets([token]))
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or huggingface_hub.constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)  # HF_ENDPOINT read now, not at import
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message)
    except Exception as err:
        reason = f"{type(err).__name__}: {err}".replace(token, REDACTED)
        raise _push_error(folder, repo_id, reason) from None  # no chained traceback that could hold the token
    logger.info("pushed %s to %s", folder, repo_url)
    return str(repo_url)


def push_if_requested(folder: str | Path, hub: HubArgs) -> str | None:
    """For recipes, after the local save: push when ``--push_to_hub``; a failure exits with the message
    that says the model is saved locally and how to upload it later."""
    if not hub.push_to_hub:
        return None
    try:
        url = push_folder(folder, hub.hub_model_id, token=hub.hub_token, private=hub.hub_private)
    except RuntimeError as err:
        raise SystemExit(str(err)) from None
    print(f"pushed to {url}")
    return url


def write_vocab_txt(tokenizer, folder: Path) -> None:
    """Tokenizers whose slow form reads ``vocab.txt`` (BERT's WordPiece) get one, one token per line in
    id order: transformers 5 saves only ``tokenizer.json``, and other tools (and Google's code) read it."""
    names = getattr(tokenizer, "vocab_files_names", None) or {}
    if tokenizer is None or names.get("vocab_file") != "vocab.txt" or (folder / "vocab.txt").exists():
        return
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in vocab] == list(range(len(vocab))):
        (folder / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")


def load_folder_model(model_class, path, **kwargs):
    """``model_class.from_pretrained(path, **kwargs)`` in float32 whatever the file's precision, with the loading
    info (missing keys: what the recipe initialises and lists); a tensor of another shape than the folder's
    config.json says is one error line naming the folder (transformers would re-initialise it with a warning)."""
    import torch

    model, info = model_class.from_pretrained(str(path), dtype=torch.float32, output_loading_info=True, **kwargs)
    if info.get("mismatched_keys"):
        raise UserError(f"--model_name_or_path {path}: tensors of another shape than its config.json says: "
                        f"{', '.join(str(k) for k in list(info['mismatched_keys'])[:5])}; re-create the folder")
    return model, info
