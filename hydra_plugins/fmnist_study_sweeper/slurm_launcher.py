"""Slurm through submitit, where how a task ends is its job's business, not the sweep's.

hydra-submitit's launcher submits one job array and reads the results in order: the first task that
a `scancel` (or a dead node, or a SIGKILL) ended without a result raises, the sweep stops there, and
the tasks still running go on logging into a parent run the sweeper has already closed. This one
waits for every task of the array before it returns, and turns each end into that job's result:

- a result: the job ran (finished, skipped, or failed inside the job with its own sentence);
- cancelled (`scancel`, state CANCELLED): the job's outcome, recorded on the parent, not a failure;
- died without a result (the training process killed, out of memory, node lost): submitted again,
  up to `RETRIES` times in all (it resumes from its checkpoint; a finished copy is skipped), then a
  failed job with one sentence. A requeue (`scontrol requeue`, preemption) Slurm handles itself.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
RETRIES = 3  # submissions of a job whose task dies without a result


class JobCancelled(RuntimeError):
    """A task cancelled on Slurm before it finished: its job's outcome (to run it, launch the same command again)."""

    def __init__(self, message: str, slurm_job: str):
        super().__init__(message)
        self.slurm_job = slurm_job


class FmnistSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and job_overrides
        executor = self._executor()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for number, overrides in zip(numbers, job_overrides):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        ended: dict[int, JobReturn] = {}
        pending = list(zip(numbers, job_overrides))
        for submission in range(1, RETRIES + 1):
            arguments = [(list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state())
                         for number, overrides in pending]
            tasks = executor.map_array(self, *zip(*arguments))
            died = []
            for (number, overrides), task in zip(pending, tasks):  # waits for every task, in order
                result, state = self._ending(task, list(overrides))
                if result is None:
                    died.append((number, overrides, task.job_id, state))
                else:
                    ended[number] = result
            if not died:
                break
            pending = [(number, overrides) for number, overrides, _, _ in died]
            if submission < RETRIES:
                log.warning(f"{len(died)} Slurm task(s) ended without a result ({', '.join(f'{j} {s}' for _, _, j, s in died[:3])}): "
                            f"submitting their jobs again (try {submission + 1} of {RETRIES}); they resume from their checkpoints")
        else:
            for number, overrides, job_id, state in died:
                reason = (f"its Slurm task ended without a result each of the {RETRIES} times it ran (last {job_id}, state {state}): "
                          "killed, out of memory, or its node lost? Its log is in the submitit folder")
                ended[number] = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=RuntimeError(reason))
        return [ended[number] for number in numbers]

    def _executor(self):
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # submitit's names for these carry no "slurm_" prefix
        executor.update_parameters(**{key if key in shared else f"slurm_{key}": value for key, value in params.items()})
        return executor

    @staticmethod
    def _ending(task, overrides: list[str]) -> tuple[JobReturn | None, str]:
        """The job's result once its task has ended; None (and the task's state) for a task that died without one."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return task.results()[0], "COMPLETED"
        except FailedJobError as err:  # raised outside the job's own code (Hydra's set-up in the task)
            last = next((line for line in reversed(str(err).strip().splitlines()) if line.strip()), "no message")
            return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=RuntimeError(f"its Slurm task failed: {last}")), "FAILED"
        except UncompletedJobError:
            state = task.state or "UNKNOWN"
            if state.startswith("CANCELLED"):
                cancelled = JobCancelled(f"its Slurm task {task.job_id} was cancelled before it finished", task.job_id)
                return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=cancelled), state
            return None, state
