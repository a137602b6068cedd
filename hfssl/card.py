"""Model cards for exported folders, and keeping credentials out of everything written.

Hyperparameters whose key looks like a credential, or whose value contains a known token, are
dropped from the card; any known token left in the text is redacted; :func:`assert_no_secrets`
scans a folder's text files before it is published or pushed.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import ModelCard, ModelCardData

from hfssl.report import REPORT_NAME, report_markdown

_SECRET_KEY = re.compile(r"token|secret|password", re.IGNORECASE)
_TEXT_SUFFIXES = {".json", ".md", ".txt", ".yaml", ".yml", ".jinja", ".py"}
REDACTED = "<redacted>"

logger = logging.getLogger(__name__)
_METHOD_TEXT = {
    "bert-mlm-nsp": "masked language modelling and next sentence prediction "
    "([Devlin et al., 2019](https://arxiv.org/abs/1810.04805))",
    "bert-mlm": "masked language modelling, BERT's MLM objective without next sentence prediction "
    "([Devlin et al., 2019](https://arxiv.org/abs/1810.04805); RoBERTa's choice, "
    "[Liu et al., 2019](https://arxiv.org/abs/1907.11692))",
    "bert-mlm-cls-bow": "masked language modelling without next sentence prediction "
    "([Devlin et al., 2019](https://arxiv.org/abs/1810.04805); [Liu et al., 2019](https://arxiv.org/abs/1907.11692)), "
    "plus a `[CLS]` bag-of-words loss: the pooler output predicts the words of its row through the MLM head, so "
    "the `[CLS]` state and the pooler that sequence classifiers read are trained",
    "bert-mlm-nsp-cls-bow": "masked language modelling and next sentence prediction "
    "([Devlin et al., 2019](https://arxiv.org/abs/1810.04805)), plus a `[CLS]` bag-of-words loss (the pooler "
    "output predicts the words of its row through the MLM head)",
    "electra": "replaced token detection, ELECTRA ([Clark et al., 2020](https://arxiv.org/abs/2003.10555)): a small "
    "masked-language-model generator (exported as `generator/`) proposes replacements and the discriminator "
    "(`model/`) learns to detect them",
    "electra-cls-bow": "replaced token detection, ELECTRA ([Clark et al., 2020](https://arxiv.org/abs/2003.10555)): a "
    "small masked-language-model generator (exported as `generator/`) proposes replacements and the discriminator "
    "(`model/`) learns to detect them; plus a `[CLS]` bag-of-words loss (the discriminator's `[CLS]` state, which "
    "sequence classifiers read, predicts the words of its row through a small head not exported)",
    "gpt-clm": "causal language modelling, GPT's next-token prediction "
    "([Radford et al., 2019](https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf)) "
    "on rows packed full across documents, an end-of-text token between documents",
    "mae": "masked autoencoding ([He et al., 2021](https://arxiv.org/abs/2111.06377))",
    "simclr": "contrastive learning, SimCLR ([Chen et al., 2020](https://arxiv.org/abs/2002.05709))",
    "moco": "momentum contrast, MoCo ([He et al., 2020](https://arxiv.org/abs/1911.05722); v2 "
    "[Chen et al., 2020](https://arxiv.org/abs/2003.04297), v3 [Chen et al., 2021](https://arxiv.org/abs/2104.02057))",
    "clip": "contrastive image-text pretraining, CLIP ([Radford et al., 2021](https://arxiv.org/abs/2103.00020)): "
    "an image tower and a text tower trained to match pictures with their captions",
    "vae": "variational autoencoding ([Kingma & Welling, 2014](https://arxiv.org/abs/1312.6114)): an encoder to a "
    "diagonal Gaussian latent and a decoder, trained on the evidence lower bound",
    "gan": "adversarial training, DCGAN-style ([Radford et al., 2016](https://arxiv.org/abs/1511.06434)): a generator "
    "(its moving average exported as `generator/`) against a spectrally normalised ResNet discriminator (its trunk "
    "exported as `model/`)",
    "byol": "bootstrap your own latent, BYOL ([Grill et al., 2020](https://arxiv.org/abs/2006.07733))",
}


@dataclass
class ModelCardInfo:
    """Everything the model card says about a trained model."""

    model_name: str  # shown as the title and used in the usage snippet: the Hub id when pushing
    method: str  # "bert-mlm", "bert-mlm-nsp", "electra", "mae", "simclr", "moco", "byol", ...
    base_model_type: str  # config.model_type of the exported model, e.g. "bert", "vit", "resnet"
    tags: list[str]
    datasets_description: str
    hyperparameters: dict
    metrics: dict
    pipeline_tag: str | None = None
    license: str | None = None
    usage: str | None = None  # a Python snippet; a default one is written when None
    datasets: list[str] | None = None  # Hub dataset ids, only when the data really is on the Hub
    report: str | Path | None = None  # the run's report.png: copied into the folder and shown in the card
    notes: str | None = None  # advice for fine-tuning this checkpoint, shown under Training
    samples: list[str] | None = None  # generated text (prompt + continuation), shown under Samples
    library_name: str = "transformers"  # what loads the folder: "diffusers" (AutoencoderKL), "hfssl" (GAN generator)


def known_secrets(extra: Iterable[str | None] = ()) -> set[str]:
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


def assert_no_secrets(folder: Path, secrets: set[str]) -> None:
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
    if card.pipeline_tag == "text-generation":
        return (
            "from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, pipeline\n\n"
            f'generate = pipeline("text-generation", model="{name}")\n'
            'print(generate("It is a truth", max_new_tokens=40, do_sample=False)[0]["generated_text"])\n'
            f'lm = AutoModelForCausalLM.from_pretrained("{name}")  # continue training, e.g. with run_clm.py\n'
            "# fine-tune: the pretrained model with a new classification head on its last token\n"
            f'classifier = AutoModelForSequenceClassification.from_pretrained("{name}", num_labels=2)'
        )
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


def _loading_sentence(library_name: str) -> str:
    if library_name == "transformers":
        return ("It is a standard `transformers` checkpoint (safetensors): load it with the `Auto*` classes and "
                "fine-tune it\nwith `Trainer`.")
    return f"It is a `{library_name}` checkpoint (safetensors); the Usage section below shows how to load it."


def render_model_card(card: ModelCardInfo, *, secrets: Iterable[str] = ()) -> str:
    """The README.md text: YAML metadata validated by ``ModelCardData``, then the description."""
    known = known_secrets(secrets)
    tags = list(dict.fromkeys(["hfssl", card.method, *card.tags]))
    data = ModelCardData(
        library_name=card.library_name,
        tags=tags,
        pipeline_tag=card.pipeline_tag,
        license=card.license,
        datasets=list(card.datasets) if card.datasets else None,
    )
    how = _METHOD_TEXT.get(card.method, f"`{card.method}`")
    report_section = f"\n{report_markdown(REPORT_NAME)}\n" if card.report else ""
    if card.samples:  # fenced: generated text is shown as written, never read as markdown
        fence = "~~~~" if any("```" in s for s in card.samples) else "```"
        report_section += "\n## Samples\n\nGreedy continuations of fixed prompts by the exported model:\n\n" + \
            "\n\n".join(f"{fence}text\n{s}\n{fence}" for s in card.samples) + "\n"
    body = f"""
# {card.model_name}

A `{card.base_model_type}` model pretrained from scratch without labels, with hfssl, by self-supervised {how}.
{_loading_sentence(card.library_name)}

## Training

- **Method:** `{card.method}`
- **Data:** {card.datasets_description}
{f"{chr(10)}{card.notes}{chr(10)}" if card.notes else ""}
### Hyperparameters

{_table(_scrub(card.hyperparameters, known), ("hyperparameter", "value"))}

## Results

{_table(_scrub(card.metrics, known), ("metric", "value"))}
{report_section}
## Usage

```python
{(card.usage or _default_usage(card)).strip()}
```
"""
    text = str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))  # parses the metadata back: validation
    for s in known:  # last line of defence, e.g. a token pasted into the description or usage
        text = text.replace(s, REDACTED)
    return text


def write_model_card(folder, card: ModelCardInfo, *, secrets: Iterable[str] = ()) -> Path:
    """Write ``folder/README.md`` for ``card``; ``secrets`` are extra strings that must never appear."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(card, secrets=secrets), encoding="utf-8")
    return path
