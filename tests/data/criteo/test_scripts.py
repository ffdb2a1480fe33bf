"""The Criteo scripts run, and the download-info script never touches the network."""
import importlib.util
import json
import socket
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_download_info_without_network(monkeypatch, capsys):
    def no_network(*a, **k):
        raise AssertionError("network use")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    info = load("criteo_download_info")
    assert info.main([]) == 0
    text = capsys.readouterr().out
    assert "45,840,617" in text and "4,373,472,329" in text and "day_23.gz" in text
    assert info.main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sum(f["rows"] for f in data["terabyte"]["files"]) == 4_373_472_329
    assert data["terabyte"]["files"][23]["rows"] == 178_274_637


def test_bench_runs_small(capsys, tmp_path):
    bench = load("bench_criteo")
    assert bench.main(["--rows", "3000", "--repeats", "1", "--read-examples", "70000",
                       "--workdir", str(tmp_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rows"] == 3000 and len(r["prepare"]) == 7 and len(r["read"]) == 4
    assert all(x["rows_per_s"] > 0 for x in r["prepare"])
