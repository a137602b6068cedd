"""The package's layering, read from the source with ``ast``: no module imports a higher layer or another
module's private names, and every entry point lives in ``recipes/`` (docs/DESIGN.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hfssl"
# lowest first; a module may import its own layer or a lower one
LAYERS = {"core": 0, "text": 1, "vision": 1, "multimodal": 1, "methods": 2, "finetune": 3}


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
    assert {"bert_mlm", "electra", "train_tokenizer", "mae", "contrastive", "finetune_text_classification", "finetune_qa",
            "finetune_image_classification"} <= recipes


def defined_names(module: str) -> set[str]:
    """Names a package module defines itself (functions, classes, assignments), not the ones it imports."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_tests_and_recipes_import_each_name_from_the_module_that_defines_it():
    """No re-export shims: what is shared is imported from where it is defined."""
    problems = []
    for path in [*sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "recipes").glob("*.py")),
                 *sorted(PACKAGE.rglob("*.py"))]:
        for line, imported, names in hfssl_imports(path):
            if not names:
                continue
            defined = defined_names(imported)
            for name in names:
                submodule = ROOT / imported.replace(".", "/") / f"{name}.py"
                if name not in defined and not submodule.is_file() and name != "*":
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {name} from {imported}, which does not "
                                    "define it")
    assert not problems, "\n".join(problems)
