"""The demo: the whole pipeline on this machine, an example beside the package
(not part of it). `make demo` runs it; `pipeline.py` drives it, `app.py` is
the application its workers run."""
