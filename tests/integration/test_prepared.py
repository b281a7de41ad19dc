"""Prepared statements (app/models/prepared.py) outlive the migrations of a running release."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table, bindparam, select

from app.bootstrap import Container
from app.models.prepared import Prepared, autocommit


def test_a_statement_prepared_before_a_migration_changed_a_column_type_runs_after_it(
    container: Container,
) -> None:
    """PostgreSQL refuses a prepared statement whose result type a migration changed
    ("cached plan must not change result type") for as long as the connection lives: the
    statement is prepared afresh, not refused on every run (every claim of a worker)."""
    table = Table("prepared_probe", MetaData(), Column("id", String(10), primary_key=True),
                  Column("note", String(10)))
    statement = Prepared("prepared_probe", select(table.c.note).where(
        table.c.id == bindparam("id")))
    with container.engine.connect() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS prepared_probe")
        connection.exec_driver_sql("CREATE TABLE prepared_probe (id varchar(10) PRIMARY KEY,"
                                   " note varchar(10))")
        connection.exec_driver_sql("INSERT INTO prepared_probe VALUES ('a', 'before')")
        connection.commit()
        try:
            with autocommit(connection.connection):
                assert statement.execute(connection, {"id": "a"}).scalar() == "before"
                # The migration, from another connection: widen the column.
                with container.engine.connect() as migration:
                    migration.exec_driver_sql(
                        "ALTER TABLE prepared_probe ALTER COLUMN note TYPE varchar(20)")
                    migration.exec_driver_sql("UPDATE prepared_probe SET note = 'after'")
                    migration.commit()
                assert statement.execute(connection, {"id": "a"}).scalar() == "after"
                assert statement.execute(connection, {"id": "a"}).scalar() == "after"
        finally:
            connection.exec_driver_sql("DROP TABLE prepared_probe")
            connection.commit()
            connection.invalidate()  # not back to the pool with the statement prepared
