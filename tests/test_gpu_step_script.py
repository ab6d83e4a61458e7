"""`benchmarks/gpu_step.py`, the one-GPU measurement script, kept runnable: its CPU smoke mode runs the
same four configurations on a few-dimension model of the Llama-3.1-8B config's structure."""
import json
import subprocess
import sys

from conftest import ROOT


def test_the_gpu_step_script_runs_its_four_configurations_on_cpu():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--smoke"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"padding_free"')]
    assert [(r["padding_free"], r["gradient_checkpointing"]) for r in rows] == [
        (False, False), (False, True), (True, False), (True, True)]
    for r in rows:
        assert r["real_tokens"] == rows[0]["real_tokens"] > 0
        assert (r["processed_tokens"] == r["real_tokens"]) == r["padding_free"]  # padded batches pad
        assert abs(r["loss"] - rows[0]["loss"]) < 1e-3  # the same step, whatever the layout or recomputation
        assert r["mfu"] > 0 and r["peak_memory_gib"] is None  # no CUDA here
