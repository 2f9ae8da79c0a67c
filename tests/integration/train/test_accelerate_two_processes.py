"""`train dpo` under `accelerate launch` with 2 CPU processes (DDP over gloo) trains and saves.

accelerate's `--cpu` flag starts a single process (multi-CPU there goes through MPI), so the
test uses its multi-process launcher (`--multi_gpu`, torch's elastic launcher) with no GPU
visible: Trainer then runs on CPU and accelerate picks MULTI_CPU with the gloo backend. The
same command by hand (about 15 s on 2 cores):

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --mixed_precision no --dynamo_backend no $(which mmalign) train dpo --model M \\
        --data PAIRS --image-root ROOT --out OUT --max-steps 2 --batch-size 2
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_dpo_trains_and_saves(tiny_model, tiny_world, pref_file, pref_pairs,
                                          tmp_path):
    entry = tmp_path / "mmalign_entry.py"  # the CLI, runnable whether or not it is installed
    entry.write_text("from mmalign.cli import app\napp()\n")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(entry),
           "train", "dpo", "--model", str(tiny_model), "--data", str(pref_file),
           "--image-root", str(tiny_world), "--out", str(out), "--ref-cache",
           str(tmp_path / "cache"), "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3",
           "--lora-r", "4", "--logging-steps", "1", "--save-steps", "2"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    final = out / "final"
    assert (final / "model.safetensors").exists() and (final / "config.json").exists()
    assert (out / "checkpoint-2").is_dir()
    log = json.loads((final / "train_log.json").read_text())
    assert [e["step"] for e in log if "loss" in e] == [1, 2]
    reference = json.loads((out / "reference.json").read_text())
    assert reference["processes"] == 2
    # the reference pass was split: rank 0 scored half of the pairs, 2 per pass
    assert reference["precomputed_forward_passes"] == -(-(len(pref_pairs) // 2) // 2)
    cache_lines = Path(reference["cache_file"]).read_text().splitlines()
    assert len(cache_lines) == 2 * len(pref_pairs)  # both ranks' results, written once
