"""GPU packing: trials per hour with 1, 2 and 4 trials sharing one GPU (resources.gpu 1, 0.5, 0.25).

Each setting runs the same study (the built-in 1-D CNN on MNIST-1D, random
search, a fixed number of trials and epochs) on a local Ray instance that owns
one GPU, while a thread samples ``nvidia-smi`` for the GPU's utilization and
memory. Needs a machine with an NVIDIA GPU and a CUDA build of torch.

    python benchmarks/gpu_packing.py                       # 24 trials x 10 epochs per setting
    python benchmarks/gpu_packing.py --trials 8 --epochs 3 --out results/
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from _common import print_table, temp_workdir, write_json

SETTINGS = {1: 1.0, 2: 0.5, 4: 0.25}  # trials per GPU -> resources.gpu per trial
SPACE = {
    "lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
    "width": {"type": "int", "low": 32, "high": 128, "log": True},
    "depth": {"type": "int", "low": 1, "high": 3},
    "batch_size": {"type": "categorical", "choices": [64, 128]},
}


class GpuSampler:
    """Samples utilization (%) and memory (MiB) of GPU 0 every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.util, self.mem = interval, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.is_set():
            out = subprocess.run(query, capture_output=True, text=True).stdout.strip()
            if out:
                util, mem = (float(v) for v in out.split(","))
                self.util.append(util)
                self.mem.append(mem)
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_setting(per_gpu: int, trials: int, epochs: int, workdir: Path) -> dict[str, Any]:
    import logging

    import ray

    import tuner

    ray.init(num_gpus=1, num_cpus=max(per_gpu, 2), _node_ip_address="127.0.0.1", include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)
    try:
        spec = {"name": f"pack-{per_gpu}", "workload": "cnn", "data": "mnist1d", "strategy": "random",
                "trials": trials, "epochs": epochs, "parallel": per_gpu, "seed": 0, "pruner": "none",
                "resources": {"cpu": 1, "gpu": SETTINGS[per_gpu]}, "params": SPACE}
        start = time.perf_counter()
        with GpuSampler() as gpu:
            study = tuner.launch(spec, storage=f"sqlite:///{workdir / 'tuner.db'}")
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    devices = sorted({t.user_attrs.get("device", "?") for t in study.trials})
    return {
        "trials_per_gpu": per_gpu,
        "gpu_per_trial": SETTINGS[per_gpu],
        "trials_per_hour": round(trials / wall * 3600, 1),
        "wall_s": round(wall, 1),
        "gpu_util_mean_pct": round(statistics.fmean(gpu.util), 1) if gpu.util else None,
        "gpu_mem_peak_mib": max(gpu.mem) if gpu.mem else None,
        "complete": sum(t.state.name == "COMPLETE" for t in study.trials),
        "devices": ",".join(devices),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("nvidia-smi") is None:
        print("no GPU here (nvidia-smi not found): this benchmark runs on a GPU machine only")
        return 2
    rows = []
    for per_gpu in SETTINGS:
        with temp_workdir(f"bench-gpu-{per_gpu}-") as workdir:
            rows.append({"side": f"{per_gpu} per GPU", **run_setting(per_gpu, args.trials, args.epochs, workdir)})
    print_table(f"GPU packing: {args.trials} trials x {args.epochs} epochs, CNN on MNIST-1D", rows,
                ("trials_per_hour", "wall_s", "gpu_util_mean_pct", "gpu_mem_peak_mib", "complete", "devices"),
                ratio_of="trials_per_hour", baseline="1 per GPU")
    if args.out is not None:
        print(f"wrote {write_json(args.out, 'gpu_packing', {'results': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
