"""Registries of models and datasets, filled by a decorator in each one's own file.

A new model is one file in `granet_cli/models/` with `@register_model("name")` on its builder; a new
dataset is one file in `granet_cli/data/` with `@register_dataset("name")` on its `info` function
(the module also defines `datasets(spec)`). Nothing else lists the names: the spec's choices, error
messages and docs read them from here.

Validation must stay fast, and a model file imports torch, so the names come from a *manifest* read
from the package's source with `ast` (no import): every `@register_model("...")` decorator found in
`granet_cli/models/*.py`. The module is imported only when the model is built. A test keeps the
manifest and the imported registry equal.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_HERE = Path(__file__).resolve().parent


class Registry:
    """Names -> the object registered under them, in the modules of one sub-package."""

    def __init__(self, kind: str, package: str, decorator: str, folder: Path | None = None):
        self.kind, self.package, self.decorator = kind, package, decorator
        self.folder = folder or _HERE / package.rsplit(".", 1)[-1]
        self._entries: dict[str, Any] = {}

    def register(self, *names: str, reads: tuple[str, ...] = ()) -> Callable[[F], F]:
        """Decorator: register the decorated object under each of `names`. `reads`: the settings
        only some entries use that this one reads (a dataset's `DataConfig` fields beyond those every
        dataset reads); a literal tuple, read from the source by :meth:`reads` without importing."""

        def register(obj: F) -> F:
            for name in names:
                if name in self._entries and self._entries[name] is not obj:
                    raise ValueError(f"{self.kind} {name!r} is already registered")
                self._entries[name] = obj
            return obj

        return register

    def manifest(self) -> dict[str, str]:
        """name -> module (relative to the package), read from the source without importing it."""
        return self._scan()[0]

    def reads(self, name: str) -> tuple[str, ...]:
        """The `reads=` of `name`'s decorator, read from the source (no import). KeyError if unknown."""
        return self._scan()[1][name]

    @cache  # noqa: B019 - one registry per kind for the life of the process
    def _scan(self) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
        found: dict[str, str] = {}
        reads: dict[str, tuple[str, ...]] = {}
        for path in sorted(self.folder.glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    continue
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and _name(deco.func) == self.decorator:
                        kw = {k.arg: ast.literal_eval(k.value) for k in deco.keywords if k.arg == "reads"}
                        for arg in deco.args:
                            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                                found[arg.value] = path.stem
                                reads[arg.value] = tuple(kw.get("reads", ()))
        return found, reads

    def names(self) -> tuple[str, ...]:
        return tuple(self.manifest())

    def get(self, name: str) -> Any:
        """The registered object; imports its module on first use. KeyError if unknown."""
        module = self.manifest()[name]
        if name not in self._entries:
            importlib.import_module(f"{self.package}.{module}")
        return self._entries[name]

    def load_all(self) -> dict[str, Any]:
        """Import every module of the manifest and return the registry (tests, docs)."""
        for module in sorted(set(self.manifest().values())):
            importlib.import_module(f"{self.package}.{module}")
        return dict(self._entries)


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


MODELS = Registry("model", "granet_cli.models", "register_model")
DATASETS = Registry("dataset", "granet_cli.data", "register_dataset")
register_model = MODELS.register
register_dataset = DATASETS.register
