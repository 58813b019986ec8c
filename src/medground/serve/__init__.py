"""``medground serve``: an OpenAI-compatible API over the grounding and in-context models.

Import :mod:`medground.serve.app` for the app (it loads torch); this package itself imports nothing heavy.
"""
