"""The report package's face: every public name resolves, and its light modules stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import granet_cli.report as report

PACKAGE = Path(report.__file__).parent


def test_every_public_name_resolves_from_its_module():
    for name in report.__all__:
        value = getattr(report, name)
        assert value is not None, name


def test_unknown_name_is_an_attribute_error():
    try:
        report.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_grouping_does_not_import_matplotlib_jinja_or_the_store():
    """The sweep's trackers import report.grouping: that must not cost matplotlib's import."""
    code = (
        "import sys; import granet_cli.report.grouping; "
        "print(sorted(m for m in ('matplotlib', 'jinja2', 'granet_cli.report.build') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_private_name_crosses_modules():
    """A module of the package imports only public names from its siblings."""
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {'.' * node.level}{node.module or ''}"


def test_all_lists_the_names_imported_for_type_checkers():
    """``__all__``, the TYPE_CHECKING imports and the run-time lookup name the same things."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    typed = {
        a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for imp in node.body
        if isinstance(imp, ast.ImportFrom)
        for a in imp.names
    }
    assert typed == set(report.__all__)
    assert len(report.__all__) == len(set(report.__all__))
