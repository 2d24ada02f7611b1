"""The runs of a study: folders, shards, weights, and the torchrun command lines of --nproc-per-node."""
from __future__ import annotations

import sys

import pytest

from erftools.cli import build_parser
from erftools.study import load_study, run_study
from erftools.study.jobs import jobs, parse_shard, resolve_weights, shard_models
from erftools.study.spec import StudyError

from .conftest import TINY_STUDY, make_study_dir


def test_jobs_folders_and_shards():
    st = load_study("replknet-table10")
    assert [j.folder for j in jobs(st)][:2] == ["resnet-101/erf-sequential", "resnet-101/erf-random"]
    ids = [m.id for m in st.models]
    halves = [[m.id for m in shard_models(st, (i, 2))] for i in (1, 2)]
    assert sorted(halves[0] + halves[1]) == sorted(ids) and not set(halves[0]) & set(halves[1])
    fig5 = load_study("replknet-fig5")
    thirds = [[m.id for m in shard_models(fig5, (i, 3))] for i in (1, 2, 3)]
    assert "replknet-3" not in sum(thirds, [])  # no public weights: never a run of any shard
    assert sorted(len(t) for t in thirds) == [1, 2, 2]
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "1-2", "x"):
        with pytest.raises(StudyError, match="1 <= i <= n"):
            parse_shard(bad)


def test_weights_come_from_the_file_argument_the_folder_or_the_environment(tmp_path, monkeypatch):
    st = load_study("replknet-table10")
    m = next(x for x in st.models if x.id == "replknet-31")
    monkeypatch.delenv("ERFTOOLS_WEIGHTS_DIR", raising=False)
    assert "weights needed" in resolve_weights(st, m).problem
    ckpt = tmp_path / "RepLKNet-31_ERF.pth"
    ckpt.write_bytes(b"not read here")
    assert resolve_weights(st, m, weights_dir=tmp_path).weights == str(ckpt.resolve())
    monkeypatch.setenv("ERFTOOLS_WEIGHTS_DIR", str(tmp_path))
    assert resolve_weights(st, m).weights == str(ckpt.resolve())
    other = tmp_path / "mine.pth"
    other.write_bytes(b"x")
    assert resolve_weights(st, m, {"replknet-31": str(other)}).weights == str(other.resolve())
    with pytest.raises(StudyError, match="does not exist"):
        resolve_weights(st, m, {"replknet-31": str(tmp_path / "absent.pth")})
    assert resolve_weights(st, st.models[0]).weights == "tv_in1k"


def _after(cmd: list[str], marker: str) -> list[str]:
    return cmd[cmd.index(marker) + 1:]


def test_nproc_per_node_runs_each_measurement_under_torchrun(tmp_path, cue_conflict):
    """The commands are torchrun over erftools' own CLI, and erftools' parser reads back the study's settings."""
    text = TINY_STUDY.replace("model_kwargs = { layers = [1, 1, 1, 1], channels = [16, 32, 64, 128] }\n", "")
    st = load_study(make_study_dir(tmp_path, cue_conflict, text))
    commands = []
    outcome = run_study(st, results=tmp_path / "out", nproc_per_node=4, report=False,
                        runner=lambda cmd: commands.append(cmd) or 0)
    assert not outcome.failures and len(commands) == 4
    for cmd in commands:
        assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4"]
        assert cmd[6:8] == ["-m", "erftools.cli"]
    erf = build_parser().parse_args(commands[2][8:])  # the RepLKNet's ERF
    assert (erf.command, erf.model, erf.weights, erf.seed, erf.size, erf.num_images, erf.sampler, erf.device) == \
        ("erf", "replknet-31B", "random", 4, 64, 2, "sequential", "cpu")
    assert erf.images is None and erf.out == str(tmp_path / "out" / "replknet" / "erf-sequential")
    assert [float(t) for t in erf.thresholds] == [0.2, 0.3, 0.5, 0.99] and erf.precision == "fp32"
    sb = build_parser().parse_args(commands[1][8:])  # resnet18's shape bias
    assert (sb.command, sb.model, sb.weights, sb.seed, sb.batch_size, sb.bootstrap, sb.allow_incomplete) == \
        ("shape-bias", ["resnet18"], ["random"], 1, 6, 10, True)
    assert sb.stimuli == str(tmp_path / "stimuli") and sb.out == str(tmp_path / "out" / "resnet18" / "shape-bias")
    failed = run_study(st, results=tmp_path / "out", nproc_per_node=2, report=False, runner=lambda cmd: 3)
    assert len(failed.failures) == 4 and "exited with status 3" in failed.failures["resnet18/shape-bias"]


def test_model_kwargs_cannot_go_through_torchrun(tmp_path, cue_conflict):
    """Known before anything runs: the study is refused (nothing written), or runs the others with skip_missing."""
    st = load_study(make_study_dir(tmp_path, cue_conflict))
    with pytest.raises(StudyError, match="replknet: has model_kwargs, which the single commands under torchrun"):
        run_study(st, results=tmp_path / "out", nproc_per_node=2, report=False, runner=lambda cmd: 0)
    assert not (tmp_path / "out").exists()
    outcome = run_study(st, results=tmp_path / "out", nproc_per_node=2, report=False, runner=lambda cmd: 0,
                        skip_missing=True)
    assert "model_kwargs" in outcome.skipped["replknet"] and not outcome.failures


def test_skip_missing_runs_the_others_and_lists_the_missing(tmp_path, monkeypatch, cue_conflict):
    monkeypatch.delenv("ERFTOOLS_WEIGHTS_DIR", raising=False)
    text = TINY_STUDY.replace('weights = "random"\nseed = 4',
                              'download = { url = "https://drive.google.com/file/d/X/view", file = "tiny.pth" }')
    st = load_study(make_study_dir(tmp_path, cue_conflict, text))
    commands = []
    outcome = run_study(st, results=tmp_path / "out", nproc_per_node=2, report=False, skip_missing=True,
                        runner=lambda cmd: commands.append(cmd) or 0)
    assert [c[c.index("--model") + 1] for c in commands] == ["resnet18", "resnet18"]
    assert "tiny.pth" in outcome.skipped["replknet"]
    assert {r.verdict for r in outcome.rows if r.model == "replknet"} == {"missing"}


def test_a_results_folder_of_another_study_is_refused(tmp_path, cue_conflict):
    st = load_study(make_study_dir(tmp_path, cue_conflict))
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.toml").write_text(TINY_STUDY.replace('name = "tiny"', 'name = "other"'))
    with pytest.raises(StudyError, match="another study \\('other'\\)"):
        run_study(st, results=out, nproc_per_node=2, report=False, runner=lambda cmd: 0, skip_missing=True)
