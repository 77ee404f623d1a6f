"""The README's layout section and the code agree, and every package says what it holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def top_level_packages() -> set[str]:
    return {path.parent.name for path in PROJECT_DIR.glob("*/__init__.py")}


def readme_layout() -> set[str]:
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("```", 2)[1]
    return set(re.findall(r"^(\w+)/", section, flags=re.MULTILINE))


def test_the_readme_layout_lists_every_package_and_nothing_else() -> None:
    listed = readme_layout()
    packages = top_level_packages()
    assert packages <= listed, f"packages missing from the README's layout: {packages - listed}"
    stale = {name for name in listed - packages if not (PROJECT_DIR / name).is_dir()}
    assert not stale, f"the README's layout lists what does not exist: {stale}"


def test_every_package_starts_with_a_docstring_saying_what_it_holds() -> None:
    missing = [
        str(init.relative_to(PROJECT_DIR))
        for init in PROJECT_DIR.glob("**/__init__.py")
        if ".venv" not in init.parts
        and "migrations" not in init.parts
        and not ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    ]
    assert not missing, f"packages without a docstring: {missing}"


def test_the_serving_layer_is_its_own_package() -> None:
    serving = {path.name for path in (PROJECT_DIR / "serving").glob("*.py")}
    assert {"server.py", "backpressure.py", "asgi_http.py", "origin.py"} <= serving
    left_behind = {"server.py", "backpressure.py", "asgi_http.py"} & {
        path.name for path in (PROJECT_DIR / "chatproject").glob("*.py")
    }
    assert not left_behind
    assert not (PROJECT_DIR / "messaging" / "origin.py").exists()
