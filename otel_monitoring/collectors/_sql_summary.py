"""A low-cardinality summary of a SQL statement, with every literal left out, for ``db.query.summary``.

https://opentelemetry.io/docs/specs/semconv/database/database-spans/#generating-a-summary-of-the-query

The summary is the statement's operations and their targets, in the order they appear:
``INSERT INTO shipping_details (a) SELECT a FROM orders WHERE id = ?`` becomes
``INSERT shipping_details SELECT orders``. Operations and targets keep the case and quotes they were
written with, as the conventions ask.

Safety comes from what can reach the output, not from removing things: only operation keywords from a
fixed list and identifiers found in target positions (after ``FROM``, ``JOIN``, ``INTO``, ``UPDATE``,
``USING``, a DDL object kind, ``CALL``) are ever emitted. String, number, dollar-quoted and escape-string
literals, placeholders and comments are tokens that are never emitted. A statement the tokenizer cannot
read to the end (an unterminated quote or comment) gets its operation alone, never its text.

This module is the cold path: its result is cached per statement by the database collector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_SUMMARY_LENGTH", "QuerySummary", "SQLFlavor", "flavor_for", "summarize"]

# https://opentelemetry.io/docs/specs/semconv/database/database-spans/#generating-a-summary-of-the-query
MAX_SUMMARY_LENGTH: Final = 255


@dataclass(frozen=True, slots=True)
class QuerySummary:
    """What a statement is: its main operation, main collection and the full summary ("" when unknown)."""

    operation: str
    collection: str
    summary: str


@dataclass(frozen=True, slots=True)
class SQLFlavor:
    """The lexical rules that differ between databases and decide what is a literal."""

    backslash_escapes: bool = False
    """Backslash escapes a quote inside string literals (MySQL and MariaDB by default)."""
    double_quoted_strings: bool = False
    """``"..."`` is a string literal, not an identifier (MySQL and MariaDB by default)."""
    backtick_identifiers: bool = False
    """`` `name` `` quotes an identifier (MySQL, MariaDB, SQLite)."""
    bracket_identifiers: bool = False
    """``[name]`` quotes an identifier (SQL Server, SQLite); elsewhere ``[`` is an array subscript."""


_STANDARD = SQLFlavor()
_FLAVORS = {
    "mysql": SQLFlavor(
        backslash_escapes=True, double_quoted_strings=True, backtick_identifiers=True, bracket_identifiers=False
    ),
    "mariadb": SQLFlavor(
        backslash_escapes=True, double_quoted_strings=True, backtick_identifiers=True, bracket_identifiers=False
    ),
    "sqlite": SQLFlavor(backtick_identifiers=True, bracket_identifiers=True),
    "mssql": SQLFlavor(bracket_identifiers=True),
}


def flavor_for(dialect_name: str) -> SQLFlavor:
    """The flavor for a SQLAlchemy dialect name (``engine.dialect.name``); standard SQL for the others."""
    return _FLAVORS.get(dialect_name, _STANDARD)


# Token kinds.
_WORD, _IDENT, _PUNCT, _LITERAL = 0, 1, 2, 3
_UNTERMINATED = "unterminated"

_COMMON_PATTERNS: tuple[tuple[str, int | str | None], ...] = (
    (r"\s+", None),
    (r"--[^\n]*", None),
    (r"/\*.*?\*/", None),
    (r"/\*", _UNTERMINATED),
    (r"[eE]'(?:[^'\\]|\\.|'')*'", _LITERAL),  # PostgreSQL escape string: backslashes escape
    (r"\$(?P<tag>[^\W\d]\w*)?\$.*?\$(?P=tag)?\$", _LITERAL),  # dollar-quoted string
    (r"\$\d+|%\([^)]*\)s|%s|\?|::|:[^\W\d]\w*|:\d+|@@?\w+", _LITERAL),  # placeholders (and the :: cast)
    (r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\w*", _LITERAL),  # numbers
    (r"[^\W\d][\w$]*", _WORD),
)


def _scanner(flavor: SQLFlavor) -> tuple[re.Pattern[str], tuple[int | str | None, ...]]:
    parts: list[tuple[str, int | str | None]] = list(_COMMON_PATTERNS)
    if flavor.backslash_escapes:
        parts.append((r"'(?:[^'\\]|\\.|'')*'", _LITERAL))
    else:
        parts.append((r"'(?:[^']|'')*'", _LITERAL))
    if flavor.double_quoted_strings:
        parts.append((r'"(?:[^"\\]|\\.|"")*"', _LITERAL))
    else:
        parts.append((r'"(?:[^"]|"")*"', _IDENT))
    if flavor.backtick_identifiers:
        parts.append((r"`(?:[^`]|``)*`", _IDENT))
    if flavor.bracket_identifiers:
        parts.append((r"\[[^\]]*\]", _IDENT))
    # A quote that none of the patterns above closed starts a literal or identifier that never ends.
    parts.append((r"[`'\"$]" if flavor.backtick_identifiers else r"['\"$]", _UNTERMINATED))
    parts.append((r".", _PUNCT))
    pattern = re.compile("|".join(f"(?P<g{i}>{regex})" for i, (regex, _) in enumerate(parts)), re.DOTALL)
    return pattern, tuple(kind for _, kind in parts)


_SCANNERS: dict[SQLFlavor, tuple[re.Pattern[str], tuple[int | str | None, ...]]] = {}


class _Unparseable(ValueError):
    pass


def _tokens(statement: str, flavor: SQLFlavor) -> list[tuple[int, str]]:
    scanner = _SCANNERS.get(flavor)
    if scanner is None:
        scanner = _SCANNERS[flavor] = _scanner(flavor)
    pattern, kinds = scanner
    tokens: list[tuple[int, str]] = []
    for match in pattern.finditer(statement):
        # Each alternative is the group g<N>; lastgroup names the outermost group that closed last.
        kind = kinds[int(match.lastgroup[1:])]  # type: ignore[index]  # every alternative is a named group
        if kind is None:
            continue
        if kind is _UNTERMINATED:
            raise _Unparseable  # carries nothing of the statement
        tokens.append((kind, match.group()))  # type: ignore[arg-type]  # the remaining kinds are ints
    return tokens


# Statements whose operations and targets are read; every other known command is summarized by its name alone
# (SAVEPOINT sa_savepoint_1 must not become one series per savepoint).
_DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT"})
_DDL = frozenset({"CREATE", "DROP", "ALTER", "TRUNCATE"})
_PROCEDURE = frozenset({"CALL", "EXEC", "EXECUTE"})
_PREFIXES = frozenset({"WITH", "EXPLAIN"})  # read on: the statement they introduce follows
_COMMANDS = frozenset(
    {
        "ANALYZE", "ATTACH", "BEGIN", "CHECKPOINT", "CLOSE", "CLUSTER", "COMMENT", "COMMIT", "COPY", "DEALLOCATE",
        "DECLARE", "DESC", "DESCRIBE", "DETACH", "DISCARD", "DO", "END", "FETCH", "FLUSH", "GRANT", "KILL", "LISTEN",
        "LOAD", "LOCK", "MOVE", "NOTIFY", "OPTIMIZE", "PRAGMA", "PREPARE", "REFRESH", "REINDEX", "RELEASE", "RESET",
        "REVOKE", "ROLLBACK", "SAVEPOINT", "SET", "SHOW", "START", "TABLE", "UNLISTEN", "USE", "VACUUM", "VALUES",
    }
)  # fmt: skip
_OPERATIONS = _DML | _DDL | _PROCEDURE | _PREFIXES | _COMMANDS
# An INSERT/UPDATE/DELETE after these words is part of a clause, not an operation: ON DELETE CASCADE,
# FOR UPDATE, ON CONFLICT DO UPDATE, ON DUPLICATE KEY UPDATE, WHEN MATCHED THEN UPDATE, INSERT OR REPLACE.
_NOT_AFTER = frozenset({"ON", "DO", "FOR", "THEN", "OF", "BEFORE", "AFTER", "INSTEAD", "OR", "KEY", "GRANT"})
# Words that introduce a list of tables.
_TABLE_LIST = frozenset({"FROM", "JOIN", "USING", "STRAIGHT_JOIN"})
# Words skipped while a target is expected.
_TARGET_MODIFIERS = frozenset({"ONLY", "LATERAL", "LOW_PRIORITY", "HIGH_PRIORITY", "DELAYED", "IGNORE", "QUICK", "TOP"})
_DDL_WORDS = frozenset(
    {
        "TABLE", "VIEW", "INDEX", "UNIQUE", "TEMP", "TEMPORARY", "SEQUENCE", "SCHEMA", "DATABASE", "TRIGGER",
        "FUNCTION", "PROCEDURE", "MATERIALIZED", "OR", "REPLACE", "IF", "NOT", "EXISTS", "GLOBAL", "LOCAL",
        "UNLOGGED", "VIRTUAL", "TYPE", "EXTENSION", "CONCURRENTLY", "ONLY", "CLUSTERED", "NONCLUSTERED", "FULLTEXT",
        "SPATIAL", "RECURSIVE", "DEFINER", "ALGORITHM", "FOREIGN", "POLICY", "ROLE", "USER", "DOMAIN",
    }
)  # fmt: skip
# Words that can never be a table alias, so they end the alias that may follow a target.
_RESERVED = frozenset(
    {
        "WHERE", "ON", "USING", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "NATURAL", "GROUP",
        "ORDER", "HAVING", "LIMIT", "OFFSET", "FETCH", "UNION", "INTERSECT", "EXCEPT", "MINUS", "WINDOW", "FOR",
        "SET", "VALUES", "RETURNING", "WITH", "SELECT", "INSERT", "UPDATE", "DELETE", "INTO", "FROM", "AND", "OR",
        "NOT", "IN", "IS", "NULL", "LATERAL", "STRAIGHT_JOIN", "TABLESAMPLE", "QUALIFY", "PARTITION", "DEFAULT",
        "OUTPUT", "WHEN", "THEN", "ELSE", "END", "CASE", "DISTINCT", "ALL", "LOCK", "NOWAIT", "SKIP", "USE",
        "FORCE", "IGNORE", "PIVOT", "UNPIVOT", "MATCHED", "CONFLICT", "DO", "OVERRIDING",
        "PROCEDURE", "ROWS", "RANGE", "CONNECT", "START", "MERGE", "EXISTS",
    }
)  # fmt: skip

# Parser states: what the next word means.
_NONE, _LIST_TARGET, _ONE_TARGET, _AFTER_TARGET, _DDL_TARGET = range(5)


def summarize(statement: str, flavor: SQLFlavor = _STANDARD) -> QuerySummary:
    """The operation, main collection and ``db.query.summary`` of ``statement``; literals never appear.

    >>> summarize("SELECT u.name FROM users AS u JOIN orders o ON o.user_id = u.id WHERE u.email = 'a@b.c'")
    QuerySummary(operation='SELECT', collection='users', summary='SELECT users orders')
    >>> summarize("INSERT INTO shipping_details (order_id) SELECT order_id FROM orders WHERE id = ?").summary
    'INSERT shipping_details SELECT orders'
    """
    try:
        tokens = _tokens(statement, flavor)
    except _Unparseable:
        return _operation_only(statement)
    if not tokens:
        return QuerySummary("", "", "")
    first = _first_word(tokens)
    if first is None or first.upper() not in _OPERATIONS:
        return QuerySummary("", "", "")
    if first.upper() in _COMMANDS:
        return QuerySummary(first, "", first)
    return _walk(tokens)


def _first_word(tokens: list[tuple[int, str]]) -> str | None:
    for kind, text in tokens:
        if kind == _WORD:
            return text
        if text != "(":  # "(SELECT ...) UNION (SELECT ...)" starts with a parenthesis
            return None
    return None


def _operation_only(statement: str) -> QuerySummary:
    # The first word of an unreadable statement, only if it is a known operation: a keyword, never data.
    match = re.match(r"[\s(]*([A-Za-z]+)", statement)
    if match is None or match.group(1).upper() not in _OPERATIONS:
        return QuerySummary("", "", "")
    operation = match.group(1)
    return QuerySummary(operation, "", operation)


def _walk(tokens: list[tuple[int, str]]) -> QuerySummary:
    parts: list[str] = []
    operations: list[tuple[int, int]] = []  # (depth, index in parts)
    targets: list[tuple[int, int]] = []
    state = _NONE
    stack: list[int] = []  # the state to restore at each closing parenthesis
    previous = ""  # the previous token, upper-cased
    ddl_index = False
    count = len(tokens)
    index = 0
    while index < count:
        kind, text = tokens[index]
        upper = text.upper() if kind == _WORD else text
        following = tokens[index + 1][1] if index + 1 < count else ""
        if kind == _PUNCT:
            if text == "(":
                # A derived table in a FROM list counts as its entry: an alias and a comma may follow.
                stack.append(_AFTER_TARGET if state in (_LIST_TARGET, _AFTER_TARGET) else state)
                state = _NONE
            elif text == ")":
                state = stack.pop() if stack else _NONE
            elif text == ",":
                state = _LIST_TARGET if state in (_AFTER_TARGET, _LIST_TARGET) else _NONE
            elif text == ";":
                state, stack = _NONE, []
            elif text != ".":
                state = _NONE if state == _AFTER_TARGET else state
            previous = text
            index += 1
            continue
        if kind == _LITERAL:
            state = _NONE if state != _DDL_TARGET else state
            previous = "?"
            index += 1
            continue
        if kind == _WORD and _is_operation(upper, previous, following):
            operations.append((len(stack), len(parts)))
            parts.append(text)
            state = _NONE
            if upper == "UPDATE":
                state = _LIST_TARGET
            elif upper in _DDL:
                state, ddl_index = _DDL_TARGET, False
            elif upper in _PROCEDURE:
                state = _ONE_TARGET
            previous = upper
            index += 1
            continue
        if state in (_LIST_TARGET, _ONE_TARGET, _DDL_TARGET) and kind == _WORD and upper in _TARGET_MODIFIERS:
            previous = upper
            index += 1
            continue
        if state == _DDL_TARGET and kind == _WORD and upper in _DDL_WORDS:
            ddl_index = ddl_index or upper == "INDEX"
            previous = upper
            index += 1
            continue
        if state in (_LIST_TARGET, _ONE_TARGET, _DDL_TARGET) and (kind == _IDENT or upper not in _RESERVED):
            name, index = _qualified_name(tokens, index)
            function_call = index < count and tokens[index][1] == "(" and state == _LIST_TARGET
            if not function_call:  # FROM generate_series(1, 10): a function, not a table
                targets.append((len(stack), len(parts)))
                parts.append(name)
            if state == _DDL_TARGET and ddl_index:
                state = _ONE_TARGET if _next_word_is(tokens, index, "ON") else _NONE
                if state == _ONE_TARGET:
                    index += 1
            else:
                state = _AFTER_TARGET if state == _LIST_TARGET else _NONE
            previous = "?"
            continue
        if state == _AFTER_TARGET and kind == _WORD and upper not in _RESERVED:
            previous = upper  # AS alias, or a bare alias
            index += 1
            continue
        if kind == _WORD and upper in _TABLE_LIST:
            state = _LIST_TARGET
        elif kind == _WORD and upper == "INTO":
            state = _ONE_TARGET
        elif kind == _WORD and upper == "AS" and state == _AFTER_TARGET:
            pass
        else:
            state = _NONE
        previous = upper
        index += 1
    return _result(parts, operations, targets)


def _is_operation(upper: str, previous: str, following: str) -> bool:
    if upper == "SELECT":
        return previous not in _NOT_AFTER
    if upper in _DML:
        # REPLACE(...), INSERT(...), LEFT(...) are functions; the others are clauses after ON, DO, FOR...
        return following != "(" and previous not in _NOT_AFTER and previous != "."
    if upper in _DDL or upper in _PROCEDURE or upper in _PREFIXES:
        return previous in ("", ";", "(") and upper != "WITH"
    return False


def _qualified_name(tokens: list[tuple[int, str]], index: int) -> tuple[str, int]:
    """``schema.table`` (any number of parts, quoted or not) as written, and the index after it."""
    name = tokens[index][1]
    index += 1
    while index + 1 < len(tokens) and tokens[index][1] == "." and tokens[index + 1][0] in (_WORD, _IDENT):
        name += "." + tokens[index + 1][1]
        index += 2
    return name, index


def _next_word_is(tokens: list[tuple[int, str]], index: int, word: str) -> bool:
    return index < len(tokens) and tokens[index][0] == _WORD and tokens[index][1].upper() == word


def _result(parts: list[str], operations: list[tuple[int, int]], targets: list[tuple[int, int]]) -> QuerySummary:
    if not operations:
        return QuerySummary("", "", "")
    # The main operation is the first one outside parentheses (after a WITH clause's subqueries).
    top = min(depth for depth, _ in operations)
    main_depth, main_at = next((depth, at) for depth, at in operations if depth == top)
    next_operation = min((at for depth, at in operations if depth == top and at > main_at), default=len(parts))
    collection = next((parts[at] for depth, at in targets if depth == main_depth and main_at < at < next_operation), "")
    return QuerySummary(parts[main_at], collection, _truncate(parts))


def _truncate(parts: list[str]) -> str:
    summary = ""
    for part in parts:
        candidate = f"{summary} {part}" if summary else part
        if len(candidate) > MAX_SUMMARY_LENGTH:
            break  # never cut inside an operation or a target
        summary = candidate
    return summary
