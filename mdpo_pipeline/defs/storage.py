"""Dagster's PostgreSQL storage, patient with a database that restarts.

Dagster reconnects to PostgreSQL 5 times with exponential backoff from 0.2 s, about 6 s in all; a write that still
finds no server is dropped (a log line: "Exception while writing logger call to event log") or fails its step. A
PostgreSQL restart takes longer than that more often than not (a container restart, a minor upgrade, a failover),
so the deployment (docker/dagster.yaml, integrations/deploy.py) uses ``PatientPostgresStorage``: the same storage
whose run and event-log writes reconnect for about a minute before giving up (``RECONNECT_TRIES``), and whose event
write is tried again when the server cut its connection in the middle (a fast shutdown ends every session: the
statement was rolled back, so the retry stores the event once). The schedule storage keeps Dagster's behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy

from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage, PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config, retry_pg_connection_fn

#: Connection attempts after the first, each waiting twice as long from 0.2 s: 0.2 + 0.4 + ... + 25.6 ≈ 51 s.
RECONNECT_TRIES = 8
RECONNECT_WAIT_S = 0.2


@contextmanager
def patient_connection(engine: Any) -> Iterator[Any]:
    """A connection of ``engine``, reconnecting for about a minute while the server is unreachable."""
    conn = retry_pg_connection_fn(engine.connect, retry_limit=RECONNECT_TRIES, retry_wait=RECONNECT_WAIT_S)
    try:
        yield conn
    finally:
        conn.close()


def _indexed(event) -> bool:
    """Whether storing ``event`` also updates asset or check indexes after its row."""
    return event.is_dagster_event and event.dagster_event_type in (*ASSET_EVENTS, *ASSET_CHECK_EVENTS)


def _from_config(cls, inst_data, config_value):
    return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
               should_autocreate_tables=config_value.get("should_autocreate_tables", True),
               token_provider=get_token_provider_from_config(config_value))


class PatientPostgresEventLogStorage(PostgresEventLogStorage):
    """PostgresEventLogStorage whose connections wait out a restart (``patient_connection``) and whose event write
    survives its connection being cut mid-statement."""

    def _connect(self):
        return patient_connection(self._engine)

    def store_event(self, event) -> None:
        for attempt in range(RECONNECT_TRIES):
            try:
                return super().store_event(event)
            except sqlalchemy.exc.DBAPIError as e:
                # Only a connection lost under a statement; any other error is the caller's to see. The row may
                # have been committed before the loss (the insert is followed by a NOTIFY): never store it twice.
                # An asset or check event also updates its indexes after the insert: left to Dagster as before.
                if not e.connection_invalidated or attempt == RECONNECT_TRIES - 1 or _indexed(event):
                    raise
                time.sleep(RECONNECT_WAIT_S)
                if self._stored(event):
                    return None
        return None

    def _stored(self, event) -> bool:
        """Whether this very event (its serialized row) is in the run's log already."""
        row = self._event_to_row(event)
        table = SqlEventLogStorageTable
        query = sqlalchemy.select(sqlalchemy.func.count()).select_from(table).where(
            table.c.run_id == row["run_id"], table.c.event == row["event"])
        with self._connect() as conn:
            return conn.execute(query).scalar() > 0

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return _from_config(cls, inst_data, config_value)


class PatientPostgresRunStorage(PostgresRunStorage):
    """PostgresRunStorage whose connections wait out a restart (``patient_connection``)."""

    def connect(self):
        return patient_connection(self._engine)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return _from_config(cls, inst_data, config_value)


class PatientPostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage (the same ``postgres_db`` config) with patient run and event-log storages."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None,
                 token_provider=None):
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PatientPostgresRunStorage(postgres_url, should_autocreate_tables,
                                                      token_provider=token_provider)
        self._event_log_storage = PatientPostgresEventLogStorage(postgres_url, should_autocreate_tables,
                                                                 token_provider=token_provider)
        self._schedule_storage = PostgresScheduleStorage(postgres_url, should_autocreate_tables,
                                                         token_provider=token_provider)
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return _from_config(cls, inst_data, config_value)
