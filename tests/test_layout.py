"""The package's layering, read from the source with ``ast``: no module imports a higher layer or another
module's private names, and every entry point lives in ``recipes/`` (docs/DESIGN.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hfssl"
# lowest first; a module may import its own layer or a lower one
LAYERS = {"core": 0, "text": 1, "vision": 1, "methods": 2, "finetune": 3}


def layer_of(module: str) -> int:
    """``hfssl.text.nsp`` -> 1; top-level modules (``hfssl.train``) are core."""
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 2 or parts[1] in LAYERS else 0


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def hfssl_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported hfssl module, imported names) of every import in ``path``, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hfssl"):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("hfssl")]
    return found


def test_layer_classifier_matches_the_documented_layers():
    assert [layer_of(m) for m in ("hfssl.train", "hfssl.report", "hfssl.text.nsp", "hfssl.vision",
                                  "hfssl.methods.bert", "hfssl.finetune.qa")] == [0, 0, 1, 1, 2, 3]


def test_no_module_imports_a_higher_layer_or_a_private_name():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for line, imported, names in hfssl_imports(path):
            if layer_of(imported) > layer_of(here):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports the higher layer {imported}")
            private = [n for n in names if n.startswith("_")]
            if private and imported != here:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports private {private} from {imported}")
    assert not problems, "\n".join(problems)


def test_entry_points_live_in_recipes_and_the_package_never_imports_them():
    mains = [p.relative_to(ROOT) for p in PACKAGE.rglob("*.py") if "__main__" in p.read_text(encoding="utf-8")]
    assert not mains, f"entry points belong in recipes/: {mains}"
    for path in PACKAGE.rglob("*.py"):
        assert "recipes" not in {m.split(".")[0] for _, m, _ in hfssl_imports(path)}
    recipes = {p.stem for p in (ROOT / "recipes").glob("*.py")}
    assert {"bert_mlm", "train_tokenizer", "mae", "contrastive", "finetune_text_classification", "finetune_qa",
            "finetune_image_classification"} <= recipes
