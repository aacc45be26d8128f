"""Scaling on a local Ray cluster (not a test): 1 vs 2 Ray Train workers, and a 6-cell grid sequential vs concurrent.

(a) samples/s of one mDPO run on 1 worker (2 CPUs) vs 2 workers (1 CPU each, DDP over gloo) at the same global batch
    and steps: the figure the ray launcher's data parallelism buys on this machine;
(b) the wall time of 6 runs (DPO and mDPO × 3 seeds, one worker of 1 CPU each) one after the other vs all 6 submitted
    at once: Ray runs as many as the cluster holds and queues the rest, as it does for a grid's cells.

Runs on the project's own data, base model and reference cache (`make demo` first) through ``launch_ray``, the code
the ``TrainingLauncher(mode="ray")`` resource calls; adapters go to a temporary folder. The cluster is started here
(``ray.init(num_cpus=...)``, token authentication as Ray's default) and shut down at the end.

    .venv/bin/python benchmarks/bench_ray.py                 # ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_ray.py --steps 40 --cells 6 --cpus 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mdpo_pipeline import use_private_defaults

use_private_defaults()  # a script is an entry point: offline and private before the hub clients load

from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
from mdpo_pipeline.integrations.ray_launcher import launch_ray
from mdpo_pipeline.pipeline.train import train_run_config
from mdpo_pipeline.pipeline.project import Project



def _config(project: Project, out: Path, method: str, seed: int, steps: int, batch: int) -> dict:
    cfg = train_run_config(project, method, out)
    cfg.update(max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=1, seed=seed,
               save_steps=10_000, logging_steps=max(1, steps // 4))
    return dict(cfg)


def _quiet(_: str) -> None:
    pass


def main() -> None:
    """Run both measurements and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each run")
    parser.add_argument("--batch", type=int, default=8, help="global batch (pairs per step)")
    parser.add_argument("--cells", type=int, default=6, help="runs of the grid measurement")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local cluster")
    args = parser.parse_args()

    # optional: only the ray launcher needs Ray (the `ray` extra)
    import ray

    project = Project.discover()
    context = ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    address = context.address_info["gcs_address"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    print(f"local Ray cluster: {args.cpus} CPUs at {address}; runs in {tmp}")
    try:
        # (a) one run, 1 worker with all CPUs vs 2 workers with one each, the same global batch
        figures = {}
        for workers in (1, 2):
            settings = LauncherSettings(mode="ray", ray_address=address, num_workers=workers,
                                        cpus_per_worker=args.cpus // workers)
            cfg = _config(project, tmp / f"scale-{workers}", "mdpo", 0, args.steps, args.batch // workers)
            start = time.perf_counter()
            summary = launch_ray(cfg, settings, log=_quiet)
            wall = time.perf_counter() - start
            samples = args.steps * args.batch
            figures[workers] = samples / summary["seconds"]
            print(f"(a) {workers} worker(s) × {args.cpus // workers} CPU: {figures[workers]:6.1f} samples/s in training "
                  f"({summary['seconds']:.1f} s of {wall:.1f} s wall, {summary['num_processes']} process(es))")
        print(f"(a) 2 workers / 1 worker: {figures[2] / figures[1]:.2f}×")

        # (b) a grid of cells: one after the other vs all submitted at once
        settings = LauncherSettings(mode="ray", ray_address=address, num_workers=1, cpus_per_worker=1)
        cells = [(m, s) for s in range(args.cells) for m in ("dpo", "mdpo")][: args.cells]

        def run(tag: str, method: str, seed: int) -> dict:
            cfg = _config(project, tmp / f"{tag}-{method}-s{seed}", method, seed, args.steps, args.batch)
            return launch_ray(cfg, settings, log=_quiet)

        start = time.perf_counter()
        for method, seed in cells:
            run("seq", method, seed)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        with ThreadPoolExecutor(len(cells)) as pool:
            list(pool.map(lambda c: run("par", *c), cells))
        concurrent = time.perf_counter() - start
        print(f"(b) {len(cells)} cells (1 worker × 1 CPU each) on {args.cpus} CPUs: sequential {sequential:.1f} s, "
              f"submitted at once {concurrent:.1f} s: {sequential / concurrent:.2f}× faster")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
