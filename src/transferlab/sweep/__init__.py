"""The sweep layer: Hydra callbacks and helpers around runs and multiruns.

- device_pool: exclusive, crash-safe holds on device ids (one lock file per device)
- pool_audit: the pool's records.jsonl, who held which device when
- pool_callback: DevicePoolCallback and the transferlab.pool_jobs resolver (launcher=parallel)
- jobs: the job dirs of a sweep dir
- summary: SweepSummary, one line on how a sweep's jobs ended; exit status 1 if any failed
- dir_guard: OutputDirGuard, a run or sweep dir that already holds a run is refused
- optuna_best: BestTrialCallback, the best Optuna trial's job, config and rerun command

Training code never imports this package; what it needs from a pool is in transferlab.utils.devices.
"""
