"""Reading a spec from untrusted text: the YAML file and `--set key.path=value` overrides, within bounds.

A spec file is refused before it is parsed when it is not a regular file (a FIFO would block) or
larger than YAML_BYTES_MAX; the loader refuses duplicate keys and documents that expand to more
than YAML_VALUES_MAX values through aliases (an alias bomb), and reads YAML 1.2 floats. Every
problem is a SpecError line naming the file (or the `--set` key).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ..safe_io import kind_of
from .errors import SpecError, echo
from .models import RunSpec, build_run_spec, canonical_key, drop_preset_fields_if_method_changes, with_current_names

YAML_BYTES_MAX = 2**20  # a spec file, and one --set value
YAML_VALUES_MAX = 100_000  # values a YAML document expands to, aliases counted at every use


def _parse_scalar(text: str, key: str) -> Any:
    """`--set` values are YAML scalars: 0.1 -> float, true -> bool, [1,2] -> list (bounded like a spec file)."""
    if len(text) > YAML_BYTES_MAX:
        raise SpecError([f"--set {echo(key)}: a value of {len(text):,} characters; at most {YAML_BYTES_MAX:,}"])
    try:
        return yaml.load(text, Loader=SpecLoader)  # a SafeLoader subclass
    except YamlTooLarge as e:
        raise SpecError([f"--set {echo(key)}: {e}"]) from None
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `key.path=value` overrides to a raw spec dict (before validation)."""
    problems = []
    if isinstance(data.get("sparsity"), dict):  # so that a `--set` by either name replaces the file's value
        data["sparsity"] = with_current_names(data["sparsity"])
    drop_preset_fields_if_method_changes(
        data, {canonical_key(item.split("=", 1)[0].strip()) for item in overrides or [] if "=" in item}
    )
    given: dict[str, str] = {}
    for item in overrides or []:
        raw = item.split("=", 1)[0].strip()
        first = given.setdefault(canonical_key(raw), raw)
        if "=" in item and first != raw:
            problems.append(f"--set {first} and {raw} are one setting (one is the reference's name): give one")
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"--set {echo(item)}: expected key.path=value")
            continue
        key, value = item.split("=", 1)
        parts = [p for p in canonical_key(key.strip()).split(".") if p]
        if not parts:
            problems.append(f"--set {item}: empty key")
            continue
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"{key}: {part} is not a section")
                break
            node = child
        else:
            node[parts[-1]] = _parse_scalar(value, key.strip())
    if problems:
        raise SpecError(problems)
    return data


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping (plain YAML keeps the last one silently)."""


class YamlTooLarge(yaml.YAMLError):
    """A YAML document that expands to too many values (an alias bomb) or refers to itself."""


def _expanded_values(root: yaml.Node) -> int:
    """How many values `root` stands for with every alias expanded where it is used (iterative,
    memoised by node: a billion-laughs document is counted in microseconds, never built)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if done:
            open_.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(k)] for k in kids), YAML_VALUES_MAX + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_:
            raise YamlTooLarge("a YAML alias refers to a value that contains it (a recursive alias)")
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes[id(root)]


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys and reads YAML 1.2 floats (`1e-3` is a number,
    not the string PyYAML's YAML 1.1 makes of it, so strict float fields accept it). A document
    that expands to more than YAML_VALUES_MAX values through aliases (an alias bomb: 400 bytes
    that stand for a billion strings) is refused before anything is built from it."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded_values(node) > YAML_VALUES_MAX:
            raise YamlTooLarge(
                f"expands to more than {YAML_VALUES_MAX:,} values through aliases (an alias bomb?); refused"
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError:
        raise SpecError([f"{path}: spec file not found"]) from None
    if not stat.S_ISREG(mode):  # a FIFO would block the read forever
        raise SpecError([f"{path}: is {kind_of(mode)}, not a regular file (a spec is a YAML file)"])
    try:
        if p.stat().st_size > YAML_BYTES_MAX:
            raise SpecError([f"{path}: a spec file of {p.stat().st_size:,} bytes; at most {YAML_BYTES_MAX:,}"])
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError([f"{path}: cannot read the spec file ({e.strerror or e})"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([f"{path}: not a text (UTF-8) YAML file (undecodable byte at offset {e.start})"]) from None
    try:
        data = yaml.load(text, Loader=SpecLoader)  # a SafeLoader subclass
    except DuplicateKeyError as e:
        assert e.problem_mark is not None  # SpecLoader always gives the duplicate key's mark
        raise SpecError([f"{path}: line {e.problem_mark.line + 1}: {e.problem}"]) from None
    except YamlTooLarge as e:
        raise SpecError([f"{path}: {e}"]) from None
    except RecursionError:
        raise SpecError([f"{path}: nested too deeply to be a spec"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        if isinstance(e, yaml.reader.ReaderError):
            where = f" (character {e.character!r} at offset {e.position} is not allowed)"
        raise SpecError([f"{path}: not valid YAML{where}"]) from None
    if data is None or data == {}:
        raise SpecError(
            [f"{path}: the spec file is empty (write the fields of the run, e.g. as in experiments/quickstart.yaml)"]
        )
    if not isinstance(data, dict):
        raise SpecError([f"{path}: a spec is a YAML mapping, got {type(data).__name__}"])
    return data


def load_run_spec(path: str | Path | None, overrides: list[str] | None = None) -> RunSpec:
    """YAML file (or the defaults when path is None) + `--set` overrides -> validated RunSpec."""
    data = read_yaml(path) if path is not None else {}
    data.pop("sweep", None)  # a sweep file's grid section is not part of the run
    return build_run_spec(apply_overrides(data, overrides))
