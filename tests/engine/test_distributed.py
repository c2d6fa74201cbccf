"""Two CPU processes under torchrun (gloo) train and write one set of checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_torchrun_two_cpu_processes(tiny_config_file, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.join(REPO, "src")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
        os.path.join(REPO, "train.py"), "-c", str(tiny_config_file), "--output-dir", str(out),
        "-u", "epoches=1", "train_dataloader.total_batch_size=2", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(x2)" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    assert (out / "last.pth").exists()
    log = (out / "log.txt").read_text().splitlines()
    assert len(log) == 1  # only rank 0 logs
