"""db.query.summary: operations and targets in order, as written, and never a literal."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_monitoring.collectors import _sql_summary
from otel_monitoring.collectors._sql_summary import MAX_SUMMARY_LENGTH, QuerySummary, flavor_for, summarize


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        # the examples of the semantic conventions (single-quoted 'artists' is a literal here, see below)
        ("SELECT *\nFROM wuser_table\nWHERE username = ?", ("SELECT", "wuser_table", "SELECT wuser_table")),
        (
            "INSERT INTO shipping_details\n (order_id,\n address)\nSELECT order_id,\n address\nFROM orders\n"
            "WHERE order_id = ?",
            ("INSERT", "shipping_details", "INSERT shipping_details SELECT orders"),
        ),
        (
            "SELECT * FROM songs, artists WHERE songs.artist_id == artists.id",
            ("SELECT", "songs", "SELECT songs artists"),
        ),
        (
            "SELECT order_date FROM (SELECT * FROM orders o JOIN customers c ON o.customer_id = c.customer_id)",
            ("SELECT", "", "SELECT SELECT orders customers"),
        ),
        ('SELECT * FROM "song list"', ("SELECT", '"song list"', 'SELECT "song list"')),
    ],
)
def test_follows_the_semantic_convention_examples(statement: str, expected: tuple[str, str, str]) -> None:
    assert summarize(statement) == QuerySummary(*expected)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("UPDATE users SET name = 'bob', karma = 3 WHERE id = 7", "UPDATE users"),
        ("DELETE FROM sessions WHERE expires < 1700000000", "DELETE sessions"),
        (
            "SELECT u.name, o.total FROM users AS u LEFT OUTER JOIN orders o ON o.user_id = u.id WHERE u.id = ?",
            "SELECT users orders",
        ),
        ("DELETE FROM users WHERE id IN (SELECT user_id FROM bans WHERE reason = 'spam')", "DELETE users SELECT bans"),
        (
            "WITH recent AS (SELECT * FROM orders WHERE placed > '2024-01-01') "
            "SELECT * FROM recent JOIN users ON users.id = recent.user_id",
            "SELECT orders SELECT recent users",
        ),
        ("SELECT a FROM t UNION ALL SELECT b FROM u", "SELECT t SELECT u"),
        ("select count(*) from public.users u join public.orders o using (id)", "select public.users public.orders"),
        ("INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", "INSERT kv"),
        ("INSERT OR REPLACE INTO kv (k, v) VALUES (:k, :v)", "INSERT kv"),
        ("SELECT * FROM jobs WHERE state = %(state)s FOR UPDATE SKIP LOCKED", "SELECT jobs"),
        ("SELECT REPLACE(name, 'a', 'b') FROM t", "SELECT t"),
        ("SELECT * FROM generate_series(1, 10) AS g, totals", "SELECT totals"),
        ("CREATE TABLE IF NOT EXISTS items (id INTEGER DEFAULT 42, name TEXT DEFAULT 'x')", "CREATE items"),
        ("DROP TABLE items", "DROP items"),
        ("SAVEPOINT sa_savepoint_17", "SAVEPOINT"),
        ('PRAGMA main.table_info("items")', "PRAGMA"),
        ("(SELECT a FROM x) UNION (SELECT b FROM y)", "SELECT x SELECT y"),
    ],
)
def test_summarizes_statements_by_operation_and_targets(statement: str, expected: str) -> None:
    assert summarize(statement).summary == expected


def test_main_operation_and_collection_are_those_of_the_outer_statement() -> None:
    cte = summarize("WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved")

    assert (cte.operation, cte.collection, cte.summary) == ("INSERT", "b", "DELETE a INSERT b SELECT moved")


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM t WHERE name = 'unterminated FROM secret_table",
        "SELECT * FROM t /* an unterminated comment FROM secret_table",
        'SELECT * FROM "secret_table',
        "SELECT $tag$ secret_table",
    ],
)
def test_unreadable_statement_gets_its_operation_only(statement: str) -> None:
    assert summarize(statement) == QuerySummary("SELECT", "", "SELECT")


@pytest.mark.parametrize("statement", ["secret_value", "42", "'secret_value'", "", "   "])
def test_statement_without_a_known_operation_gets_no_summary(statement: str) -> None:
    assert summarize(statement) == QuerySummary("", "", "")


def test_mysql_backslash_escapes_keep_the_string_closed() -> None:
    statement = r"SELECT * FROM t WHERE a = 'it\'s FROM secret_table' AND b = ?"

    assert summarize(statement, flavor_for("mysql")).summary == "SELECT t"
    # In standard SQL the backslash is an ordinary character: the string ends early and the rest is unreadable.
    assert "secret_table" not in summarize(statement, flavor_for("postgresql")).summary


def test_mysql_double_quoted_strings_are_literals() -> None:
    summary = summarize('INSERT INTO `events` (name) VALUES ("FROM secret_table")', flavor_for("mysql"))

    assert summary.summary == "INSERT `events`"


def test_summary_is_cut_at_a_target_boundary_at_255_characters() -> None:
    tables = [f"table_number_{index:03d}" for index in range(40)]
    summary = summarize("SELECT * FROM " + ", ".join(tables)).summary  # noqa: S608 - a statement to summarize

    assert len(summary) <= MAX_SUMMARY_LENGTH
    assert summary.split(" ")[1:] == tables[: len(summary.split(" ")) - 1]  # whole names only, in order
    assert len(summary) + len(tables[0]) + 1 > MAX_SUMMARY_LENGTH  # the next whole name would not fit


# Table names with no digits and no quotes, so a number or a quoted string can only come from a literal;
# SQL keywords are not table names.
_KEYWORDS = _sql_summary._RESERVED | _sql_summary._OPERATIONS | _sql_summary._TARGET_MODIFIERS
_TABLE = st.from_regex(r"[a-z]{3,12}", fullmatch=True).filter(lambda name: name.upper() not in _KEYWORDS)
_STRING = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
_NUMBER = st.one_of(st.integers(min_value=0, max_value=10**12), st.floats(allow_nan=False, allow_infinity=False))


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@settings(max_examples=300, deadline=None)
@given(table=_TABLE, other=_TABLE, text=_STRING, number=_NUMBER, shape=st.integers(min_value=0, max_value=4))
def test_literals_never_reach_the_summary(table: str, other: str, text: str, number: float, shape: int) -> None:
    literal, numeral = _quoted(text), repr(number)
    # Statements built from generated pieces on purpose: they are summarized, never executed.
    statement, expected = [
        (f"SELECT * FROM {table} WHERE name = {literal} AND n > {numeral}", f"SELECT {table}"),  # noqa: S608
        (f"INSERT INTO {table} (a, b) VALUES ({literal}, {numeral})", f"INSERT {table}"),  # noqa: S608
        (f"UPDATE {table} SET a = {literal} WHERE id = {numeral}", f"UPDATE {table}"),  # noqa: S608
        (
            f"DELETE FROM {table} WHERE a IN (SELECT a FROM {other} WHERE b = {literal})",  # noqa: S608
            f"DELETE {table} SELECT {other}",
        ),
        (
            f"SELECT {literal}, {numeral} FROM {table} JOIN {other} ON {table}.x = {numeral}",  # noqa: S608
            f"SELECT {table} {other}",
        ),
    ][shape]

    result = summarize(statement)

    # The summary is fixed by the statement's structure, whatever the literals say.
    assert result.summary == expected
    assert not re.search(r"[\d']", result.summary + result.collection + result.operation)
