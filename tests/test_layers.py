"""The import rules of ARCHITECTURE.md, read from every project module's imports (ast, nothing imported):
Gradio only under webapp/page/; no import circle among the project's modules; each webapp layer imports
only what its rule allows and only the service drives the engine's chain; nscvf never imports webapp or
Gradio and reads downward. The checker is scripts/check_house.py (one code path); it is also shown to
catch each kind of breach in a small tree made for the purpose."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_house", ROOT / "scripts" / "check_house.py")
house = sys.modules["check_house"] = importlib.util.module_from_spec(_spec)  # dataclasses look their module up
_spec.loader.exec_module(house)


@pytest.fixture(scope="module")
def project():
    return house.read(ROOT)


def _breaches(mods, what: str) -> list[str]:
    return [v for v in house.import_violations(mods) if what in v]


def test_the_checker_reads_the_whole_project(project):
    assert {"app", "nscvf", "nscvf.method.chain", "webapp.page.app", "webapp.state.records"} <= set(project)
    assert any(i.target == "gradio" for i in project["webapp.page.common"].imports)


def test_gradio_only_under_webapp_page(project):
    assert _breaches(project, "Gradio") == []


def test_no_import_circle(project):
    assert house.circles(project) == []


def test_webapp_layers_import_only_what_their_rule_allows(project):
    assert _breaches(project, " may import only ") == [] and _breaches(project, "engine's chain") == []
    assert _breaches(project, "app.py composes") == []


def test_nscvf_never_imports_the_app_and_reads_downward(project):
    assert _breaches(project, "never imports the app") == []
    assert _breaches(project, "reads downward") == [] and _breaches(project, "is in no layer") == []


def test_all_rules_hold(project):
    assert house.import_violations(project) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> dict:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp_path / "app.py").touch()
    return house.read(tmp_path)


def test_each_kind_of_breach_is_caught(tmp_path):
    mods = _tree(tmp_path, {
        "webapp/__init__.py": "", "webapp/views/__init__.py": "", "webapp/state/__init__.py": "",
        "webapp/views/a.py": "import gradio\nfrom webapp.views import b\n",
        "webapp/views/b.py": "def f():\n    from webapp.views import a  # hidden in a function: still a circle\n",
        "webapp/state/s.py": "from webapp.views import a\nfrom nscvf.method.chain import UnlearningChain\n",
        "nscvf/__init__.py": "", "nscvf/world.py": "from nscvf import models\n", "nscvf/models.py": "import webapp\n",
        "nscvf/newthing.py": "from nscvf import world\n",
    })  # fmt: skip
    found = house.import_violations(mods)
    assert any("webapp/views/a.py:1" in v and "Gradio is imported only under webapp/page/" in v for v in found)
    assert "import circle: webapp.views.a -> webapp.views.b" in found
    assert any("webapp/state/s.py:1" in v and "webapp.state may import only webapp.state" in v for v in found)
    assert any("webapp/state/s.py:2" in v and "only webapp.service drives the engine's chain" in v for v in found)
    assert any("nscvf/world.py:1" in v and "nscvf reads downward" in v for v in found)
    assert any("nscvf/models.py:1" in v and "the library never imports the app" in v for v in found)
    assert any("nscvf.newthing is in no layer" in v for v in found)


def test_sizes_and_function_imports_are_reported(tmp_path):
    long_body = "".join(f"    x{i} = {i}\n" for i in range(85))
    mods = _tree(tmp_path, {
        "nscvf/__init__.py": "",
        "nscvf/world.py": "TABLE = [\n" + "".join(f"    {i},\n" for i in range(500)) + "]\n",
        "nscvf/cache.py": "def big():\n" + long_body + "\ndef many(a, b, c, d, e, f, g, h, i):\n    import os\n",
        "nscvf/images.py": "def ok(a, b, c, d, e, f, g, h):\n    import torch  # heavy: only when called\n",
    })  # fmt: skip
    found = house.size_shortfalls(mods)
    assert not any(v.startswith("nscvf/world.py") for v in found)  # data tables do not count
    assert "nscvf/cache.py:1: big() is 86 lines, over 80" in found
    assert "nscvf/cache.py:88: many() takes 9 parameters, over 8" in found
    assert "nscvf/cache.py:89: os imported inside a function without a why-comment" in found
    assert not any(v.startswith("nscvf/images.py") for v in found)
