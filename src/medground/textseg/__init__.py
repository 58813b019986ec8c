"""Text -> mask on the frozen LiteMedSAM encoder, with a "not present" answer (issue 24).

:mod:`~medground.textseg.collection` reads the shared collection and fixes the split by patient;
the segmenter itself lives in :mod:`~medground.textseg.model`.
"""
