from typing import Iterator

import pytest

from pdp_observe.stacks import harness


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Postgres]:
    """A throwaway PostgreSQL cluster for one test module, stopped by PID afterwards."""
    pg = harness.start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield pg
    finally:
        pg.stop()
