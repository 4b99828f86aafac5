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

    server = PageServer(world.catalog)
    yield server
    server.stop()
