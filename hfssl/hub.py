"""Export to Hugging Face format: an ``Auto*``-loadable folder, a model card, and ``push_to_hub``.

The order is always *save locally first, then push*: a failed upload never costs the trained model.
:func:`save_model_folder` writes into a hidden sibling folder and renames it into place only once
everything is on disk, so a crash never leaves a half-written folder that looks complete.
Tokens never reach the card, the config or the logs: hyperparameters whose key looks like a
credential, or whose value contains a known token, are dropped, and every text file is scanned
for known tokens before the folder is published or pushed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

logger = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"token|secret|password", re.IGNORECASE)
_TEXT_SUFFIXES = {".json", ".md", ".txt", ".yaml", ".yml", ".jinja", ".py"}
_REDACTED = "<redacted>"
_METHOD_TEXT = {
    "bert-mlm-nsp": "masked language modelling and next sentence prediction "
    "([Devlin et al., 2019](https://arxiv.org/abs/1810.04805))",
    "mae": "masked autoencoding ([He et al., 2021](https://arxiv.org/abs/2111.06377))",
    "simclr": "contrastive learning, SimCLR ([Chen et al., 2020](https://arxiv.org/abs/2002.05709))",
    "moco": "momentum contrast, MoCo v3 ([Chen et al., 2021](https://arxiv.org/abs/2104.02057))",
    "byol": "bootstrap your own latent, BYOL ([Grill et al., 2020](https://arxiv.org/abs/2006.07733))",
}


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


@dataclass
class ModelCardInfo:
    """Everything the model card says about a trained model."""

    model_name: str  # shown as the title and used in the usage snippet: the Hub id when pushing
    method: str  # "bert-mlm-nsp", "mae", "simclr", "moco", "byol", ...
    base_model_type: str  # config.model_type of the exported model, e.g. "bert", "vit", "resnet"
    tags: list[str]
    datasets_description: str
    hyperparameters: dict
    metrics: dict
    pipeline_tag: str | None = None
    license: str | None = None
    usage: str | None = None  # a Python snippet; a default one is written when None
    datasets: list[str] | None = None  # Hub dataset ids, only when the data really is on the Hub


def _check_repo_id(repo_id: str) -> None:
    """Raise a ValueError unless ``repo_id`` is a valid 'user/name' Hub id."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"hub_model_id {repo_id!r} is not a valid Hub repository id: {err}") from None
    if repo_id.count("/") != 1:
        raise ValueError(f"hub_model_id {repo_id!r} must look like 'user/name' (or 'org/name')")


def _known_secrets(extra: Iterable[str | None] = ()) -> set[str]:
    """Tokens this process could leak: explicit ones, HF_TOKEN and the stored login token."""
    found = {s for s in extra if s}
    found |= {os.environ[v] for v in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN") if os.environ.get(v)}
    try:
        found.add(huggingface_hub.get_token() or "")
    except Exception:  # an OIDC / stored-token problem must not break a local save
        pass
    return {s.strip() for s in found if len(s.strip()) >= 4}


def _scrub(value: Any, secrets: set[str], where: str = "") -> Any:
    """Copy of ``value`` without credential-like keys and without leaf values that contain a secret."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            name = f"{where}{key}"
            if _SECRET_KEY.search(str(key)) or _is_secret_leaf(item, secrets):
                if item:  # an unset hub_token is not worth a warning
                    logger.warning("model card: left out %r (looks like a credential)", name)
                continue
            kept[key] = _scrub(item, secrets, f"{name}.")
        return kept
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets, where) for v in value if not _is_secret_leaf(v, secrets)]
    return value


def _is_secret_leaf(value: Any, secrets: set[str]) -> bool:
    """A scalar whose text contains a known secret (containers are scrubbed item by item)."""
    return not isinstance(value, (dict, list, tuple)) and any(s in str(value) for s in secrets)


def _assert_no_secrets(folder: Path, secrets: set[str]) -> None:
    """Refuse a folder whose text files (config, tokenizer, card) contain a known token."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in _TEXT_SUFFIXES:
            data = path.read_bytes()
            if any(s.encode() in data for s in secrets):
                raise ValueError(
                    f"{path.relative_to(folder)} contains a Hugging Face token (not shown); refusing to write or upload it. "
                    "Remove the token from the model config / tokenizer / card fields and save again."
                )


def _fmt(value: Any) -> str:
    """One table cell: compact numbers, no pipes or newlines."""
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _table(d: dict, header: tuple[str, str]) -> str:
    if not d:
        return "_none recorded_"
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_fmt(k)} | {_fmt(v)} |" for k, v in _flatten(d)]
    return "\n".join(lines)


def _default_usage(card: ModelCardInfo) -> str:
    """A snippet that loads the encoder with a fresh task head, text or vision."""
    name = card.model_name
    if card.method.startswith("bert") or card.base_model_type in {"bert", "roberta", "electra", "distilbert"}:
        return (
            "from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer\n\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")\n'
            f'mlm = AutoModelForMaskedLM.from_pretrained("{name}")  # the pretraining head\n'
            "# fine-tune: the pretrained encoder with a new classification head\n"
            f'classifier = AutoModelForSequenceClassification.from_pretrained("{name}", num_labels=2)'
        )
    return (
        "from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification\n\n"
        f'processor = AutoImageProcessor.from_pretrained("{name}")\n'
        f'encoder = AutoModel.from_pretrained("{name}")  # features for linear probing / k-NN\n'
        "# fine-tune: the pretrained encoder with a new classification head\n"
        f'classifier = AutoModelForImageClassification.from_pretrained("{name}", num_labels=10)'
    )


def render_model_card(card: ModelCardInfo, *, secrets: Iterable[str] = ()) -> str:
    """The README.md text: YAML metadata validated by ``ModelCardData``, then the description."""
    known = _known_secrets(secrets)
    tags = list(dict.fromkeys(["hfssl", card.method, *card.tags]))
    data = ModelCardData(
        library_name="transformers",
        tags=tags,
        pipeline_tag=card.pipeline_tag,
        license=card.license,
        datasets=list(card.datasets) if card.datasets else None,
    )
    how = _METHOD_TEXT.get(card.method, f"`{card.method}`")
    body = f"""
# {card.model_name}

A `{card.base_model_type}` model pretrained from scratch without labels, with hfssl, by self-supervised {how}.
It is a standard `transformers` checkpoint (safetensors): load it with the `Auto*` classes and fine-tune it
with `Trainer`.

## Training

- **Method:** `{card.method}`
- **Data:** {card.datasets_description}

### Hyperparameters

{_table(_scrub(card.hyperparameters, known), ("hyperparameter", "value"))}

## Results

{_table(_scrub(card.metrics, known), ("metric", "value"))}

## Usage

```python
{(card.usage or _default_usage(card)).strip()}
```
"""
    text = str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))  # parses the metadata back: validation
    for s in known:  # last line of defence, e.g. a token pasted into the description or usage
        text = text.replace(s, _REDACTED)
    return text


def write_model_card(folder, card: ModelCardInfo, *, secrets: Iterable[str] = ()) -> Path:
    """Write ``folder/README.md`` for ``card``; ``secrets`` are extra strings that must never appear."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(card, secrets=secrets), encoding="utf-8")
    return path


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


def _publish(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` folder to ``target``, swapping out an old ``target`` if present."""
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
        if card is not None:
            write_model_card(tmp, card, secrets=secrets)
        _assert_no_secrets(tmp, _known_secrets(secrets))
        _fsync_tree(tmp)
        _publish(tmp, target)
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
    _assert_no_secrets(folder, _known_secrets([token]))
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or huggingface_hub.constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)  # HF_ENDPOINT read now, not at import
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message)
    except Exception as err:
        reason = f"{type(err).__name__}: {err}".replace(token, _REDACTED)
        raise _push_error(folder, repo_id, reason) from None  # no chained traceback that could hold the token
    logger.info("pushed %s to %s", folder, repo_url)
    return str(repo_url)
