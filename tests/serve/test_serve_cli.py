"""``medground serve`` refuses to bind beyond loopback without a token (before loading any model)."""

from typer.testing import CliRunner

from medground.cli import app


def test_serve_beyond_loopback_needs_a_token() -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "give --token" in result.output


def test_serve_with_a_missing_model_folder_fails_cleanly(tmp_path) -> None:
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert f"no model directory at {tmp_path / 'nothing'}" in result.output
