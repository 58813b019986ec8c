"""``medground serve`` refuses to bind beyond loopback without a token (before loading any model)."""

from typer.testing import CliRunner

from medground.cli import app


def test_serve_beyond_loopback_needs_a_token() -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "give --token" in result.output
