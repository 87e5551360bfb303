"""Input files as Windows tools save them: CRLF line endings, a UTF-8 byte-order mark, UTF-16.

CRLF and a UTF-8 BOM are read as the plain file is; UTF-16 is refused in one line that names the
file and the encoding, with a byte-order mark (Notepad's "Unicode") or without one (some tools
write none). Before, UTF-16 without a mark was a parse error about the bytes: a CSV "needs
columns N, loss and D ...; found N\\x00, \\x00D\\x00 ...", a TOML "Expected '=' after a key".
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import conftest
import pytest

REPO = Path(__file__).resolve().parents[1]

ENCODINGS = {
    "utf-16-le": lambda text: text.encode("utf-16-le"),
    "utf-16-be": lambda text: text.encode("utf-16-be"),
    "utf-16-le-bom": lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
}


def _windows_text(path: Path, text: str, encoding: str) -> Path:
    path.write_bytes(ENCODINGS[encoding](text.replace("\n", "\r\n")))
    return path


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_utf16_runs_file_is_refused_naming_the_encoding(tmp_path, run_cli, encoding):
    text = conftest.dense_runs_csv(tmp_path / "plain.csv", "bf16").read_text()
    runs = _windows_text(tmp_path / "runs.csv", text, encoding)
    result = run_cli("fit", str(runs))
    assert result.code == 2
    line = _one_line(result)
    assert str(runs) in line and "UTF-16" in line and "UTF-8" in line


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_utf16_format_file_is_refused_naming_the_encoding(tmp_path, run_cli, encoding):
    text = (REPO / "formats" / "int4.toml").read_text()
    fmt = _windows_text(tmp_path / "mine.toml", text, encoding)
    result = run_cli("gmse", str(fmt))
    assert result.code == 2
    line = _one_line(result)
    assert str(fmt) in line and "UTF-16" in line


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_utf16_sweep_file_is_refused_naming_the_encoding(tmp_path, run_cli, encoding):
    text = (REPO / "train" / "cpu-quick.toml").read_text()
    sweep = _windows_text(tmp_path / "sweep.toml", text, encoding)
    result = run_cli("train", str(sweep), "--dry-run")
    assert result.code == 2
    line = _one_line(result)
    assert str(sweep) in line and "UTF-16" in line


def test_crlf_and_utf8_bom_runs_fit_as_the_plain_file(tmp_path, run_cli):
    plain = conftest.dense_runs_csv(tmp_path / "runs.csv", "bf16")  # one name: the law names its runs file
    (tmp_path / "windows").mkdir()
    windows = tmp_path / "windows" / "runs.csv"
    windows.write_bytes(codecs.BOM_UTF8 + plain.read_text().replace("\n", "\r\n").encode())
    first, second = run_cli("fit", str(plain), "--json"), run_cli("fit", str(windows), "--json")
    assert first.code == 0 and second.code == 0, second.stderr
    a, b = (json.loads(result.stdout)["results"][0] for result in (first, second))
    text = json.dumps(a).replace(str(tmp_path / "runs.csv"), str(windows))  # the runs file is named
    assert json.loads(text) == b


def test_crlf_and_utf8_bom_format_file_reads_as_the_plain_file(tmp_path, run_cli):
    text = (REPO / "formats" / "int4.toml").read_text().replace('name = "int4"', 'name = "mine"')
    plain, windows = tmp_path / "plain.toml", tmp_path / "windows.toml"
    plain.write_text(text)
    windows.write_bytes(codecs.BOM_UTF8 + text.replace("\n", "\r\n").encode())
    first, second = run_cli("gmse", str(plain), "--json"), run_cli("gmse", str(windows), "--json")
    assert first.code == 0 and second.code == 0, second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
