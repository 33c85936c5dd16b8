"""Fixtures shared by the test modules."""
import pytest

from tiny import single_thread


@pytest.fixture
def one_thread():
    """One torch thread for the test."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread for a whole module (use with ``pytest.mark.usefixtures``)."""
    with single_thread():
        yield
