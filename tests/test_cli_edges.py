"""Sharp edges of the command line found in first real runs: launcher arguments, advice in error messages,
and positional arguments that change meaning with a flag."""

from __future__ import annotations

from click.testing import CliRunner

from modbind.cli.main import cli


def test_align_accepts_the_local_rank_argument_the_deepspeed_launcher_appends(tmp_path):
    for flag in (["--local_rank=0"], ["--local-rank", "3"], ["--local_rank", "1"]):
        shown = CliRunner().invoke(cli, ["align", *flag, "--help"])
        assert shown.exit_code == 0, shown.output
        # Parsing went past the flag: the run fails on the missing recipe, not on an unknown option.
        run = CliRunner().invoke(cli, ["align", *flag, "--recipe", str(tmp_path / "missing.yaml")])
        assert run.exit_code == 2
        assert "recipe file not found" in run.output and "No such option" not in run.output
    help_text = CliRunner().invoke(cli, ["align", "--help"]).output
    assert "local_rank" not in help_text and "deepspeed --num_gpus 8 $(which modbind) align" in help_text
