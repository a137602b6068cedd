"""Continue from an existing image model folder (``--model_name_or_path``): what kind of model it holds, and
the size and normalisation its image processor feeds it.

A folder laid out like the Hub's ``facebook/vit-mae-base`` or ``microsoft/resnet-50`` holds ``config.json``
(whose ``model_type`` says what it is), the weights, and ``preprocessor_config.json``. The processor's
``size`` (an int, ``{"height", "width"}`` or ``{"shortest_edge"}``; a ``crop_pct`` processor crops back to
the shortest edge) is the side the model was trained on, and ``image_mean`` / ``image_std`` its
normalisation: a run that continues from the folder uses them unless ``--image_size`` / ``--normalize`` say
otherwise. Everything is read from local files; the Hub is never contacted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hfssl.errors import UserError
from hfssl.files import check_model_folder


@dataclass
class FolderModel:
    """What a model folder says about itself: its ``config.json`` and its processor's size and statistics."""

    path: Path
    config: dict
    image_size: int | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")


def _read_json(path: Path, folder: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"--model_name_or_path {folder}: {path.name} is not valid JSON ({err}); re-create the "
                        "folder") from None
    if not isinstance(data, dict):
        raise UserError(f"--model_name_or_path {folder}: {path.name} is not a JSON object; re-create the folder")
    return data


def processor_size(processor: dict) -> int | None:
    """The side an image processor's output has: ``size`` as an int, ``height`` or ``shortest_edge``."""
    size = processor.get("crop_size") if processor.get("do_center_crop") and processor.get("crop_size") else None
    size = size or processor.get("size")
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        return size.get("height") or size.get("shortest_edge")
    return None


def read_model_folder(path: str | Path, expected: dict[str, str], recipe: str) -> FolderModel:
    """The folder's config and processor settings; its ``model_type`` must be one of ``expected`` (model_type ->
    what the recipe calls it), else a one-line error naming the model_type found."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"--model_name_or_path {folder}: no such folder; give a local folder written by "
                        "save_pretrained (hfssl loads models from local folders only)")
    if not (folder / "config.json").is_file():
        raise UserError(f"--model_name_or_path {folder}: no config.json there; give a local folder written by "
                        "save_pretrained")
    check_model_folder(folder)  # every file it holds: empty, truncated, not safetensors, not UTF-8 (no tensor read)
    config = _read_json(folder / "config.json", folder)
    model_type = config.get("model_type")
    if model_type not in expected:
        kinds = " or ".join(f"{what} (model_type {kind!r})" for kind, what in expected.items())
        raise UserError(f"--model_name_or_path {folder} holds a model of model_type {model_type!r}; {recipe} "
                        f"continues from a {kinds} folder")
    processor = folder / "preprocessor_config.json"
    settings = _read_json(processor, folder) if processor.is_file() else {}
    normalise = settings.get("do_normalize", True) and "image_mean" in settings and "image_std" in settings
    mean = tuple(float(v) for v in settings["image_mean"]) if normalise else None
    std = tuple(float(v) for v in settings["image_std"]) if normalise else None
    return FolderModel(folder, config, processor_size(settings), mean, std)


def same_shapes_preset(presets: dict[str, object], shapes: object) -> str | None:
    """The name of the preset whose shapes equal ``shapes`` (None when none does)."""
    return next((name for name, value in presets.items() if value == shapes), None)


def check_preset(flag_value: str | None, presets: dict[str, object], shapes: object, folder: FolderModel,
                 describe: str) -> None:
    """A ``--preset`` given together with a folder must describe the folder's own shapes (the folder defines
    the model): else one line naming both, and the preset that would match, if any."""
    if flag_value is None or presets.get(flag_value) == shapes:
        return
    match = same_shapes_preset(presets, shapes)
    fix = f"set --preset {match}" if match else "drop --preset (the flag, or preset: in your --config)"
    raise UserError(f"--preset {flag_value} conflicts with --model_name_or_path {folder.path} ({describe}): the "
                    f"folder defines the model; {fix}")
