"""The cache folder follows the XDG rules where USCL_CACHE_DIR is unset: an absolute
$XDG_CACHE_HOME holds uscl/, a relative one is ignored (the XDG spec says so), USCL_CACHE_DIR wins."""

from __future__ import annotations

from gmse_cli.paths import cache_dir


def test_an_absolute_xdg_cache_home_holds_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("USCL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "uscl"
    assert (tmp_path / "xdg" / "uscl").is_dir()


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv("USCL_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_dir() == tmp_path / "home" / ".cache" / "uscl"
    assert not (tmp_path / "relative").exists()


def test_uscl_cache_dir_wins_over_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine"
