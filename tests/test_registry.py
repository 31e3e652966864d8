"""Models and datasets are registered by a decorator in their own file; the names the spec accepts
come from a manifest read from the source (no torch import), which must equal what importing the
modules registers."""

import subprocess
import sys
import textwrap

import pytest

from granet_cli.registry import DATASETS, MODELS, Registry
from granet_cli.spec import SpecError, load_run_spec


@pytest.mark.parametrize("registry", [MODELS, DATASETS], ids=["models", "datasets"])
def test_manifest_equals_what_the_modules_register(registry):
    imported = registry.load_all()
    assert set(registry.names()) == set(imported)
    for name, module in registry.manifest().items():
        assert imported[name].__module__ == f"{registry.package}.{module}"


def test_names_are_read_without_importing_torch():
    code = textwrap.dedent(
        """
        import sys
        from granet_cli.spec import load_run_spec
        load_run_spec(None, ["model.name=vgg16", "data.name=synthetic"])
        assert "torch" not in sys.modules, "validation imported torch"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_new_model_is_one_file(tmp_path, monkeypatch):
    """A package with one decorated builder: the manifest finds it, `get` imports and returns it."""
    pkg = tmp_path / "zoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(
        textwrap.dedent(
            """
            from test_zoo_registry import REG

            @REG.register("tiny")
            def tiny(num_classes, input_shape):
                return ("tiny", num_classes, input_shape)
            """
        )
    )
    registry = Registry("model", "zoo", "register", folder=pkg)
    (tmp_path / "test_zoo_registry.py").write_text("REG = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import test_zoo_registry

    test_zoo_registry.REG = registry
    assert registry.names() == ("tiny",)
    assert "zoo.tiny" not in sys.modules  # not imported to be listed
    assert registry.get("tiny")(3, (1, 8, 8)) == ("tiny", 3, (1, 8, 8))
    for mod in ("zoo", "zoo.tiny", "test_zoo_registry"):
        sys.modules.pop(mod, None)


@pytest.mark.parametrize("field,registry", [("model.name", MODELS), ("data.name", DATASETS)], ids=["model", "dataset"])
def test_unknown_names_list_the_registered_ones(field, registry):
    with pytest.raises(SpecError) as ei:
        load_run_spec(None, [f"{field}=nope"])
    msg = str(ei.value)
    assert "\n" not in msg and "nope" in msg and ", ".join(registry.names()) in msg
