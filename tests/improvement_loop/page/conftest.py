import sys
from pathlib import Path

import pytest

# page_world (a ten-night catalog, Chromium) sits beside these tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import page_world


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return page_world.build(tmp_path_factory.mktemp("fleet"), per_day=1)


@pytest.fixture(scope="session")
def page(world):
    from robot_runtime.improvement_loop.page.app import PageServer

    # The world's robots polled when it was built, maybe minutes before these tests run (a session fixture, and
    # other files in between under pytest-xdist): an online window of hours keeps them online; arm-3 went
    # quiet 11 h before, so it stays offline.
    server = PageServer(world.catalog, online_window_s=3 * 3600)
    yield server
    server.stop()
