"""Where the map stages' work runs: in this process (`local`), or on a Ray cluster (`ray`).

    engine: {kind: ray, workers: 4, num_gpus: 1}        # a stage's own setting, or `run.engine` for all
    for job, result in map_jobs(cfg.engine, partial(load_backend, cfg.model), work, jobs):
        ...write result...                                # the driver alone writes, in job order

prepare, teach, verify and eval cut their pending work into jobs, the same whatever the engine;
`work(state, job)` computes a job's results from the state `setup()` built (a loaded model, an HTTP
client, a checker) and the stage alone writes them, so a run's files, ids, manifests and resume
are the same on either engine. With `ray`, each of `workers` actors calls `setup()` once; one that
dies is restarted and its job run again (`max_retries`). Needs `pip install 'sightsound[ray]'`.
Details: docs/reference.md, "sightsound/engine.py".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

from sightsound.config import ConfigError

Job = TypeVar("Job")
ENGINES = ("local", "ray")


@dataclass
class EngineConfig:
    kind: str = "local"  # local: in this process | ray: on a Ray cluster's actors
    address: str | None = None  # ray: a running cluster ("auto", "ray://head:10001"); null: start a local one
    workers: int = 2  # ray: actors, each with its own model (or HTTP client)
    num_cpus: float = 1.0  # ray: CPUs per actor
    num_gpus: float = 0.0  # ray: GPUs per actor (e.g. 1: one model per GPU)
    max_retries: int = 3  # ray: restarts of a worker that died, and retries of its job
    runtime_env: dict = field(default_factory=dict)  # ray: e.g. {env_vars: {HF_HOME: /shared/hf}}

    def __post_init__(self):
        if self.kind not in ENGINES:
            raise ConfigError(f"engine.kind {self.kind!r}: expected one of {', '.join(ENGINES)}")


def map_jobs(engine: EngineConfig, setup: Callable[[], object], work: Callable[[object, Job], object],
             jobs: Iterable[Job]) -> Iterator[tuple[Job, object]]:
    """(job, work(state, job)) for each job, in order; `state = setup()` once per worker, and only
    if there is a job (nothing is loaded for a stage with nothing left to do)."""
    jobs = list(jobs)
    if not jobs:
        return
    if engine.kind == "local":
        state = setup()
        for job in jobs:
            yield job, work(state, job)
        return
    yield from _on_ray(engine, setup, work, jobs)


class _Worker:
    """A Ray actor: the stage's state, built once; jobs run on it one at a time."""

    def __init__(self, setup, work):
        self.state, self.work = setup(), work

    def run(self, job):
        return self.work(self.state, job)


def _on_ray(engine: EngineConfig, setup, work, jobs: list) -> Iterator[tuple[object, object]]:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise ConfigError("engine.kind ray needs Ray: pip install 'sightsound[ray]'") from None
    if not ray.is_initialized():
        local = {} if engine.address else {"num_cpus": max(1, int(engine.workers * engine.num_cpus)),
                                           "include_dashboard": False}
        ray.init(address=engine.address, runtime_env=engine.runtime_env or None, log_to_driver=False, **local)
    worker = ray.remote(num_cpus=engine.num_cpus, num_gpus=engine.num_gpus, max_restarts=engine.max_retries,
                        max_task_retries=engine.max_retries)(_Worker)
    actors = [worker.remote(setup, work) for _ in range(min(engine.workers, len(jobs)))]
    try:
        pool = ActorPool(actors)
        for job, result in zip(jobs, pool.map(lambda actor, job: actor.run.remote(job), jobs)):
            yield job, result
    finally:
        for actor in actors:
            ray.kill(actor)
