"""The one TOML writer (tomli-w underneath) and the atomic file write."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmse_cli.atomic import write_text_atomic
from gmse_cli.errors import DataError, SpecError
from gmse_cli.tomlfile import dumps_toml, read_toml


def test_arrays_of_flat_tables_are_blocks_whatever_their_length():
    data = {"name": "x", "stages": [{"kind": "a", "n": 1}, {"kind": "b", "values": [1.0, 2.5]}]}
    text = dumps_toml(data)
    # tomli-w alone would inline these short tables as `stages = [{ ... }]`
    assert text.count("[[stages]]\n") == 2 and "stages =" not in text
    assert tomllib.loads(text) == data


def test_tables_and_blocks_together_read_back():
    data = {"name": "x", "meta": {"a": "b"}, "families": {"q": {"L": {"value": 1.0}}},
            "stages": [{"kind": "a"}], "draws": {"constants": {"quantization.F": [0.1, 0.2]}}}
    text = dumps_toml(data)
    assert tomllib.loads(text) == data
    # the blocks come after every other table (a key after [[stages]] would belong to it)
    assert text.rindex("[[stages]]") > text.rindex("[draws.constants]")
    assert '"quantization.F" = [' in text  # a dotted name is one quoted key


# Text TOML must carry exactly: newlines, quotes, backslashes, tabs, control characters,
# non-ASCII (surrogates cannot be encoded at all, so they are left out).
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(name=_text, items=st.lists(st.one_of(st.floats(allow_nan=False), st.integers(-10**6, 10**6)), max_size=5))
def test_strings_and_numbers_round_trip(name, items):
    data = {"name": name, "values": items, "stages": [{"description": name}]}
    assert tomllib.loads(dumps_toml(data)) == data


def test_read_toml_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("x = [\n")
    with pytest.raises(SpecError, match=r"bad.toml: malformed TOML"):
        read_toml(path, what="format file", error=SpecError)
    with pytest.raises(DataError, match=r"cannot read sweep file .*missing.toml"):
        read_toml(tmp_path / "missing.toml", what="sweep file", error=SpecError, read_error=DataError)


def test_atomic_write_replaces_whole_and_keeps_the_mode(tmp_path):
    path = tmp_path / "law.toml"
    write_text_atomic(path, "a = 1\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # what open() would have made
    path.chmod(0o640)
    write_text_atomic(path, "a = 2\n")
    assert path.read_text() == "a = 2\n" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["law.toml"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "law.toml"
    path.write_text("old = 1\n")

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(path, "new = 2\n")
    assert path.read_text() == "old = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["law.toml"]


def test_atomic_write_into_a_missing_folder_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text_atomic(tmp_path / "nowhere" / "x.toml", "a = 1\n")


def test_a_large_file_is_parsed_once_per_content(tmp_path, monkeypatch):
    """Its data comes back equal to tomllib's from the JSON cache; an edit is never read stale;
    a damaged cache entry is parsed again; a file with dates (no JSON form) is never cached."""
    from gmse_cli.tomlfile import CACHE_FROM_BYTES

    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    rows = CACHE_FROM_BYTES // 8
    text = "[draws]\n" + "".join(f"x{i} = {i * 0.1!r}\n" for i in range(rows)) + '[meta]\nname = "a\\nb"\ninf = inf\n'
    path = tmp_path / "big.toml"
    path.write_text(text)
    assert len(text) >= CACHE_FROM_BYTES
    expected = tomllib.loads(text)
    assert read_toml(path, what="law file", error=DataError) == expected
    cached = list((tmp_path / "cache" / "toml").glob("*.json"))
    assert len(cached) == 1
    assert read_toml(path, what="law file", error=DataError) == expected  # from the cache
    path.write_text(text.replace("x0 = 0.0", "x0 = 5.0"))
    assert read_toml(path, what="law file", error=DataError)["draws"]["x0"] == 5.0
    for damaged in ("{not json", "5"):
        cached[0].write_text(damaged)
        path.write_text(text)
        assert read_toml(path, what="law file", error=DataError) == expected
    dated = tmp_path / "dated.toml"
    dated.write_text(text + "when = 2026-12-05\n")
    assert read_toml(dated, what="law file", error=DataError)["meta"]["when"] == tomllib.loads(dated.read_text())["meta"]["when"]
    assert len(list((tmp_path / "cache" / "toml").glob("*.json"))) == 2  # the two numeric versions only


def test_many_small_files_are_parsed_once_per_content_of_them_all(tmp_path, monkeypatch):
    """read_tomls gives tomllib's tables, from one cache entry on the second read; an edit of any
    file, a renamed file or a damaged entry is parsed again; a malformed file names itself."""
    from gmse_cli.tomlfile import read_tomls

    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    paths = []
    for i in range(5):
        path = tmp_path / f"f{i}.toml"
        path.write_text(f'name = "f{i}"\n[[stages]]\nkind = "quantize"\nbits = {i + 2}\n')
        paths.append(path)
    expected = [tomllib.loads(p.read_text()) for p in paths]
    assert read_tomls(paths, what="format file", error=DataError) == expected
    entries = list((tmp_path / "cache" / "toml").glob("*.json"))
    assert len(entries) == 1
    assert read_tomls(paths, what="format file", error=DataError) == expected  # from the entry
    paths[3].write_text(paths[3].read_text().replace("bits = 5", "bits = 7"))
    assert read_tomls(paths, what="format file", error=DataError)[3]["stages"][0]["bits"] == 7
    moved = tmp_path / "g3.toml"
    paths[3].rename(moved)
    assert read_tomls([*paths[:3], moved, paths[4]], what="format file", error=DataError)[3]["stages"][0]["bits"] == 7
    assert len(list((tmp_path / "cache" / "toml").glob("*.json"))) == 3  # a new entry for each set
    paths[3] = moved
    for entry in (tmp_path / "cache" / "toml").glob("*.json"):
        entry.write_text("[1, 2]")  # damaged: parsed again
    assert read_tomls(paths, what="format file", error=DataError)[0] == expected[0]
    paths[1].write_text("name = ")
    with pytest.raises(DataError, match="f1.toml: malformed TOML"):
        read_tomls(paths, what="format file", error=DataError)
