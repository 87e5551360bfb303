"""Output paths that are symbolic links are checked where the write will land.

:func:`~gmse_cli.atomic.write_atomic` replaces the file a link names (the link stays), in the
link target's folder. :func:`~gmse_cli.atomic.check_output_path`, run before a command's work,
checked the link's own folder instead: a link whose target folder is gone (or is a read-only
mount) passed, and the write failed only after the work (``uscl fit --bootstrap`` minutes, then
"cannot write law file L: No such file or directory").
"""

from __future__ import annotations

import os

import conftest  # noqa: F401  (the shared fixtures)
import pytest

from gmse_cli.atomic import check_output_path, write_atomic
from gmse_cli.errors import SpecError


def test_link_to_a_missing_folder_is_refused_before_the_work(tmp_path):
    link = tmp_path / "law.toml"
    link.symlink_to(tmp_path / "gone" / "law.toml")
    with pytest.raises(SpecError, match="symbolic link's target") as caught:
        check_output_path(link, what="law file", error=SpecError)
    assert "\n" not in str(caught.value) and str(tmp_path / "gone") in str(caught.value)


def test_command_with_a_dangling_output_link_says_so_in_one_line(tmp_path, run_cli):
    runs = conftest.dense_runs_csv(tmp_path / "runs.csv", "bf16")
    link = tmp_path / "law.toml"
    link.symlink_to(tmp_path / "gone" / "law.toml")
    result = run_cli("fit", str(runs), "--out", str(link))
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "symbolic link's target" in result.stderr
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_link_to_a_folder_or_a_device_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "to-folder").symlink_to(tmp_path / "folder")
    (tmp_path / "to-null").symlink_to(os.devnull)
    with pytest.raises(SpecError, match="is a folder"):
        check_output_path(tmp_path / "to-folder", what="law file", error=SpecError)
    with pytest.raises(SpecError, match="device or a pipe"):
        check_output_path(tmp_path / "to-null", what="law file", error=SpecError)


def test_link_into_another_folder_writes_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "law.toml"
    target.write_text("old")
    link = tmp_path / "law.toml"
    link.symlink_to(target)
    assert check_output_path(link, what="law file", error=SpecError) == link
    write_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_bytes() == b"new"
    # a link to a file not yet made, in a folder that exists: the file is made there
    fresh = tmp_path / "fresh.toml"
    fresh.symlink_to(tmp_path / "elsewhere" / "fresh.toml")
    check_output_path(fresh, what="law file", error=SpecError)
    write_atomic(fresh, b"made")
    assert fresh.is_symlink() and (tmp_path / "elsewhere" / "fresh.toml").read_bytes() == b"made"
