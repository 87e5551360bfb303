"""A sweep spec from someone else: its [slurm] names reach submitit's job script as
'#SBATCH --key=value' lines, where a newline began a line of shell (run by sbatch, and ending the
#SBATCH header) outside `setup`, the one table documented to run shell. Refused in one line."""

from __future__ import annotations

import conftest
import pytest

SPEC = conftest.REPO_ROOT / "train" / "cpu-mini.toml"


@pytest.mark.parametrize("key", ["partition", "account", "qos", "constraint", "folder"])
def test_a_slurm_name_holding_a_newline_is_refused(run_cli, tmp_path, key):
    text = SPEC.read_text(encoding="utf-8")
    spec = tmp_path / "sweep.toml"
    # a table at the end: every key above it stays at the top level
    spec.write_text(text + f'\n[slurm]\ncluster = "slurm"\n{key} = "gpu\\ntouch /tmp/pwned #"\n', encoding="utf-8")
    res = run_cli("train", str(spec), "--dry-run")
    assert res.code == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"slurm.{key}" in lines[0] and "control character" in lines[0], res.stderr


def test_plain_slurm_names_are_taken(run_cli, tmp_path, shared_data):
    text = SPEC.read_text(encoding="utf-8")
    spec = tmp_path / "sweep.toml"
    spec.write_text(text + '\n[slurm]\ncluster = "slurm"\npartition = "gpu-h100"\nfolder = "logs/%j"\n'
                    'setup = ["source ~/venv/bin/activate"]\n', encoding="utf-8")
    res = run_cli("train", str(spec), "--dry-run", "--data", str(shared_data / "python-docs-3.11.txt.xz"))
    assert res.code == 0, res.stderr
