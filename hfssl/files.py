"""The files a recipe reads, checked before a library parses them.

An empty, truncated, wrong-format or wrong-encoding file is a one-line :class:`~hfssl.errors.UserError` that
names the file and says what to do; left to the library it would end in a message that names no file (a
``SafetensorError``, a ``UnicodeDecodeError``) or in a traceback. Nothing here unpickles: a weights file is
checked from its header (safetensors) or its zip directory (``torch.save``) only, never loaded.
"""

from __future__ import annotations

import codecs
import json
import struct
import zipfile
from pathlib import Path

from hfssl.errors import UserError

# The JSON files of a save_pretrained folder (model, processor, tokenizer): each must be a UTF-8 JSON object.
FOLDER_JSON = ("config.json", "preprocessor_config.json", "generation_config.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "model.safetensors.index.json")
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on its JSON header
_FOLDER_FIX = "re-create the folder with save_pretrained, or download or copy it again"


_BINARY = ("a Python pickle", "a zip archive (torch.save's format)", "UTF-16 text", "gzip-compressed data",
           "a Parquet file")


def looks_like(head: bytes) -> str:
    """What the first bytes of a file look like, for an error message ('' when nothing recognisable)."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # PROTO 2-5
        return "a Python pickle"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save's format)"
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "UTF-16 text"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed data"
    if head[:4] == b"PAR1":
        return "a Parquet file"
    if head[:1] in (b"{", b"["):
        return "JSON text"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:64]):
        return "text"
    return ""


def read_text_file(path: str | Path, what: str, fix: str | None = None) -> str:
    """The UTF-8 text of ``path`` (``what``: e.g. ``--config my.yaml``); a file in another encoding is a
    :class:`UserError` naming it, the first bad byte and ``fix`` (default: save it as UTF-8)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        kind = looks_like(data[:64])
        found = f"it looks like {kind}" if kind in _BINARY else f"byte {err.start} is 0x{data[err.start]:02x}"
        raise UserError(f"{what}: {path} is not UTF-8 text ({found}); "
                        f"{fix or 'save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 or iconv -f utf-16 -t utf-8)'}") from None


def check_utf8(path: str | Path, what: str, fix: str | None = None, chunk: int = 2**22) -> None:
    """Like :func:`read_text_file` without keeping the text: the file is decoded in chunks (large data files)."""
    path = Path(path)
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                kind = looks_like(block[:64]) if offset == 0 else ""
                found = (f"it looks like {kind}" if kind in _BINARY
                         else f"byte {offset + max(err.start, 0)} is 0x{block[max(err.start, 0)]:02x}")
                raise UserError(f"{what}: {path} is not UTF-8 text ({found}); {fix or 'save it as UTF-8'}") from None
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(f"{what}: {path} ends inside a UTF-8 character (truncated?); "
                            f"{fix or 'copy or save it again'}") from None


def read_json_file(path: str | Path, what: str, fix: str = _FOLDER_FIX) -> dict:
    """The JSON object in ``path``; empty, cut short, not JSON, not an object or not UTF-8 is a :class:`UserError`."""
    path = Path(path)
    text = read_text_file(path, what, fix)
    if not text.strip():
        raise UserError(f"{what}: {path} is empty; {fix}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        cut = text.lstrip()[:1] == "{" and not text.rstrip().endswith("}")  # an object always ends with }
        problem = "ends mid-way (truncated)" if cut else f"is not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
        raise UserError(f"{what}: {path} {problem}; {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what}: {path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def check_safetensors(path: str | Path, what: str, fix: str = _FOLDER_FIX) -> None:
    """``path`` must be a whole safetensors file: the 8-byte little-endian header length, a JSON header, and
    exactly the bytes its tensors' offsets cover. Only the header is read (no tensor, nothing unpickled)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        header = f.read(length) if 0 < length <= min(_MAX_HEADER, size - 8) else b""
    kind = looks_like(head)
    if size == 0:
        raise UserError(f"{what}: {path} is empty (0 bytes); {fix}")
    try:
        tensors = json.loads(header.decode("utf-8")) if header else None
        end = max((t["data_offsets"][1] for k, t in tensors.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        tensors = None
    if tensors is None and kind in ("a Python pickle", "a zip archive (torch.save's format)"):
        raise UserError(f"{what}: {path} is not a safetensors file, it is {kind} under that name (hfssl never "
                        "unpickles a file); save the weights with save_pretrained (safetensors), or rename a "
                        "torch.save file to pytorch_model.bin")
    if tensors is None and (size < 8 or 0 < length <= _MAX_HEADER and length > size - 8):
        raise UserError(f"{what}: {path} is cut short (truncated) inside its header, {size:,} bytes; {fix}")
    if tensors is None:
        raise UserError(f"{what}: {path} is not a safetensors file{f' (it looks like {kind})' if kind else ''}; {fix}")
    if 8 + length + end != size:
        problem = "is cut short (truncated)" if 8 + length + end > size else "has bytes past its last tensor"
        raise UserError(f"{what}: {path} {problem}: {size:,} bytes where its header describes {8 + length + end:,}; "
                        f"{fix}")


def check_torch_file(path: str | Path, what: str, fix: str = _FOLDER_FIX) -> None:
    """``path`` (a ``pytorch_model.bin``) must be a whole ``torch.save`` zip archive; checked from its zip
    directory only (transformers loads it with ``weights_only=True``; the legacy raw-pickle format is refused)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise UserError(f"{what}: {path} is empty (0 bytes); {fix}")
    if not zipfile.is_zipfile(path):
        kind = looks_like(head)
        problem = ("is cut short (truncated)" if head[:4] == b"PK\x03\x04" else
                   f"is not a torch.save zip archive{f' (it looks like {kind})' if kind else ''}")
        raise UserError(f"{what}: {path} {problem}; {fix} (safetensors preferred)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f"{what}: {path} is a damaged zip archive ({err}); {fix}") from None
    if not any(name.endswith("data.pkl") for name in names):
        raise UserError(f"{what}: {path} is a zip archive but not one torch.save wrote; {fix}")


def check_model_folder(folder: str | Path, what: str = "--model_name_or_path", weights: bool = True) -> None:
    """Every file of a save_pretrained folder a loader would read: its JSON files, ``vocab.txt``, and (with
    ``weights``) each ``*.safetensors`` file (else ``pytorch_model.bin``, else shards the index lists)."""
    folder = Path(folder)
    for name in FOLDER_JSON:
        if (folder / name).is_file():
            read_json_file(folder / name, what)
    vocab = folder / "vocab.txt"
    if vocab.is_file() and not read_text_file(vocab, what, _FOLDER_FIX).strip():
        raise UserError(f"{what}: {vocab} is empty; {_FOLDER_FIX}")
    if not weights:
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json_file(index, what).get("weight_map", {}).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise UserError(f"{what}: {folder} lacks {', '.join(missing[:3])} (listed in {index.name}); {_FOLDER_FIX}")
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path, what)
    if not any(folder.glob("*.safetensors")) and (folder / "pytorch_model.bin").is_file():
        check_torch_file(folder / "pytorch_model.bin", what)
