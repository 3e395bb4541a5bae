"""hpcgw_hub.checkconfig: a config file that does not load is refused."""

from hpcgw_hub.checkconfig import main


def test_a_good_config_loads(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("c = get_config()\nc.JupyterHub.bind_url = 'http://127.0.0.1:8000'\n")
    assert main([str(good)]) == 0


def test_syntax_errors_imports_and_exceptions_are_refused(tmp_path, capsys):
    cases = {
        "syntax.py": "c.JupyterHub.bind_url = (\n",
        "imports.py": "import no_such_module_here\n",
        "raises.py": "raise RuntimeError('broken fragment')\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert main([str(path)]) == 1, name
        assert f"{path}: does not load" in capsys.readouterr().err


def test_a_missing_file_is_refused(tmp_path, capsys):
    assert main([str(tmp_path / "absent.py")]) == 1
    assert "no such config file" in capsys.readouterr().err
