"""keep_freed_memory: the glibc setting that removes the page faults of each CPU forward, and when it stays off."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from dfine.memory import keep_freed_memory

# a few ops on several-MB channels-last maps, as a backbone stem runs them; prints minor faults per step
_WORKLOAD = """
import resource, sys, torch
import torch.nn.functional as F
import dfine
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    print(dfine.keep_freed_memory().describe())
x = torch.rand(1, 16, 320, 320).contiguous(memory_format=torch.channels_last)
w = torch.rand(16, 16, 3, 3).contiguous(memory_format=torch.channels_last)
def step():
    y = F.conv2d(F.pad(x, (0, 1, 0, 1)), w, padding=1).relu_()
    return torch.cat([y, y], 1)
with torch.inference_mode():
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
print("faults per step", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _faults_per_step(mode: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "DFINE_KEEP_FREED_MEMORY"}
    done = subprocess.run([sys.executable, "-c", _WORKLOAD, mode], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.rsplit("faults per step", 1)[1]), done.stdout


@pytest.mark.skipif(not GLIBC, reason="a glibc setting")
def test_kept_memory_removes_the_page_faults_of_each_step():
    faults_default, _ = _faults_per_step("default")
    faults_kept, said = _faults_per_step("keep")
    assert "memory allocator: keeps freed memory (glibc mallopt" in said
    assert faults_default > 1000  # each step maps its buffers afresh (a 6.6 MB map is ~1,600 pages)
    # 0 on a quiet machine; the kernel may still reclaim some idle heap pages (DAMON, memory pressure)
    assert faults_kept * 5 < faults_default


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("DFINE_KEEP_FREED_MEMORY", "0", "DFINE_KEEP_FREED_MEMORY=0"),
        ("MALLOC_TRIM_THRESHOLD_", "1000000", "MALLOC_TRIM_THRESHOLD_ is set in the environment"),
        ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2", "an allocator is preloaded"),
    ],
)
def test_the_user_s_allocator_settings_win(monkeypatch, variable, value, reason):
    monkeypatch.delenv("DFINE_KEEP_FREED_MEMORY", raising=False)
    monkeypatch.setenv(variable, value)
    setting = keep_freed_memory()
    assert not setting.applied and reason in setting.reason
    assert setting.describe().startswith("memory allocator: unchanged (")


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.delenv("DFINE_KEEP_FREED_MEMORY", raising=False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    setting = keep_freed_memory()
    assert not setting.applied and setting.reason == "not glibc"
