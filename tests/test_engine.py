"""The engines: prepare → teach → verify → eval on a local Ray cluster (2 CPUs, loopback) write the
records the local engine writes; a killed worker and a killed driver lose and duplicate nothing."""

import json
import subprocess
import sys
import threading
import time

import pytest

from sightsound.engine import EngineConfig, map_jobs
from sightsound.models import ModelConfig
from sightsound.stages import evaluate, prepare, teach, verify
from sightsound.store import read_jsonl
from tests.conftest import kill_when_written

LOCAL = EngineConfig()
RAY = EngineConfig(kind="ray", workers=2, num_cpus=1)
FILES = ["samples.jsonl", "skipped.jsonl", "traces.jsonl", "consensus.jsonl", "verdicts.jsonl",
         "eval/predictions.jsonl"]


def test_the_local_engine_sets_up_once_only_when_there_is_work_and_keeps_the_order():
    built = []

    def setup():
        built.append(1)
        return 10

    assert list(map_jobs(LOCAL, setup, lambda state, job: state + job, [])) == [] and built == []
    assert list(map_jobs(LOCAL, setup, lambda state, job: state + job, [3, 1, 2])) == [(3, 13), (1, 11), (2, 12)]
    assert built == [1]


def test_an_unknown_engine_is_a_config_error():
    from sightsound.config import ConfigError

    with pytest.raises(ConfigError, match="engine.kind 'spark'"):
        EngineConfig(kind="spark")


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def teach_config(run, tiny_models, engine, **kw):
    return teach.TeachConfig(out=str(run), model=ModelConfig(model=str(tiny_models["teacher"]), batch_size=4), n=2,
                             max_new_tokens=12, num_frames=4, frame_size=56, chunk=2, engine=engine, progress=False, **kw)


def map_stages(run, world, tiny_models, engine) -> dict[str, list[str]]:
    """prepare → teach → verify → eval with `engine`; the records, the run directory's path masked."""
    prepare.main(prepare.PrepareConfig(dataset="synth", root=str(world), out=str(run), num_frames=4, frame_size=56,
                                       chunk=4, engine=engine, progress=False))
    teach.main(teach_config(run, tiny_models, engine))
    # the tiny teacher is untrained: its votes are made unanimous so that verify has every trace to check
    consensus = [dict(row, unanimous=True) for row in read_jsonl(run / "consensus.jsonl")]
    (run / "consensus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in consensus))
    student = ModelConfig(model=str(tiny_models["student"]), batch_size=4)
    verify.main(verify.VerifyConfig(out=str(run), checker="local", model=student, chunk=8, engine=engine,
                                    progress=False))
    evaluate.main(evaluate.EvalConfig(samples=str(run / "samples.jsonl"), out=str(run / "eval"), model=student,
                                      method="direct", max_new_tokens=4, chunk=8, engine=engine, progress=False))
    return records(run)


def records(run, files=FILES) -> dict[str, list[str]]:
    return {name: sorted(json.dumps(row, sort_keys=True).replace(str(run), "RUN") for row in read_jsonl(run / name))
            for name in files}


@pytest.fixture(scope="module")
def local_records(world, tiny_models, tmp_path_factory):
    return map_stages(tmp_path_factory.mktemp("local"), world, tiny_models, LOCAL)


def test_the_ray_engine_writes_the_local_engines_records(cluster, local_records, world, tiny_models, tmp_path):
    on_ray = map_stages(tmp_path / "ray", world, tiny_models, RAY)
    assert all(local_records[name] for name in FILES if name != "skipped.jsonl")
    assert on_ray == local_records


def _workers():
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if "ray::_Worker" in " ".join(p.info["cmdline"] or [])]


def test_a_worker_killed_mid_stage_is_replaced_and_its_job_run_again(cluster, local_records, world, tiny_models,
                                                                      tmp_path):
    run = tmp_path / "run"
    prepare.main(prepare.PrepareConfig(dataset="synth", root=str(world), out=str(run), num_frames=4, frame_size=56,
                                       progress=False))
    done = []
    stage = threading.Thread(target=lambda: done.append(teach.main(teach_config(run, tiny_models, RAY))))
    stage.start()
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and stage.is_alive() and killed is None:
        written = (run / "consensus.jsonl").read_text().count("\n") if (run / "consensus.jsonl").exists() else 0
        busy = [p for p in _workers() if "_Worker.run" in " ".join(p.info["cmdline"] or [])]
        if written >= 2 and busy:
            busy[0].kill()
            killed = busy[0].pid
        time.sleep(0.05)
    stage.join(timeout=600)
    assert killed is not None and done and done[0]["counts"]["pending"] == 0
    assert _teach_only_equal(run, local_records)


def _teach_only_equal(run, local_records) -> bool:
    """The local run's consensus was rewritten unanimous after teach: compare the votes themselves."""
    ours = records(run, ["traces.jsonl", "consensus.jsonl"])
    theirs = [json.dumps(dict(json.loads(row), unanimous=None), sort_keys=True) for row in local_records["consensus.jsonl"]]
    mine = [json.dumps(dict(json.loads(row), unanimous=None), sort_keys=True) for row in ours["consensus.jsonl"]]
    return ours["traces.jsonl"] == local_records["traces.jsonl"] and sorted(mine) == sorted(theirs)


DRIVER = """
import sys
from sightsound.engine import EngineConfig
from sightsound.models import ModelConfig
from sightsound.stages import teach
teach.main(teach.TeachConfig(out=sys.argv[1], model=ModelConfig(model=sys.argv[2], batch_size=4), n=2,
                             max_new_tokens=12, num_frames=4, frame_size=56, chunk=2, progress=False,
                             engine=EngineConfig(kind="ray", workers=2, address=sys.argv[3])))
"""


def test_a_killed_driver_is_resumed_by_a_rerun_with_nothing_lost_or_duplicated(cluster, local_records, world,
                                                                                 tiny_models, tmp_path):
    run = tmp_path / "run"
    prepare.main(prepare.PrepareConfig(dataset="synth", root=str(world), out=str(run), num_frames=4, frame_size=56,
                                       progress=False))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(run), str(tiny_models["teacher"]), cluster])
    kill_when_written(proc, run / "consensus.jsonl", lines=4)
    assert proc.wait(timeout=60) != 0  # killed, not finished
    written = (run / "consensus.jsonl").read_text().count("\n")
    assert 4 <= written < len(local_records["consensus.jsonl"])
    manifest = teach.main(teach_config(run, tiny_models, RAY))
    assert manifest["counts"]["pending"] == 0 and _teach_only_equal(run, local_records)
