"""A path where a format goes that exists but is no regular file was called a folder: a FIFO or
/dev/null got "'/dev/null' is a folder, not a format". A folder still is one; a pipe or a device
gets the format-file reader's own line, "not a regular file (a pipe or a device)"."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_where_a_format_goes_is_no_folder(tmp_path, run_cli):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = run_cli("gmse", str(fifo))
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "folder" not in result.stderr
    assert f"cannot read format file {fifo}: not a regular file (a pipe or a device)" in result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/null") or os.path.isdir("/dev/null"), reason="no /dev/null here")
def test_dev_null_where_a_format_goes_is_no_folder(run_cli):
    result = run_cli("rank", "/dev/null")
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "folder" not in result.stderr and "not a regular file" in result.stderr


def test_a_folder_is_still_named_a_folder(tmp_path, run_cli):
    result = run_cli("gmse", str(tmp_path))
    assert result.code == 2 and f"'{tmp_path}' is a folder, not a format" in result.stderr
