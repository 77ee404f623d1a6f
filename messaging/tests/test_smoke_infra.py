import pytest

from conftest import using_postgres


@pytest.mark.postgres
def test_runs_on_postgres(db):
    assert using_postgres()
