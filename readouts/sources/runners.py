"""One small runner per engine: open read-only, run one query under the source's timeout, return rows.

The connection URL is read from the environment variable the source names, at run time, and never
leaves this module: every error is re-raised as ``SourceError`` with a plain message that names the
variable, never its value (``_scrub`` also removes the URL should a driver quote it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class SourceError(Exception):
    """A refresh cannot complete; ``str(error)`` is safe to store and show (no URL, no secret)."""


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple]
    types: tuple[str, ...] = ()  # each column's engine type, lower case ('json', 'map(varchar, varchar)', …)

    def type_of(self, column: str) -> str:
        by_name = dict(zip((c.lower() for c in self.columns), self.types, strict=False))
        return by_name.get(column, "")

    def dicts(self) -> list[dict]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def source_url(url_env: str) -> str:
    value = os.environ.get(url_env, "")
    if not value:
        raise SourceError(f"The environment variable {url_env} is not set (it must hold the source's connection URL).")
    return value


def _scrub(message: str, url: str) -> str:
    """The driver's message without the URL or its password, first line only."""
    text = (message or "").strip().splitlines()[0] if message else "unknown error"
    parts = urlsplit(url)
    secrets = [url]
    if parts.password:
        secrets += [parts.password, unquote(parts.password)]
    if parts.netloc:
        secrets.append(parts.netloc)
    if parts.path and len(parts.path) > 1 and parts.path != "/:memory:":  # a DuckDB file's path
        secrets += [parts.path, parts.path.lstrip("/")]
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, "«hidden»")
    return text[:500]


def _with_timeout(run: Callable[[], Result], *, cancel: Callable[[], None], timeout_s: float, what: str) -> Result:
    """Run ``run`` in a thread; past the timeout call ``cancel`` (the engine's interrupt) and report it."""
    box: dict = {}

    def target():
        try:
            box["result"] = run()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        cancel()
        thread.join(10)
        raise SourceError(f"The {what} query ran past the source's timeout of {timeout_s:g} s and was cancelled.")
    if "error" in box:
        raise box["error"]
    return box["result"]


# --- DuckDB -------------------------------------------------------------------------------------------
def _duckdb_path(url: str) -> str:
    if not url.startswith("duckdb://"):
        raise SourceError("The DuckDB URL must look like duckdb:///path/to/file.duckdb or duckdb:///:memory:.")
    path = url[len("duckdb://") :]
    path = path[1:] if path.startswith("/:memory:") else path
    return path or ":memory:"


def run_duckdb(*, url: str, sql: str, timeout_s: float) -> Result:
    import duckdb

    path = _duckdb_path(url)
    try:
        if path == ":memory:":  # Parquet lakes: nothing to write to but memory; writes to files refused below
            con = duckdb.connect(":memory:")
        else:
            con = duckdb.connect(path, read_only=True)
        con.execute("SET TimeZone = 'UTC'")
    except duckdb.Error as e:
        raise SourceError(f"Could not open the DuckDB database: {_scrub(str(e), url)}") from None

    def run() -> Result:
        cur = con.execute(sql)
        return Result(
            [d[0] for d in cur.description], cur.fetchall(), tuple(str(d[1]).lower() for d in cur.description)
        )

    try:
        return _with_timeout(run, cancel=con.interrupt, timeout_s=timeout_s, what="DuckDB")
    except duckdb.Error as e:
        raise SourceError(f"DuckDB refused the query: {_scrub(str(e), url)}") from None
    finally:
        con.close()


# --- PostgreSQL ---------------------------------------------------------------------------------------
PG_TYPES = {25: "text", 1043: "varchar", 114: "json", 3802: "jsonb"}  # the type OIDs the builder tells apart


def run_postgresql(*, url: str, sql: str, timeout_s: float) -> Result:
    import psycopg

    if not url.startswith(("postgresql://", "postgres://")):
        raise SourceError("The PostgreSQL URL must start with postgresql://.")
    try:
        con = psycopg.connect(url, connect_timeout=min(10, max(1, int(timeout_s))), autocommit=False)
    except psycopg.Error as e:
        raise SourceError(f"Could not connect to PostgreSQL: {_scrub(str(e), url)}") from None
    try:
        with con.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout_s * 1000)}",))
            cur.execute("SELECT set_config('TimeZone', 'UTC', true)")
            cur.execute(sql)
            types = tuple(PG_TYPES.get(d.type_code, str(d.type_code)) for d in cur.description)
            result = Result([d.name for d in cur.description], cur.fetchall(), types)
        con.rollback()
        return result
    except psycopg.errors.QueryCanceled:
        raise SourceError(
            f"The PostgreSQL query ran past the source's timeout of {timeout_s:g} s and was cancelled."
        ) from None
    except psycopg.errors.ReadOnlySqlTransaction:
        raise SourceError("The source's SELECT tried to write; the query runs in a read-only transaction.") from None
    except psycopg.Error as e:
        raise SourceError(f"PostgreSQL refused the query: {_scrub(str(e), url)}") from None
    finally:
        con.close()


# --- Spark Connect ------------------------------------------------------------------------------------
def run_spark(*, url: str, sql: str, timeout_s: float) -> Result:
    if not url.startswith("sc://"):
        raise SourceError("The Spark URL must look like sc://host:port (Spark Connect).")
    try:
        from pyspark.sql.connect.session import SparkSession
    except ImportError as e:  # pragma: no cover - pyspark-client is a runtime dependency
        raise SourceError(f"The Spark Connect client is not installed: {e}") from None
    try:
        session = SparkSession.builder.remote(url).create()
        session.conf.set("spark.sql.session.timeZone", "UTC")
    except Exception as e:  # noqa: BLE001 - grpc/pyspark raise many types; report plainly
        raise SourceError(f"Could not reach the Spark Connect server: {_scrub(str(e), url)}") from None

    def run() -> Result:
        df = session.sql(sql)
        table = df.toArrow()
        types = tuple(str(f.type).lower() for f in table.schema)
        return Result(list(table.column_names), [tuple(r.values()) for r in table.to_pylist()], types)

    try:
        return _with_timeout(run, cancel=session.interruptAll, timeout_s=timeout_s, what="Spark")
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"Spark refused the query: {_scrub(str(e), url)}") from None
    finally:
        try:
            session.stop()
        except Exception:  # noqa: BLE001, S110 - the session may already be gone
            pass


RUNNERS = {"duckdb": run_duckdb, "postgresql": run_postgresql, "spark": run_spark}


def run(*, engine: str, url_env: str, sql: str, timeout_s: float) -> Result:
    url = source_url(url_env)
    try:
        return RUNNERS[engine](url=url, sql=sql, timeout_s=timeout_s)
    except SourceError as e:
        raise SourceError(_scrub(str(e), url)) from None
