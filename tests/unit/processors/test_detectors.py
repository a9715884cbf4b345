"""Detectors of personal data and secrets: what they find inside longer strings, and what they leave alone."""

from __future__ import annotations

import base64
import ipaddress
import json
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.detectors import DETECTION_ORDER, MARKERS, DetectorName, Redactor, cnpj_valid, cpf_valid, luhn_valid

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REDACTOR = Redactor()


def without_markers(text: str) -> str:
    for marker in MARKERS.values():
        text = text.replace(marker, "")
    return text


# --- Generators of personal data ------------------------------------------------------------------------------


def luhn_complete(body: str) -> str:
    """``body`` followed by the check digit that makes it pass Luhn."""
    return next(body + digit for digit in string.digits if luhn_valid(body + digit))


def cpf_complete(nine: str) -> str:
    values = [int(char) for char in nine]
    for length in (9, 10):
        total = sum(value * weight for value, weight in zip(values, range(length + 1, 1, -1), strict=False))
        values.append(total * 10 % 11 % 10)
    return "".join(map(str, values))


def cnpj_complete(twelve: str) -> str:
    values = [ord(char) - 48 for char in twelve]
    weights = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
    for length in (12, 13):
        remainder = sum(v * w for v, w in zip(values, weights[13 - length :], strict=False)) % 11
        values.append(0 if remainder < 2 else 11 - remainder)
    return twelve + "".join(str(value) for value in values[12:])


def digits(count: int) -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=count, max_size=count)


@st.composite
def cards(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    number = luhn_complete(draw(st.sampled_from("23456")) + draw(digits(length - 2)))
    separator = draw(st.sampled_from(["", " ", "-"]))
    return separator.join(number[i : i + 4] for i in range(0, length, 4))


@st.composite
def cpfs(draw: st.DrawFn) -> str:
    number = cpf_complete(draw(digits(9).filter(lambda nine: len(set(nine)) > 1)))
    if draw(st.booleans()):
        return f"{number[:3]}.{number[3:6]}.{number[6:9]}-{number[9:]}"
    return number


@st.composite
def cnpjs(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        base = draw(
            st.text(string.digits + string.ascii_uppercase, min_size=12, max_size=12).filter(lambda b: len(set(b)) > 1)
        )
        formatted = True  # the alphanumeric CNPJ is only recognised formatted
    else:
        base = draw(digits(12).filter(lambda twelve: len(set(twelve)) > 1))
        formatted = draw(st.booleans())
    number = cnpj_complete(base)
    if formatted:
        return f"{number[:2]}.{number[2:5]}.{number[5:8]}/{number[8:12]}-{number[12:]}"
    return number


@st.composite
def phones(draw: st.DrawFn) -> str:
    area = draw(st.sampled_from("123456789")) + draw(st.sampled_from("123456789"))
    mobile = "9" + draw(digits(8))
    landline = draw(st.sampled_from("2345")) + draw(digits(7))
    shape = draw(st.integers(0, 8))
    if shape == 0:
        return f"+55 {area} {mobile[:5]}-{mobile[5:]}"
    if shape == 1:
        return f"+55{area}{mobile}"
    if shape == 2:
        return f"({area}) {mobile[:5]}-{mobile[5:]}"
    if shape == 3:
        return f"{area}{mobile}"
    if shape == 4:
        return f"0{area} {mobile[:5]} {mobile[5:]}"
    if shape == 5:
        return f"({area}) {landline[:4]}-{landline[4:]}"
    if shape == 6:
        exchange = draw(st.sampled_from("23456789")) + draw(digits(2))
        return f"+1 ({draw(st.sampled_from('23456789'))}{draw(digits(2))}) {exchange}-{draw(digits(4))}"
    if shape == 7:
        country = draw(st.sampled_from(["44", "49", "33", "351", "91", "86"]))
        return f"+{country} {draw(digits(3))} {draw(digits(3))} {draw(digits(4))}"
    return f"+{draw(st.sampled_from('123456789'))}{draw(digits(draw(st.integers(8, 13))))}"


@st.composite
def emails(draw: st.DrawFn) -> str:
    alnum = string.ascii_lowercase + string.digits
    local = draw(st.text(alnum, min_size=1, max_size=3)) + draw(st.text(alnum + "._+-", max_size=10))
    local += draw(st.text(alnum, min_size=1, max_size=2))
    labels = draw(st.lists(st.text(alnum, min_size=1, max_size=8), min_size=1, max_size=3))
    top_level = draw(st.sampled_from(["com", "com.br", "org", "io", "dev", "net", "co.uk", "ai"]))
    return f"{local}@{'.'.join(labels)}.{top_level}"


ipv4s = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6s = st.integers(1, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).compressed)
BASE64URL = string.ascii_letters + string.digits + "-_"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def jwts(draw: st.DrawFn) -> str:
    header = b64url(json.dumps({"alg": draw(st.sampled_from(["HS256", "RS256", "none"])), "typ": "JWT"}).encode())
    claims = {"sub": draw(st.text(string.ascii_letters, min_size=1, max_size=12)), "iat": draw(st.integers(0, 2**31))}
    signature = draw(st.text(BASE64URL, min_size=16, max_size=64))
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


ALNUM = string.ascii_letters + string.digits


@st.composite
def api_keys(draw: st.DrawFn) -> str:
    def body(alphabet: str, low: int, high: int) -> str:
        return draw(st.text(alphabet, min_size=low, max_size=high))

    shape = draw(st.integers(0, 9))
    if shape == 0:
        return "sk-" + body(ALNUM + "_-", 20, 60)
    if shape == 1:
        return "sk-proj-" + body(ALNUM + "_-", 20, 60)
    if shape == 2:
        return draw(st.sampled_from(["ghp_", "gho_", "ghs_", "ghu_", "ghr_"])) + body(ALNUM, 36, 36)
    if shape == 3:
        return "github_pat_" + body(ALNUM + "_", 22, 82)
    if shape == 4:
        return draw(st.sampled_from(["AKIA", "ASIA"])) + body(string.ascii_uppercase + string.digits, 16, 16)
    if shape == 5:
        return f"xox{draw(st.sampled_from('bpas'))}-{body(string.digits, 10, 13)}-{body(ALNUM, 10, 30)}"
    if shape == 6:
        return "AIza" + body(ALNUM + "_-", 35, 35)
    if shape == 7:
        return "glpat-" + body(ALNUM + "_-", 20, 20)
    if shape == 8:
        return "Bearer " + body(ALNUM, 12, 40) + draw(st.sampled_from(["1", "-x", "9Z"]))
    return draw(st.sampled_from(["sk_live_", "rk_test_"])) + body(ALNUM, 16, 40)


# Text around the personal data: words from an alphabet that cannot spell any detector's trigger (no digits, no
# "@?:=+", none of the letters b e g p r s x y that start keys, JWTs, auth schemes and SQL keywords), joined by
# separators, including the "_" and "-" of identifiers ("sess_eyJ...", "cred-AKIA...").
SAFE_LETTERS = "acdfhijklmnoqtuvwz"
safe_words = st.text(SAFE_LETTERS, min_size=1, max_size=8)
SEPARATORS = (" ", "/", ", ", "; ", " | ", " (", ") ", " <", "> ", " '", "' ", ' "', "_", "-", "__", "-_")
separators = st.sampled_from(SEPARATORS)
# Glue that joins the data to a word directly, where a kind allows it: ":" ("peer:2001:db8::7") and "", the letters
# of the word themselves ("tel+5511...", "ana@x.coma"). Token prefixes, JWTs and addresses glued to letters are
# taken for part of a longer word (documented in the detectors module), so they only get ":".
LETTERS_AND_COLON = ("", ":")
COLON = (":",)


@st.composite
def embedded(
    draw: st.DrawFn,
    secret: st.SearchStrategy[str],
    left_glue: tuple[str, ...] = (),
    right_glue: tuple[str, ...] = (),
) -> tuple[str, str]:
    """(personal data, a longer string holding it somewhere, between separators or glued to words)."""
    value = draw(secret)
    before: list[str] = draw(st.lists(safe_words, max_size=3))
    after: list[str] = draw(st.lists(safe_words, max_size=3))
    bare_left: bool = draw(st.booleans())  # a separator even with nothing before it
    bare_right: bool = draw(st.booleans())
    left = " ".join(before) + draw(st.sampled_from(SEPARATORS + left_glue)) if before else ""
    if not before and bare_left:
        left = draw(separators)
    right = draw(st.sampled_from(SEPARATORS + right_glue)) + " ".join(after) if after else ""
    if not after and bare_right:
        right = draw(separators)
    return value, left + value + right


# --- Personal data never survives ------------------------------------------------------------------------------

DIGIT_KINDS = {
    "card": cards(),
    "cpf": cpfs(),
    "phone": phones(),
    "ipv4": ipv4s,
}


# The glue each kind is found with: a digit run glued to letters is still a number ("id_11912345678",
# "user11912345678"); a dotted quad glued to letters is a version ("v1.2.3.4").
DIGIT_GLUE = {"card": LETTERS_AND_COLON, "cpf": LETTERS_AND_COLON, "phone": LETTERS_AND_COLON, "ipv4": COLON}


@FAST
@given(
    st.sampled_from(sorted(DIGIT_KINDS)).flatmap(
        lambda kind: embedded(DIGIT_KINDS[kind], DIGIT_GLUE[kind], DIGIT_GLUE[kind])
    )
)
def test_no_digit_of_a_card_cpf_phone_or_ipv4_survives(case: tuple[str, str]) -> None:
    value, text = case
    result, findings = REDACTOR.redact(text)
    # The surrounding text has no digits: any digit left would be part of the personal data.
    assert not any(char.isdigit() for char in without_markers(result)), (text, result)
    assert value not in result
    assert findings


@FAST
@given(embedded(cnpjs(), COLON, COLON))
def test_no_cnpj_survives(case: tuple[str, str]) -> None:
    value, text = case
    result, findings = REDACTOR.redact(text)
    assert value not in result
    assert not any(char.isdigit() for char in without_markers(result)), (text, result)
    assert findings == (("cnpj", 1),)


@FAST
@given(embedded(emails(), LETTERS_AND_COLON, LETTERS_AND_COLON))
def test_no_email_survives(case: tuple[str, str]) -> None:
    value, text = case
    result, findings = REDACTOR.redact(text)
    assert value not in result
    assert "@" not in result
    assert MARKERS["email"] in result
    assert findings


@FAST
@given(embedded(ipv6s, COLON))
def test_no_ipv6_address_survives(case: tuple[str, str]) -> None:
    value, text = case
    result, _ = REDACTOR.redact(text)
    assert value not in result
    # Only the colons of the surrounding text (the ":" glue of "peer:2001:db8::7") are left.
    assert result.replace(MARKERS["ipv6"], "").count(":") == text.count(":") - value.count(":"), (text, result)


@FAST
@given(embedded(jwts(), COLON, LETTERS_AND_COLON))
def test_no_jwt_survives(case: tuple[str, str]) -> None:
    value, text = case
    result, findings = REDACTOR.redact(text)
    assert value not in result
    assert all(segment not in result for segment in value.split(".") if len(segment) >= 8)
    assert findings == (("jwt", 1),)


@FAST
@given(embedded(api_keys(), COLON, COLON))
def test_no_api_key_or_bearer_token_survives(case: tuple[str, str]) -> None:
    value, text = case
    result, findings = REDACTOR.redact(text)
    secret_part = value.split(" ")[-1][8:]  # past any well-known prefix
    assert secret_part not in result
    assert MARKERS["token"] in result
    assert findings == (("token", 1),)


@FAST
@given(
    st.sampled_from(["https://api.example.com", "http://10.0.0.1:8080", "", "/v1"]),
    st.lists(safe_words, min_size=1, max_size=3),
    st.dictionaries(
        st.sampled_from(["q", "token", "email", "page", "id"]), st.text(ALNUM + "@.%-", min_size=4), min_size=1
    ),
)
def test_url_query_strings_are_stripped_and_paths_kept(base: str, path: list[str], query: dict[str, str]) -> None:
    url = f"{base}/{'/'.join(path)}"
    query_string = "&".join(f"{key}={value}" for key, value in query.items())
    result, _ = REDACTOR.redact(f"GET {url}?{query_string} done")
    assert query_string not in result
    assert all(f"{key}={value}" not in result for key, value in query.items())
    assert f"/{'/'.join(path)}?{MARKERS['url_query']} done" in result


@FAST
@given(emails(), st.integers(0, 10**12), st.text(SAFE_LETTERS + " ", min_size=1, max_size=20))
def test_sql_literals_become_placeholders(email: str, number: int, name: str) -> None:
    # Building SQL from values is the point here: these are the literals the detector must remove.
    statement = f"SELECT id, name FROM users WHERE email = '{email}' AND age > {number} AND name LIKE '{name}%'"  # noqa: S608
    result, findings = REDACTOR.redact(statement)
    assert result == "SELECT id, name FROM users WHERE email = ? AND age > ? AND name LIKE ?"
    assert findings == (("sql", 1),)


@FAST
@given(st.sampled_from([*DIGIT_KINDS.values(), emails(), jwts(), api_keys(), cnpjs(), ipv6s]).flatmap(embedded))
def test_redacting_twice_changes_nothing_more(case: tuple[str, str]) -> None:
    _, text = case
    once, _ = REDACTOR.redact(text)
    assert REDACTOR.redact(once) == (once, ())


# --- Ordinary values pass unchanged ---------------------------------------------------------------------------

ORDINARY = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
    "/", "/users/{id}", "/api/v1/generate", "/items/{item_id}/reviews", "/health", "/metrics", "/static/icon@2x.png",
    "200", "201", "204", "301", "404", "429", "500", "503",
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini", "claude-3-5-sonnet-20241022", "gemini-1.5-pro",
    "text-embedding-3-small",
    "us-east-1", "sa-east-1", "eu-west-2", "southamerica-east1",
    "1.2.3", "v2.10.0", "0.66b1", "1.45.1", "3.11.7", "1.0.0-rc.1", "2024.11.25",
    "250ms", "1.5s", "0.005", "2.5", "10m", "1h30m",
    "2024-11-25", "2024-11-25T10:00:00Z", "2024-11-25 10:00:00.123456+00:00", "10:00:00", "1732540800", "1732540800123",
    "api.example.com", "db-01.prod.svc.cluster.local", "ip-10-0-1-17.ec2.internal", "localhost", "worker-3",
    "8080", "9464", "12345", "1234567", "42", "-1",
    "http.server.request.duration", "db.client.operation.duration", "gen_ai.client.token.usage",
    "SELECT", "INSERT", "cache_hit", "redis", "postgresql", "text/html; charset=utf-8", "application/json",
    "550e8400-e29b-41d4-a716-446655440000", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7",
    "00:1a:2b:3c:4d:5e", "std::vector", "input_tokens", "Basic plan", "Bearer", "what?", "a = ?", "100%",
    "success", "error", "timeout", "ok", "true", "false", "", " ", "ação", "São Paulo", "日本語",
    "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "o1-2024-12-17", "claude-sonnet-4-20250514", "gpt-4-0613",
    "anthropic.claude-3-sonnet-20240229-v1:0", "ft:gpt-4o-mini-2024-07-18:my-org:custom:abc123",
    "host:8080", "peer:9464", "db:5432", "redis://cache:6379/0", "postgresql://db:5432/prod", "12:34:56",
    "query failed: timeout", "select a plan", "Update available", "INV-2024-000123", "6.8.0-1015-aws",
    "018f6d2e-4c3b-7a1e-9f0a-123456789abc", "aa:bb:cc:dd:ee:ff", "std::vector<int>", "Error::NotFound",
    "task-1234567890abcdefghijk", "desk-abcdefghijklmnopqrstuvwxyz", "sk-learn", "C++", "a+b", "1e-10",
]  # fmt: skip


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_label_values_come_out_unchanged(value: str) -> None:
    result, findings = REDACTOR.redact(value)
    assert result is value
    assert findings == ()


ordinary_shapes = st.one_of(
    st.sampled_from(ORDINARY),
    st.integers(0, 9_999_999).map(str),  # status codes, ports, short ids, counts
    st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 999)).map(
        lambda v: f"{v[0]}.{v[1]}.{v[2]}"
    ),  # versions
    st.integers(1_000_000_000, 1_999_999_999).map(str),  # Unix seconds up to 2033
    st.integers(1_000_000_000_000, 1_999_999_999_999).map(str),  # Unix milliseconds
    st.floats(0, 1e6, allow_nan=False).map(lambda v: f"{v:.3f}s"),  # durations
    st.datetimes().map(lambda moment: moment.isoformat()),
    st.lists(st.text(SAFE_LETTERS + "_-", min_size=1, max_size=10), min_size=1, max_size=6).map("/".join),
    st.text(SAFE_LETTERS + SAFE_LETTERS.upper().replace("A", "") + " _-./{}", max_size=40),
    st.lists(st.text(string.digits, min_size=1, max_size=3), min_size=1, max_size=6).map("x".join),
    st.uuids().map(str),
    st.dates().map(lambda day: day.isoformat()),
    st.tuples(st.sampled_from(["gpt-4o", "gpt-4o-mini", "o1", "o3-mini"]), st.dates()).map(
        lambda model: f"{model[0]}-{model[1].isoformat()}"
    ),  # model snapshots dated like gpt-4o-2024-08-06
    st.tuples(st.sampled_from(["localhost", "db", "peer", "cache-1"]), st.integers(1, 65535)).map(
        lambda host: f"{host[0]}:{host[1]}"
    ),  # host:port
    st.integers(0, 10**6).map(lambda ms: f"{ms}ms"),
)


@settings(max_examples=300, deadline=None)
@given(ordinary_shapes)
def test_values_without_personal_data_come_out_unchanged(value: str) -> None:
    result, findings = REDACTOR.redact(value)
    assert (result, findings) == (value, ())


# --- Each detector, by example ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("signup from ana.silva+promo@example.com.br today", "signup from <email> today"),
        ("5511912345678@c.us", "<email>"),  # a WhatsApp id is one email, not a phone number
        ("root@[10.0.0.1]", "<email>"),
        ("call +55 11 91234-5678 now", "call <phone> now"),
        ("+1 (415) 555-2671", "<phone>"),
        ("(11) 91234-5678", "<phone>"),
        ("(11) 3123-4567", "<phone>"),
        ("11912345678", "<phone>"),
        ("011 91234 5678", "<phone>"),
        ("+55 11 91234-5678 200 OK", "<phone> 200 OK"),
        ("client 192.168.0.17:52044", "client <ipv4>:52044"),
        ("from fe80::1%eth0 and [2001:db8::7]:443", "from <ipv6> and [<ipv6>]:443"),
        ("::ffff:10.1.2.3", "<ipv6>"),
        ("card 4111 1111 1111 1111 exp", "card <card> exp"),
        ("4111-1111-1111-1111 12", "<card> 12"),
        ("cpf 529.982.247-25", "cpf <cpf>"),
        ("52998224725", "<cpf>"),  # valid CPF check digits win over the mobile-phone shape
        ("cnpj 11.222.333/0001-81", "cnpj <cnpj>"),
        ("11222333000181", "<cnpj>"),
        ("12.ABC.345/01DE-35", "<cnpj>"),
        ("Authorization: Bearer abc123def456ghi", "Authorization: Bearer <token>"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "Bearer <jwt>"),
        ("Basic dXNlcjpwYXNzd29yZA==", "Basic <token>"),
        ("key AKIAIOSFODNN7EXAMPLE", "key <token>"),
        ("password=hunter2&user=ana", "password=<secret>&user=ana"),
        ('{"api_key": "abc123"}', '{"api_key": "<secret>"}'),
        ("https://example.com/reset?token=abc&email=a@b.co#x", "https://example.com/reset?<query>"),
        ("GET /search?q=ana HTTP/1.1", "GET /search?<query> HTTP/1.1"),
        ("?utm_source=mail&uid=7", "?<query>"),
        ("UPDATE users SET email = 'a@b.co' WHERE id = 7 -- by ana", "UPDATE users SET email = ? WHERE id = ? "),
        ("SELECT * FROM t WHERE a = $1 AND b = :b AND c IN (1, 2.5) AND d = $$x$$", None),
        ("INSERT INTO t (a) VALUES ('unterminated", "INSERT INTO t (a) VALUES (?"),
        # Token prefixes after "_", "-" or ":" (an identifier or a key before them).
        ("sess_eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz", "sess_<jwt>"),
        ("OPENAI_API_KEY_sk-proj-abcdefghijklmnopqrstuvwx", "OPENAI_API_KEY_<token>"),
        ("cli_ghp_abcdefghijklmnopqrstuvwxyz0123456789", "cli_<token>"),
        ("cred-AKIAIOSFODNN7EXAMPLE", "cred-<token>"),
        ("auth_Bearer abcdef123456789xyz", "auth_Bearer <token>"),
        ("tel_+5511912345678", "tel_<phone>"),
        ("lock_user_11912345678", "lock_user_<phone>"),
        ("peer:2001:db8::7", "peer:<ipv6>"),
        ("a:::1", "a:<ipv6>"),
        # Authorization schemes other than Bearer and Basic keep the scheme word, never the credential.
        ("Authorization: Token 8f2a9c1e7b3d4a5f6e8c9b0a1d2e3f4a", "Authorization: Token <secret>"),
        ('Authorization: Digest username="ana", realm="x"', "Authorization: Digest <secret>"),
        ("authorization=8f2a9c1e7b3d", "authorization=<secret>"),
        # SQL that does not start the value, and double-quoted literals.
        (
            "query failed: SELECT * FROM users WHERE name = 'Maria Joaquina'",
            "query failed: SELECT * FROM users WHERE name = ?",
        ),
        ("(SELECT name FROM u WHERE n='ana')", "(SELECT name FROM u WHERE n=?)"),
        ('SELECT * FROM users WHERE name = "Maria Joaquina"', "SELECT * FROM users WHERE name = ?"),
        (
            'SELECT "u"."id" FROM "users" "u" WHERE "u"."email" = \'a@b.co\'',
            'SELECT "u"."id" FROM "users" "u" WHERE "u"."email" = ?',
        ),
        # Credentials in URLs: scheme, user and host stay.
        ("postgresql://app:hunter2pw@db:5432/prod", "postgresql://app:<secret>@db:5432/prod"),
        ("redis://:secretpass@cache:6379/0", "redis://:<secret>@cache:6379/0"),
        # Phones without "+": E.164 storage form, the "00" call prefix, North American.
        ("5511912345678", "<phone>"),
        ("0055 11 91234 5678", "<phone>"),
        ("0044 20 7946 0958", "<phone>"),
        ("call 415-555-2671", "call <phone>"),
        # A percent-encoded "@" in a URL path.
        ("/users/ana%40example.com", "/users/<email>"),
    ],
)
def test_each_detector_replaces_what_it_finds_and_keeps_the_rest(text: str, expected: str | None) -> None:
    if expected is None:
        expected = "SELECT * FROM t WHERE a = $1 AND b = :b AND c IN (?, ?) AND d = ?"
    assert REDACTOR.redact(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Basic information",  # not base64 of user:password
        "Bearer authentication",  # prose, not a token
        "DELETE /users/123",  # an HTTP method and a path, not SQL
        "Update available",
        "v1.2.3.4",  # a version glued to a letter
        "1.2.3.4.5",
        "999.1.1.1",  # not a valid address
        "4111 1111 1111 1112",  # fails Luhn
        "1111111111111111",  # starts with 1: no card network; also a Unix timestamp shape
        "111.111.111-11",  # repeated digits are not a CPF
        "529.982.247-26",  # wrong check digit
        "1131234567",  # a plain 10-digit number is a timestamp shape, not a landline
        "icon@2x.png",
    ],
)
def test_lookalikes_are_not_reported(text: str) -> None:
    assert REDACTOR.redact(text) == (text, ())


def test_ip_addresses_can_be_truncated_to_their_network_instead() -> None:
    redactor = Redactor(ip_mode="truncate")
    assert redactor.redact("client 192.168.7.42") == ("client 192.168.7.0/24", (("ipv4", 1),))
    assert redactor.redact("2001:db8:1:2::7") == ("2001:db8:1::/48", (("ipv6", 1),))
    # Already truncated (or coarser) networks stay, so a second pass changes nothing.
    for network in ("192.168.7.0/24", "10.0.0.0/8", "2001:db8:1::/48"):
        assert redactor.redact(network) == (network, ())
    assert redactor.redact("10.1.2.3/8")[0] == "10.0.0.0/8"


@FAST
@given(ipv4s)
def test_truncated_ipv4_keeps_only_the_first_three_octets(address: str) -> None:
    result, _ = Redactor(ip_mode="truncate").redact(f"ip {address}")
    assert result == f"ip {'.'.join(address.split('.')[:3])}.0/24"


def test_only_the_chosen_detectors_run() -> None:
    redactor = Redactor(["email"])
    assert redactor.detectors == ("email",)
    assert redactor.redact("ana@example.com 10.0.0.1 4111111111111111") == (
        "<email> 10.0.0.1 4111111111111111",
        (("email", 1),),
    )
    assert Redactor([]).redact("ana@example.com") == ("ana@example.com", ())


def test_detectors_run_in_the_documented_order_whatever_order_is_given() -> None:
    assert Redactor(list(reversed(DETECTION_ORDER))).detectors == DETECTION_ORDER
    assert set(MARKERS) == set(DETECTION_ORDER)


def test_an_unknown_detector_is_refused_with_the_valid_names() -> None:
    bogus: list[DetectorName] = ["emial"]  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"unknown detectors \['emial'\] \(valid: sql, url_query, "):
        Redactor(bogus)


def test_findings_are_counted_per_detector() -> None:
    _, findings = REDACTOR.redact("a@b.co c@d.io 10.0.0.1 +55 11 91234-5678")
    assert findings == (("email", 2), ("ipv4", 1), ("phone", 1))


PATHOLOGICAL = {
    "colons": "a:" * 8192,
    "hex_colons": "ab:" * 5461,
    "at_signs": "a@" * 8192,
    "local_part": "a" * 16383 + "@",
    "percent_at": "a%40" * 4096,
    "jwt_prefix": ("eyJ" + "a" * 1000) * 16,
    "credential_keys": "token=" * 2730,
    "slashes": "a/" * 8192 + "@",
    "plus_digits": "+1 " * 5461,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_values_take_linear_time(name: str) -> None:
    # 16 KiB each: a quadratic regex takes hundreds of milliseconds here, a linear one a few.
    text = PATHOLOGICAL[name]
    started = time.perf_counter()
    REDACTOR.redact(text)
    assert time.perf_counter() - started < 0.1


def test_values_far_longer_than_labels_are_still_handled() -> None:
    text = "x " * 5000 + "ana@example.com " + "9" * 3000
    result, findings = REDACTOR.redact(text)
    assert "ana@example.com" not in result
    assert findings == (("email", 1),)


# --- Check digits ----------------------------------------------------------------------------------------------


@FAST
@given(digits(8).filter(lambda nine: len(set(nine)) > 1).flatmap(lambda d: st.just(d + "0")))
def test_cpf_check_digits(nine: str) -> None:
    number = cpf_complete(nine)
    assert cpf_valid(number)
    assert not cpf_valid(number[:-1] + str((int(number[-1]) + 1) % 10))
    assert not cpf_valid(number[:10])


@FAST
@given(st.text(string.digits + string.ascii_uppercase, min_size=12, max_size=12).filter(lambda s: len(set(s)) > 1))
def test_cnpj_check_digits_including_the_alphanumeric_cnpj(twelve: str) -> None:
    number = cnpj_complete(twelve)
    assert cnpj_valid(number)
    assert not cnpj_valid(number[:-1] + str((int(number[-1]) + 1) % 10))
    assert not cnpj_valid(number.lower()) or number == number.lower()


@FAST
@given(digits(15))
def test_luhn_check_digit(body: str) -> None:
    number = luhn_complete(body)
    assert luhn_valid(number)
    assert not luhn_valid(number[:-1] + str((int(number[-1]) + 1) % 10))


@pytest.mark.parametrize(
    "uuid",
    [
        "32a7cae9-df32-7560-0500-2635f5bffffb",  # "32-7560-0500" reads as a Brazilian phone number
        "abcdef12-3456-7890-0001-5678abcdef00",  # "2-3456-7890-0001-5678" is a Luhn-valid card number
    ],
)
def test_uuids_are_never_read_as_phone_or_card_numbers_but_numbers_beside_them_are(uuid: str) -> None:
    assert REDACTOR.redact(f"job {uuid}") == (f"job {uuid}", ())

    redacted, findings = REDACTOR.redact(f"call 11 91234-5678 about {uuid}")

    assert redacted == f"call <phone> about {uuid}"
    assert findings == (("phone", 1),)
