"""`erftools study`: built-in studies offline, the printed table, broken files, missing inputs."""
from __future__ import annotations

import json


def test_list_and_dry_run_of_the_builtin_studies_offline(cli_main, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ERFTOOLS_WEIGHTS_DIR", raising=False)
    assert cli_main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert "replknet-table10" in out and "replknet-fig5" in out
    assert cli_main(["study", "replknet-table10", "--dry-run", "--device", "cpu", "--results",
                     str(tmp_path / "t10")]) == 0
    out = capsys.readouterr().out
    assert "[MISSING] ERF images" in out and "--images DIR" in out
    assert "https://drive.google.com/file/d/15gohkZof_Qi4__jluUXacB_0Gvbuf5GI/view" in out
    assert "save it as RepLKNet-13_ERF.pth and pass --weights-file replknet-13=PATH or --weights-dir DIR" in out
    assert "timm/resnet101.tv_in1k" in out and "ERF (sequential)" in out and "ERF (random)" in out
    assert "Estimated compute time" in out and not (tmp_path / "t10").exists()  # a dry run writes nothing
    assert cli_main(["study", "replknet-fig5", "--dry-run", "--device", "cpu", "--stimuli", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[not run] replknet-3: no public weights" in out
    assert "download.openmmlab.com/mmclassification/v0/replknet/replknet-31B_3rdparty_in1k" in out
    assert "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k" in out


def test_a_builtin_study_without_its_inputs_says_what_is_missing(cli_main, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ERFTOOLS_WEIGHTS_DIR", raising=False)
    assert cli_main(["study", "replknet-table10", "--results", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "cannot start" in err and "--images DIR" in err and "--weights-file replknet-31=PATH" in err
    assert "--skip-missing" in err and not (tmp_path / "r").exists()


def test_a_broken_study_file_names_its_line_and_key(cli_main, capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "b"\n\n[erf]\nsize = 64\nnum_imgs = 2\n\n[[model]]\nname = "resnet18"\n')
    assert cli_main(["study", str(bad), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}, line 6, key erf.num_imgs: unknown key (did you mean 'num_images'?)" in err


def test_the_table_of_a_finished_study(reference_run, study_file, cli_main, capsys):
    """Running a finished study again computes nothing and prints the table; --report-only the same."""
    root, _ = reference_run
    before = json.loads((root / "study.json").read_text())
    assert cli_main(["study", str(study_file), "--results", str(root), "--no-report", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert json.loads((root / "study.json").read_text()) == before
    lines = [s for s in out.splitlines() if s.startswith("ResNet-18 (random)")]
    assert any("r @ 20% (%)" in s and "99.00" in s and "DIFFERS" in s for s in lines)
    assert any("shape bias" in s and "agrees" in s for s in lines)
    assert "not run (no public weights)" in out
    assert cli_main(["study", str(study_file), "--results", str(root), "--report-only", "--no-report"]) == 0
    assert "narrow RepLKNet (random)" in capsys.readouterr().out
