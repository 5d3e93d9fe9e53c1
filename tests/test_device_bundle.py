"""benchmarks/device_bundle.py: slimmed wheels stay installable and keep what they are told to keep."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_bundle.py"


def bundle() -> ModuleType:
    spec = importlib.util.spec_from_file_location("device_bundle", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slimmed_wheel_installs_without_the_left_out_files(tmp_path):
    module = bundle()
    prefixes = ("demo/big/", "demo/pipelines/*/", "+demo/pipelines/keep/")
    files = {
        "demo/__init__.py": "VALUE = 1\n",
        "demo/big/data.txt": "x" * 1000,
        "demo/pipelines/__init__.py": "",
        "demo/pipelines/utils.py": "",
        "demo/pipelines/other/__init__.py": "",
        "demo/pipelines/keep/__init__.py": "KEPT = True\n",
        "demo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n",
    }
    source = tmp_path / "src" / "demo-1.0-py3-none-any.whl"
    source.parent.mkdir()
    with zipfile.ZipFile(source, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("demo-1.0.dist-info/RECORD", "".join(f"{name},,\n" for name in files))
    (tmp_path / "out").mkdir()
    slim = module.without(source, prefixes, tmp_path / "out")
    names = set(zipfile.ZipFile(slim).namelist())
    assert "demo/big/data.txt" not in names and "demo/pipelines/other/__init__.py" not in names
    assert {"demo/pipelines/utils.py", "demo/pipelines/keep/__init__.py", "demo/__init__.py"} <= names
    record = zipfile.ZipFile(slim).read("demo-1.0.dist-info/RECORD").decode()
    assert "demo/big/data.txt" not in record and "demo/__init__.py,sha256=" in record
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(target), str(slim)], check=True)
    assert (target / "demo" / "pipelines" / "keep" / "__init__.py").read_text() == "KEPT = True\n"
    assert not (target / "demo" / "big").exists()


def test_every_bundled_requirement_is_pinned():
    module = bundle()
    assert all("==" in requirement for requirement in module.WHEELS)
    assert "nerfstudio==1.1.5" in module.WHEELS and "gsplat==1.4.0" in module.WHEELS


def test_a_folder_the_script_did_not_write_is_left_alone(tmp_path, monkeypatch, capsys):
    module = bundle()
    mine = tmp_path / "wheels"
    mine.mkdir()
    (mine / "my-1.0-py3-none-any.whl").write_bytes(b"the user's own wheel")
    monkeypatch.setattr(module, "download", lambda *args: (_ for _ in ()).throw(AssertionError("downloaded")))
    for extra in ([], ["--overwrite"]):
        monkeypatch.setattr(sys, "argv", ["device_bundle.py", "--out", str(mine), *extra])
        assert module.main() == 2
        assert "was not written by benchmarks/device_bundle.py" in capsys.readouterr().err
    assert (mine / "my-1.0-py3-none-any.whl").read_bytes() == b"the user's own wheel"
