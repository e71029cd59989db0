"""Options for every test run: ``--slow``, and what doctest collection leaves out."""

import logging
import os
import tempfile

import pytest

# PyTorch on one thread, here and in the command line's set_threads() and the processes
# tests start: on a machine shared with other jobs two threads of small convolutions and
# solves wait on each other (the fast tests took 4x longer beside one busy process)
os.environ.setdefault("OMP_NUM_THREADS", "1")

# __main__ runs the command line on import; the napari plugin needs Qt, and its dock
# widget is tested in tests/test_napari_plugin.py
collect_ignore = ["src/tlseg/cli/__main__.py", "src/tlseg/napari"]


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (plate runs on Dask, kill and "
                          "resume, napari, teaching or training for more than a few seconds)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _library_log_as_found():
    """Undo what a test's call of ``tlseg.cli.main`` does to the 'tlseg' logger (it adds
    a handler that prints), so the tests and docstring examples after it see the library
    as a program that sets up no logging does."""
    logger = logging.getLogger("tlseg")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


@pytest.fixture(autouse=True)
def _examples_write_into_tmp_path(request, monkeypatch):
    """Docstring examples make their folders with :mod:`tempfile`: put them in the
    example's tmp_path, as every test's files are, instead of leaving them in /tmp."""
    if type(request.node).__name__ == "DoctestItem":
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
