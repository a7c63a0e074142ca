"""A LibriSpeech stand-in for machines that cannot download LibriSpeech: a synthetic corpus in its exact
archive format (sentences.py, corpus.py) and a loopback HTTP mirror that serves it (mirror.py).
Used by `make demo`, the tests and `make gpu-check`; the production pipeline in data/ never imports it."""
