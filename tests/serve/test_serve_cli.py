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


def test_serve_with_an_in_context_size_the_model_cannot_take_fails_cleanly() -> None:
    result = CliRunner().invoke(app, ["serve", "--icl-size", "30"])
    assert result.exit_code == 2
    assert "size 30 must be a positive multiple of 2**2" in result.output


def test_build_app_serves_the_in_context_model_at_the_size_asked(monkeypatch) -> None:
    from medground.icl.segmenter import InContextSegmenter
    from medground.serve.app import build_app

    loaded = []
    load = InContextSegmenter.from_pretrained.__func__

    def recording(cls, path=None, box_path=None, size=None):
        loaded.append(load(cls, path, box_path, size))
        return loaded[-1]

    monkeypatch.setattr(InContextSegmenter, "from_pretrained", classmethod(recording))
    build_app()  # the shipped weights are served at their training size (latency), unless asked
    build_app(icl_size=256)
    assert [s.model.config.size for s in loaded] == [64, 256]


def test_serve_with_a_batch_below_one_fails_cleanly() -> None:
    result = CliRunner().invoke(app, ["serve", "--max-batch", "0"])
    assert result.exit_code == 2
    assert "--max-batch" in result.output and "greater than or equal to 1" in result.output


def test_build_app_batches_the_grounding_model_as_asked(monkeypatch) -> None:
    from medground.serve import app as serve_app
    from medground.serve.app import ServeSettings, build_app

    made = []

    class Recording(serve_app.BatchingGrounder):
        def __init__(self, grounder, max_batch=8):
            super().__init__(grounder, max_batch)
            made.append(self)

    monkeypatch.setattr(serve_app, "BatchingGrounder", Recording)
    build_app()
    build_app(settings=ServeSettings(max_batch=3))
    assert [b.max_concurrent for b in made] == [8, 3]
