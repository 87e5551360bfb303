"""Faults found by review37 in the round after f198d1f."""

from __future__ import annotations

import conftest  # noqa: F401  (the suite's fixtures: run_cli, private caches)
import pytest


def _corpus(folder):
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    lines = (" ".join(words[(i * 7 + j * 3) % 5] for j in range(12)) for i in range(400))
    path = folder / "c.txt"
    path.write_text("\n".join(lines))
    return path


@pytest.mark.parametrize("name", ["tok[bold].json", "x" * 100 + "[red]tok.json"])
def test_tokenizer_train_prints_the_written_path_as_it_is(run_cli, tmp_path, monkeypatch, name):
    # stdout said 'tok.json' for --out 'tok[bold].json' (read as rich markup), a path longer than
    # the page was broken over two lines, and the tabs were spaces: a script reading the line got
    # another path.
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / name
    result = run_cli("tokenizer", "train", str(_corpus(tmp_path)), "--vocab-size", "300", "--out", str(out))
    assert result.code == 0, result.stderr
    assert out.is_file()
    (line,) = result.stdout.splitlines()
    path, vocab, digest = line.split("\t")
    assert path == str(out) and vocab.startswith("vocab ") and digest.startswith("sha256 ")


_CACHED_KERNEL = """
from gmse_cli.kernel_cache import numba

@numba.njit(cache=True)
def plus_one(x):
    return x + 1

print(plus_one(41))
"""


def test_a_kernel_compiles_where_no_cache_folder_is_writable(tmp_path):
    # README: where site-packages is read-only and ~/.cache/numba is not writable either, kernels
    # compile in each process. numba raised "RuntimeError: cannot cache function ...: no locator
    # available" instead (a traceback for every command). Neither folder is usable here: the
    # module's __pycache__ and $XDG_CACHE_HOME/numba are files.
    import os
    import subprocess
    import sys

    (tmp_path / "kernelmod.py").write_text(_CACHED_KERNEL)
    (tmp_path / "__pycache__").write_text("")
    (tmp_path / "xdg").mkdir()
    (tmp_path / "xdg" / "numba").write_text("")
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_CACHE_LOCATOR_CLASSES")}
    env.update(PYTHONPATH=os.pathsep.join([str(conftest.REPO_ROOT), str(tmp_path)]), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path / "tmp"), PYTHONDONTWRITEBYTECODE="1")
    for _ in range(2):  # nothing kept between processes: the second compiles again, as well
        done = subprocess.run([sys.executable, "-c", "import kernelmod"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ["42"]
        assert list((tmp_path / "tmp").iterdir()) == []  # the process's own kernel folder is gone


def test_a_link_to_a_missing_folder_is_refused_where_parents_are_made(tmp_path):
    # parents=True (tokenizer train --out, train --out) made the missing folders on the way to the
    # link, whose own folder exists, so the check passed; the write went to the link's target and
    # failed after the work ("cannot write tokenizer lnk: No such file or directory").
    from gmse_cli.atomic import check_output_path
    from gmse_cli.errors import TrainError

    link = tmp_path / "lnk.json"
    link.symlink_to(tmp_path / "gone" / "sub" / "tok.json")
    with pytest.raises(TrainError, match="symbolic link's target") as caught:
        check_output_path(link, what="tokenizer", error=TrainError, parents=True)
    assert str(tmp_path / "gone" / "sub") in str(caught.value)
    # a plain path still has its missing folders made
    plain = tmp_path / "new" / "sub" / "tok.json"
    assert check_output_path(plain, what="tokenizer", error=TrainError, parents=True) == plain


def test_tokenizer_train_to_a_dangling_link_fails_before_training(run_cli, tmp_path):
    pytest.importorskip("tokenizers")
    link = tmp_path / "lnk.json"
    link.symlink_to(tmp_path / "gone" / "tok.json")
    result = run_cli("tokenizer", "train", str(_corpus(tmp_path)), "--vocab-size", "300", "--out", str(link))
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "symbolic link's target" in result.stderr and "training" not in result.stderr
