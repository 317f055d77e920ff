"""lossbench's built-in executors plugin: where ``lossbench matrix`` runs its cells.

- ``local``: ``lossbench run`` processes on this machine, one GPU each (the default);
- ``ray``: tasks on a Ray cluster (``pip install 'lossbench[ray]'``);
- ``slurm``: jobs on a Slurm cluster through submitit (``pip install 'lossbench[slurm]'``);
  ``-X cluster=local|debug`` runs the same code path on this machine.

Declarations only: ray and submitit are imported when an executor is built.
"""

from __future__ import annotations

import lossbench
from lossbench import Component, Param

_MULTI = Param("multi_host", bool, None, "Cells may run on other hosts (default: ray with an address, slurm on a "
               "cluster); then the store, artifacts and checkpoints must be shared (checked before anything runs).")
_SHARED = Param("shared_fs", bool, False, "LOSSBENCH_HOME (artifacts, checkpoints) is on a folder every host mounts.")

EXECUTORS = [
    Component(
        kind="executor",
        name="local",
        summary="Cells as lossbench run processes on this machine, --jobs at a time, one GPU each",
        factory="lossbench.executors.local:LocalExecutor",
        description="Today's behaviour and the default. Parallel cells on the embedded SQLite store go through "
                    "a local MLflow server on 127.0.0.1. A failed cell is not retried; re-running the matrix "
                    "resumes it.",
    ),
    Component(
        kind="executor",
        name="ray",
        summary="Cells as Ray tasks (num_gpus per cell); crashed cells retried by Ray and resumed",
        factory="lossbench_executors.ray_executor:RayExecutor",
        params=(
            Param("address", str, None, "Ray cluster to join (auto, host:6379, ray://host:10001); "
                  "unset: start a private Ray instance on this machine, stopped at the end."),
            Param("gpus_per_cell", float, None, "GPUs per cell (Ray num_gpus; default 1 where the cluster has "
                  "GPUs, else 0). A DDP cell asks for G."),
            Param("cpus_per_cell", float, 1.0, "CPUs per cell (Ray num_cpus)."),
            Param("num_gpus", int, None, "GPUs of the private instance (logical slots are fine for tests)."),
            Param("num_cpus", int, None, "CPUs of the private instance."),
            Param("max_retries", int, 2, "Retries of a crashed cell (not of a user error or a NaN loss)."),
            _MULTI, _SHARED,
        ),
        description="Each cell is one Ray task that runs the cell's lossbench run argv as a subprocess on the "
                    "node Ray chose, with the CUDA_VISIBLE_DEVICES Ray assigned. A crash (exit other than a "
                    "user error, a killed process, a lost worker) is retried up to max_retries times; the "
                    "retry resumes the same MLflow run from the last checkpoint.",
    ),
    Component(
        kind="executor",
        name="slurm",
        summary="Cells as Slurm jobs through submitit; preemption and time limits requeue and resume",
        factory="lossbench_executors.slurm_executor:SlurmExecutor",
        params=(
            Param("cluster", str, "slurm", "slurm, or local / debug: submitit's LocalExecutor / DebugExecutor "
                  "on this machine (the same code path without a cluster).", choices=("slurm", "local", "debug")),
            Param("partition", str, None, "Slurm partition."),
            Param("account", str, None, "Slurm account."),
            Param("qos", str, None, "Slurm QOS."),
            Param("constraint", str, None, "Slurm constraint (e.g. a GPU type)."),
            Param("time_min", int, 1440, "Time limit of one job in minutes; a cell that needs longer is "
                  "requeued at the limit and resumes from its last checkpoint."),
            Param("gpus_per_node", int, None, "GPUs per cell (Slurm sets the devices; default 1 on slurm, 0 else)."),
            Param("cpus_per_task", int, 8, "CPUs per cell."),
            Param("mem_gb", float, None, "Memory per cell in GB."),
            Param("max_retries", int, 2, "Resubmissions of a crashed cell (not of a user error or a NaN loss)."),
            Param("max_num_timeout", int, 30, "How many time limits one cell may chain through requeue."),
            Param("signal_delay_s", int, 120, "Seconds before the time limit at which the job is signalled "
                  "(SIGUSR2) to stop its cell and requeue."),
            Param("folder", str, None, "submitit's job folder (default: the matrix's work folder)."),
            _MULTI, _SHARED,
        ),
        description="Each cell is one submitit job whose callable runs the cell's lossbench run argv. On "
                    "preemption or the time limit submitit calls its checkpoint(): the cell is stopped with "
                    "SIGTERM (its run KILLED, its checkpoint kept) and the job requeued, which resumes the run.",
    ),
]


@lossbench.hookimpl
def register_executors(register):
    for component in EXECUTORS:
        register(component)
