"""The probes of issue 24, kept in the suite: a study writes only inside its folder and never over a file it did
not write, checks everything before it computes (the dry run saying the same), runs one at a time, leaves a
finished study untouched on a rerun, and speaks of its own keys and flags."""
from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from erftools._lock import FolderLockedError
from erftools.study import load_study, make_plan, format_plan, run_study
from erftools.study.spec import StudyError

from .conftest import TINY_STUDY, make_study_dir

NO_KWARGS = TINY_STUDY.replace("model_kwargs = { layers = [1, 1, 1, 1], channels = [16, 32, 64, 128] }\n", "")


def _tree(root: Path) -> dict:
    """Every file below ``root`` (the study's lock files left out) with its size and modification time."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".erftools-study")}


# ------------------------------------------------------------------------------------------- where it writes
@pytest.mark.parametrize("results", ["/etc", "../../escape", "/usr/share/x"])
def test_a_study_file_cannot_send_its_results_out_of_the_working_directory(results, cue_conflict, tmp_path,
                                                                          monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    text = TINY_STUDY.replace('device = "cpu"', f'device = "cpu"\nresults = "{results}"')
    study = load_study(make_study_dir(tmp_path / "s", cue_conflict, text))
    before = sorted(os.listdir("/etc"))
    with pytest.raises(StudyError, match="key study.results: .* outside the working directory"):
        run_study(study, progress=False)
    with pytest.raises(StudyError, match="outside the working directory"):
        make_plan(study, device="cpu", machine_rate=100.0)  # the dry run refuses it the same way
    assert not (tmp_path / "escape").exists() and sorted(os.listdir("/etc")) == before


def test_a_link_out_of_the_working_directory_is_refused_too(cue_conflict, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "out").symlink_to(tmp_path)
    monkeypatch.chdir(work)
    text = TINY_STUDY.replace('device = "cpu"', 'device = "cpu"\nresults = "out/x"')
    with pytest.raises(StudyError, match="outside the working directory"):
        run_study(load_study(make_study_dir(tmp_path / "s", cue_conflict, text)), progress=False)


def test_a_run_folder_linked_out_of_the_study_folder_is_a_failed_row(tmp_path):
    """A model folder that is a symbolic link out of the results folder: its runs fail, nothing is written there."""
    from erftools.study.checks import Preflight
    from erftools.study.jobs import Job, WeightsChoice
    from erftools.study.runner import StudyOutcome, _Context, _run_job
    from erftools.study.spec import parse_study

    out, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "resnet18").symlink_to(elsewhere)
    st = parse_study(NO_KWARGS, "s.toml", tmp_path)
    commands, got = [], StudyOutcome(out, [])
    ctx = _Context(st, out, Preflight(choices={"resnet18": WeightsChoice("random")}), "cpu", False, None,
                   lambda c: commands.append(c) or 0, False, True, 2, lambda s: None)
    _run_job(ctx, Job(st.models[0], "erf", "sequential"), got, single=False)
    assert "resolves outside the results folder" in got.failures["resnet18/erf-sequential"]
    assert not commands and list(elsewhere.iterdir()) == []


def test_a_system_location_is_refused_even_on_the_command_line(study_file, cli_main, capsys):
    before = sorted(os.listdir("/etc"))
    assert cli_main(["study", str(study_file), "--results", "/etc", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "is a system location" in err and "--results DIR" in err  # the flag, not results=DIR
    assert sorted(os.listdir("/etc")) == before


def test_a_folder_of_the_users_own_files_is_never_written(study_file, tmp_path, cli_main, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my report")
    (out / "study.md").write_text("my notes")
    before = _tree(out)
    assert cli_main(["study", str(study_file), "--results", str(out), "--overwrite", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "holds files that no study wrote (report.md, study.md)" in err and "--results DIR" in err
    assert _tree(out) == before and sorted(os.listdir(out)) == ["report.md", "study.md"]


def test_a_different_study_file_is_refused_naming_the_difference(reference_run, cue_conflict, tmp_path, cli_main,
                                                                capsys):
    out = tmp_path / "results"
    shutil.copytree(reference_run[0], out)
    before = _tree(out)
    other = make_study_dir(tmp_path / "other", cue_conflict,
                           TINY_STUDY.replace("num_images = 2", "num_images = 3").replace("seed = 4", "seed = 5"))
    assert cli_main(["study", str(other), "--results", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "made from a different study file (erf.num_images: 2 -> 3; model[replknet].seed: 4 -> 5;" in err
    assert "pass --overwrite to replace the folder's study" in err and _tree(out) == before
    # --overwrite exists and takes the new file (the runs themselves are stubbed: torchrun's runner)
    text = NO_KWARGS.replace("num_images = 2", "num_images = 3")
    shutil.rmtree(out)
    shutil.copytree(reference_run[0], out)
    (out / "study.toml").write_text(NO_KWARGS)
    (out / "study.json").write_text((reference_run[0] / "study.json").read_text())
    commands = []
    outcome = run_study(load_study(make_study_dir(tmp_path / "third", cue_conflict, text)), results=out,
                        overwrite=True, nproc_per_node=2, report=False, runner=lambda c: commands.append(c) or 0)
    assert len(commands) == 4 and all("--overwrite" in c for c in commands) and not outcome.failures
    assert (out / "study.toml").read_text() == text


# ---------------------------------------------------------------------------------------- checks up front
@pytest.mark.parametrize("change,problem", [
    (('name = "replknet-31B"', 'name = "replknet-31X"'), "replknet: model 'replknet-31X': unknown model"),
    (("channels = [16, 32, 64, 128] }", "channels = [16, 32, 64, 128], bogus = 1 }"),
     "replknet: model_kwargs {'layers': [1, 1, 1, 1], 'channels': [16, 32, 64, 128], 'bogus': 1} do not construct"),
    (("channels = [16, 32, 64, 128] }", "channels = [16, 32] }"), "replknet: model_kwargs"),
    (('weights = "random"\nseed = 4', 'weights = "weights.pth"\nseed = 4'), "replknet: cannot read checkpoint"),
    (('weights = "random"\nseed = 4', 'weights = "empty.pth"\nseed = 4'), "replknet: the weights file"),
    (('weights = "random"\nseed = 4', 'weights = "resnet.pth"\nseed = 4'), "replknet: the checkpoint"),
    (('samplers = ["sequential"]', 'samplers = ["sequential"]\nlayers = ["stages.0", "nope"]'),
     "has no module named 'nope'"),
])
def test_every_model_is_checked_before_the_first_runs(change, problem, cue_conflict, tmp_path, cli_main, capsys):
    """The second model's fault is found before the first model computes anything, the dry run names the same
    fault, and nothing is written."""
    import torch

    from erftools.models import create_model

    text = TINY_STUDY.replace(*change)
    path = make_study_dir(tmp_path / "s", cue_conflict, text)
    (path.parent / "weights.pth").write_text("root:x:0:0:root:/root:/bin/bash\n")  # a text file (/etc/passwd)
    (path.parent / "empty.pth").write_bytes(b"")
    torch.save(create_model("resnet18", "random").state_dict(), path.parent / "resnet.pth")  # another model's
    out = tmp_path / "out"
    with pytest.raises(StudyError) as exc:
        run_study(load_study(path), results=out, progress=False)
    assert "the study cannot start" in str(exc.value) and problem in str(exc.value)
    assert not out.exists()
    assert cli_main(["study", str(path), "--results", str(out), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "Not ready: the study cannot start:" in dry and problem in dry and "--skip-missing" in dry
    assert not out.exists()


def test_the_dry_run_no_longer_passes_a_text_file_as_weights(cue_conflict, tmp_path):
    text = TINY_STUDY.replace('weights = "random"\nseed = 4', 'weights = "weights.pth"\nseed = 4')
    path = make_study_dir(tmp_path / "s", cue_conflict, text)
    (path.parent / "weights.pth").write_text("hello")
    plan = make_plan(load_study(path), results=tmp_path / "out", device="cpu", machine_rate=100.0)
    marks = {mid: mark for mid, _, mark in plan.weights}
    assert marks == {"resnet18": "ok", "replknet": "MISSING"} and not plan.ready


def test_a_run_that_fails_for_its_own_reason_is_a_failed_row(study_file, tmp_path, monkeypatch):
    from erftools.study import runner

    real = runner._erf_in_process

    def flaky(study, job, *args, **kwargs):
        if job.model.id == "resnet18":
            raise RuntimeError("CUDA out of memory (a fault of this run alone)")
        return real(study, job, *args, **kwargs)

    monkeypatch.setattr(runner, "_erf_in_process", flaky)
    out = tmp_path / "out"
    outcome = run_study(load_study(study_file), results=out, progress=False, report=False)
    assert outcome.failures == {"resnet18/erf-sequential": "RuntimeError: CUDA out of memory (a fault of this run "
                                                           "alone)"}
    assert sorted(outcome.ran) == ["replknet/erf-sequential", "replknet/shape-bias", "resnet18/shape-bias"]
    import json

    rows = json.loads((out / "study.json").read_text())["rows"]
    assert {r["verdict"] for r in rows if r["folder"] == "resnet18/erf-sequential"} == {"failed"}


# ----------------------------------------------------------------------------------------- one at a time
HOLD = """
import sys, time
from pathlib import Path
from erftools.study.folder import study_lock
shard = tuple(int(x) for x in sys.argv[2].split("/")) if len(sys.argv) > 2 else None
with study_lock(Path(sys.argv[1]), shard):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(root: Path, shard: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)] + ([shard] if shard else []),
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_study_on_one_folder_is_refused_naming_the_holder(study_file, tmp_path):
    out = tmp_path / "out"
    holder = _hold(out)
    try:
        with pytest.raises(FolderLockedError, match=f"being written by another erftools study: process {holder.pid}"):
            run_study(load_study(study_file), results=out, progress=False)
        assert sorted(os.listdir(out)) == [".erftools-study.lock"]  # nothing else was written
    finally:
        holder.kill()
        holder.wait()


def test_shards_share_a_folder_but_not_a_shard(study_file, tmp_path):
    out = tmp_path / "out"
    holder = _hold(out, "1/2")
    try:
        with pytest.raises(FolderLockedError, match=f"shard 1/2 \\(process {holder.pid}"):
            run_study(load_study(study_file), results=out, progress=False)  # the whole study: refused
        with pytest.raises(FolderLockedError, match=f"shard 1/2 of the study in .* is being run by process "
                                                    f"{holder.pid}"):
            run_study(load_study(study_file), results=out, shard="1/2", progress=False)
        outcome = run_study(load_study(study_file), results=out, shard="2/2", progress=False, report=False)
        assert sorted(outcome.ran) == ["replknet/erf-sequential", "replknet/shape-bias"]
    finally:
        holder.kill()
        holder.wait()


# -------------------------------------------------------------------------------------- a finished rerun
def test_a_finished_study_rerun_touches_nothing(reference_run, tmp_path, study_file, cli_main, capsys):
    out = tmp_path / "results"
    shutil.copytree(reference_run[0], out)  # copy2: the times are kept
    before = _tree(out)
    time.sleep(0.01)
    assert cli_main(["study", str(study_file), "--results", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier from the same inputs, kept as it is") == 4
    assert _tree(out) == before  # not a byte, not a time: the shape-bias folders included


# ---------------------------------------------------------------------------------------- its own words
def test_messages_through_the_study_command_name_its_flags_and_keys():
    """The advice in the engines' and models' messages, translated, names only flags `erftools study` has."""
    import re

    from erftools.cli import build_parser
    from erftools.commands.study import advice
    from erftools.models import resolve
    from erftools.models.create import _offline_hint
    from erftools.study.terms import in_study_terms

    parser = build_parser()
    study_parser = parser._subparsers._group_actions[0].choices["study"]
    flags = {o for a in study_parser._actions for o in a.option_strings}
    messages = [_offline_hint(resolve("resnet18")[0]),
                "download the file and pass its path with --weights PATH.",
                "Use precision='fp32' (the default, the paper's), or pass allow_low_precision=True to accept it",
                "pass overwrite=True to replace it, or choose another output folder",
                "Pass prepare=False to measure them on the model as given"]
    for m in messages:
        text = advice(in_study_terms(m, "replknet-31"))
        used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))
        assert used <= flags | {"--no-prepare"}, (m, text)  # --no-prepare: named as the single command's
        assert "allow_low_precision=True" not in text and "--weights PATH" not in text
    assert "--weights-file replknet-31=PATH" in advice(in_study_terms(messages[1], "replknet-31"))
    assert "allow_low_precision = true in the study's [erf] table" in advice(in_study_terms(messages[2], "x"))
    assert "--overwrite" in advice(in_study_terms(messages[3], "x")) and "--overwrite" in flags


def test_bf16_runs_only_when_the_study_allows_it(tmp_path):
    from erftools.study.jobs import Job, erf_command
    from erftools.study.spec import parse_study

    text = TINY_STUDY.replace('samplers = ["sequential"]', 'precision = "bf16"\nallow_low_precision = true\n'
                                                           'samplers = ["sequential"]')
    st = parse_study(text, "s.toml", tmp_path)
    assert st.erf.allow_low_precision and st.erf.precision == "bf16"
    cmd = erf_command(st, Job(st.models[0], "erf", "sequential"), tmp_path, "random", None, "cpu", 2)
    assert "--allow-low-precision" in cmd and cmd[cmd.index("--precision") + 1] == "bf16"


# --------------------------------------------------------------------------------- dry run on this machine
class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_the_dry_run_marks_downloads_whose_host_is_unreachable(cue_conflict, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    server = http.server.HTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        up = f"http://127.0.0.1:{server.server_address[1]}/resnet18-up.pth"
        down = f"http://127.0.0.1:{_closed_port()}/resnet18-down.pth"
        text = TINY_STUDY.replace('weights = "random"\nseed = 1', f'weights = "{up}"\nseed = 1')
        text = text.replace('weights = "random"\nseed = 4', f'weights = "{down}"\nseed = 4')
        plan = make_plan(load_study(make_study_dir(tmp_path / "s", cue_conflict, text)), results=tmp_path / "o",
                         device="cpu", machine_rate=80.0)
    finally:
        server.shutdown()
    lines = {mid: (text, mark) for mid, text, mark in plan.weights}
    assert lines["resnet18"] == (f"{up} (will be downloaded)", "ok")
    assert lines["replknet"][1] == "to download (network needed)" and "did not answer within 2 s" in lines["replknet"][0]
    shown = format_plan(plan)
    assert "[to download (network needed)] replknet" in shown and "fp32 GEMM rate now, 80 GFLOP/s" in shown
