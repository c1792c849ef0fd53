"""The container images hold every module of ours that the code they copy imports.

Docker cannot run here, so each Dockerfile's COPY instructions (with its .dockerignore
applied) are laid out in a temporary tree, and every import of the project's own packages,
at module level or inside a function, must resolve there. A file copied to the wrong place,
or left out of the build context, makes the image's entry point fail at import.
"""

from __future__ import annotations

import ast
import fnmatch
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
OURS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"])


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of the last stage, continuation lines joined."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    parsed = [tuple(line.strip().split(None, 1)) for line in lines
              if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, (word, *_) in enumerate(parsed) if word.upper() == "FROM")
    return [(word.upper(), rest[0] if rest else "") for word, *rest in parsed[last_from:]]


def in_context(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore rule order: the last rule that matches decides."""
    included = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes) or (
                pattern.startswith("**/") and any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)):
            included = negated
    return included


def image_tree(dockerfile: Path, into: Path) -> Path:
    """Lay out what the last stage copies from the build context; return its import root."""
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    workdir, root = "/", None
    for word, args in instructions(dockerfile):
        if word == "WORKDIR":
            workdir = args
        elif word == "ENV" and "PYTHONPATH=" in args:
            root = args.split("PYTHONPATH=", 1)[1].split(":", 1)[0].split()[0]
        elif word == "COPY" and not args.startswith("--"):
            *sources, dest = shlex.split(args)
            dest = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
            for source in sources:
                files = [ROOT / source] if (ROOT / source).is_file() else sorted(
                    p for p in (ROOT / source).rglob("*") if p.is_file())
                for file in files:
                    relative = file.relative_to(ROOT).as_posix()
                    if not in_context(relative, rules):
                        continue
                    # A file lands in the folder by its name; a folder's contents land in it.
                    inside = file.relative_to(ROOT / source if (ROOT / source).is_dir() else file.parent)
                    target = into / dest.lstrip("/") / inside
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, target)
    return into / (root or workdir).lstrip("/")


def resolves(module: str, root: Path) -> bool:
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def our_imports(source: Path, root: Path) -> set[str]:
    """Every module of ours that ``source`` imports, by its absolute name."""
    package = source.parent.relative_to(root).as_posix().replace("/", ".")
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            # `from package import module`: the submodule must be there too.
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if resolves(f"{base}.{alias.name}", ROOT))
    return {name for name in found if name.split(".")[0] in OURS}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_holds_every_module_its_code_imports(dockerfile: Path, tmp_path: Path) -> None:
    root = image_tree(dockerfile, tmp_path)
    copied = sorted(root.rglob("*.py"))
    assert copied, f"{dockerfile.name} copies no Python code under {root}"
    missing = {f"{source.relative_to(root)} imports {name}"
               for source in copied for name in our_imports(source, root) if not resolves(name, root)}
    assert not missing, sorted(missing)


def test_the_engine_builder_imports_in_the_predictor_image(tmp_path: Path) -> None:
    """`python -m predictor.engines` in the Triton image: its module imports from the copied
    tree and the standard library alone (-S: no site-packages; TensorRT loads on use)."""
    root = image_tree(ROOT / "docker" / "predictor.Dockerfile", tmp_path)
    done = subprocess.run([sys.executable, "-S", "-c", "import predictor.engines"], cwd=tmp_path,
                          env={"PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_module_left_out_is_found(tmp_path: Path) -> None:
    (tmp_path / "predictor").mkdir()
    (tmp_path / "predictor" / "__init__.py").write_text("")
    user = tmp_path / "predictor" / "engines.py"
    user.write_text("from preprocessing.specs import SPECS\nfrom . import configs\n")
    assert our_imports(user, tmp_path) == {"preprocessing.specs", "predictor", "predictor.configs"}
    assert not resolves("preprocessing.specs", tmp_path)
