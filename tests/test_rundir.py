"""The run directory's file names are spelled once in the package: in `sightsound/rundir.py`."""

import re
from pathlib import Path

from sightsound import rundir
from sightsound.rundir import RunDir

PACKAGE = Path(rundir.__file__).parent
NAMES = {key: value for key, value in vars(rundir).items() if key.isupper() and isinstance(value, str)}


def _sources() -> dict[Path, str]:
    return {path: path.read_text() for path in PACKAGE.rglob("*.py")}


def test_each_file_name_is_spelled_once_in_the_package():
    sources = _sources()
    files = [name for name in NAMES.values() if "." in name]
    assert len(files) >= 15
    for name in files:
        places = [(path.relative_to(PACKAGE), n) for path, text in sources.items()
                  for n in [len(re.findall(rf"[\"']{re.escape(name)}[\"']", text))] if n]
        assert places == [(Path("rundir.py"), 1)], (name, places)


def test_no_run_directory_folder_is_joined_by_its_literal_name():
    """A folder name ("final", "media", "manifests", ...) joined onto a path outside rundir.py
    (`x / "final"`) would be a second spelling."""
    folders = [name for name in NAMES.values() if "." not in name and len(name) > 3 and not name.endswith("-")]
    for path, text in _sources().items():
        if path.name == "rundir.py":
            continue
        for name in folders:
            assert not re.search(rf"/ [\"']{re.escape(name)}[\"']", text), (path, name)


def test_paths():
    run = RunDir("runs/x")
    assert run.samples == Path("runs/x/samples.jsonl")
    assert run.corpus("no-agfv") == Path("runs/x/corpus-no-agfv.jsonl")
    assert run.eval("mmau", "sft").predictions == Path("runs/x/eval/mmau/sft/predictions.jsonl")
    assert run.benchmark("mmau").samples == Path("runs/x/eval/mmau/samples.jsonl")
    assert run.training("grpo").checkpoint(12) == Path("runs/x/grpo/checkpoint-12")
    assert run.manifest("teach") == Path("runs/x/manifests/teach.json")
    assert run.config("sft", launch=True) == Path("runs/x/config/sft.launch.yaml")
