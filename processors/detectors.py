"""Detectors of personal data and secrets inside label values: pure functions, no I/O.

Each detector finds its kind of data anywhere inside a longer string and replaces every finding with a
fixed marker (:data:`MARKERS`), leaving the rest of the string as it was::

    >>> Redactor().redact("signup from ana@example.com via 10.1.2.3")
    ('signup from <email> via <ipv4>', (('email', 1), ('ipv4', 1)))
    >>> Redactor().redact("/users/{id}")
    ('/users/{id}', ())

Ordinary label values must cost almost nothing, so a :class:`Redactor` first runs four cheap checks made of
the enabled detectors' necessary conditions: one search for literal marks (an ``@`` for emails, a known
prefix for API keys, ``eyJ`` for JWTs, ...), one for a dotted quad, one for a run of eight digits and
separators (phones, cards, CPF, CNPJ), and substring tests for a SQL keyword. Together they
take a few hundred nanoseconds for a short value. Only a value that trips one of them pays for the detectors
that need it, and those first check their own, more precise trigger where needed.

Detection order (:data:`DETECTION_ORDER`) and why: earlier detectors consume text that later, less
specific ones would otherwise claim in part.

1. ``sql``: a SQL statement, wherever it starts in the value, has its literals replaced by ``?`` first;
   whatever personal data sat in them is gone in one step and later detectors only see the statement's shape.
2. ``url_query``: one step removes everything a query string carries (tokens, emails, ids).
3. ``jwt``, 4. ``token``, 5. ``secret``: long base64/alphanumeric credentials contain digit runs and
   ``@``/``:`` that would otherwise be reported in pieces as cards, phones or IPv6 addresses;
   ``Bearer eyJ...`` becomes ``Bearer <jwt>``.
6. ``email``: before IPs and phones, so ``5511912345678@c.us`` (a WhatsApp id) is one email.
7. ``ipv6`` before 8. ``ipv4``: ``::ffff:10.0.0.1`` is one IPv6 address; both run before the digit
   detectors because dotted quads are digit runs.
9. ``cnpj``, 10. ``cpf``, 11. ``card``: the digit detectors with check digits, most specific first.
   A plain 11-digit string with valid CPF check digits is a CPF even if it could also be a phone
   number; a 14-digit one with valid CNPJ check digits is a CNPJ even if it also passes Luhn.
12. ``phone``: last, because its shape is the least specific (no check digits).

Known limits, chosen to keep ordinary values intact: a plain 10-digit number is never taken for a
landline (Unix timestamps in seconds have that shape; landlines are found when written with a separator
or parentheses); card numbers must start with 2-6 (every major network does; millisecond and
microsecond timestamps start with 1); a dotted quad glued to a letter (``v1.2.3.4``) is a version,
not an address; double-quoted text in SQL is kept where SQL reads it as an identifier (after ``FROM``, in
``"t"."c"``) and replaced where a value is expected (``name = "Bob"``, as MySQL reads it); a token or address
glued to letters on both sides (``xAKIA...y``) is taken for part of a longer word.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Final, Literal

__all__ = [
    "DETECTION_ORDER",
    "MARKERS",
    "DetectorName",
    "Findings",
    "IPMode",
    "Redactor",
    "cnpj_valid",
    "cpf_valid",
    "luhn_valid",
]

DetectorName = Literal[
    "sql", "url_query", "jwt", "token", "secret", "email", "ipv6", "ipv4", "cnpj", "cpf", "card", "phone"
]
IPMode = Literal["mask", "truncate"]
Findings = tuple[tuple[DetectorName, int], ...]
"""What one value held: ``(detector, number of findings)`` for each detector that changed it, in order."""

DETECTION_ORDER: Final[tuple[DetectorName, ...]] = (
    "sql",
    "url_query",
    "jwt",
    "token",
    "secret",
    "email",
    "ipv6",
    "ipv4",
    "cnpj",
    "cpf",
    "card",
    "phone",
)
"""Every detector, in the order a :class:`Redactor` runs them (see the module docstring for why)."""

MARKERS: Final[dict[DetectorName, str]] = {
    "sql": "?",
    "url_query": "<query>",
    "jwt": "<jwt>",
    "token": "<token>",
    "secret": "<secret>",
    "email": "<email>",
    "ipv6": "<ipv6>",
    "ipv4": "<ipv4>",
    "cnpj": "<cnpj>",
    "cpf": "<cpf>",
    "card": "<card>",
    "phone": "<phone>",
}
"""What each finding is replaced with. ``sql`` replaces each literal with ``?``; ``url_query`` replaces what
follows the ``?``; ``token`` keeps an ``Authorization`` scheme word (``Bearer <token>``); ``secret`` keeps the
key of a ``key=value`` pair (``password=<secret>``)."""

_NO_FINDINGS: Findings = ()


# --- Check digits -------------------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Whether a string of decimal digits passes the Luhn check used by payment card numbers.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def cpf_valid(digits: str) -> bool:
    """Whether 11 decimal digits are a CPF with valid check digits (repeated digits such as 111.111.111-11 are not).

    >>> cpf_valid("52998224725"), cpf_valid("52998224726")
    (True, False)
    """
    if len(digits) != 11 or not digits.isdigit() or digits == digits[0] * 11:
        return False
    values = [ord(char) - 48 for char in digits]
    for length in (9, 10):
        total = sum(value * weight for value, weight in zip(values, range(length + 1, 1, -1), strict=False))
        if (total * 10) % 11 % 10 != values[length]:
            return False
    return True


_CNPJ_WEIGHTS: Final = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def cnpj_valid(chars: str) -> bool:
    """Whether 14 characters are a CNPJ with valid check digits.

    The first 12 characters may be upper-case letters (the alphanumeric CNPJ issued from July 2026, where a
    character counts as its code point minus 48); the last two are always decimal check digits.

    >>> cnpj_valid("11222333000181"), cnpj_valid("12ABC34501DE35"), cnpj_valid("11222333000182")
    (True, True, False)
    """
    if len(chars) != 14 or not chars[12:].isdigit() or chars == chars[0] * 14:
        return False
    values = [ord(char) - 48 for char in chars]
    if any(value < 0 or value > 42 for value in values[:12]):  # only 0-9 and A-Z are allowed
        return False
    for length in (12, 13):
        weights = _CNPJ_WEIGHTS[13 - length :]
        remainder = sum(value * weight for value, weight in zip(values, weights, strict=False)) % 11
        if (0 if remainder < 2 else 11 - remainder) != values[length]:
            return False
    return True


# --- Detectors ----------------------------------------------------------------------------------------------
# A detector is the first checks it needs, an optional more precise trigger, and a body returning the new text
# and the number of findings. Bodies return a candidate unchanged when validation (check digits, ipaddress,
# Luhn) fails, and only changed candidates are counted.

_Apply = Callable[[str], tuple[str, int]]


# The Redactor's first checks, one bit each (see Redactor.redact).
_LITERAL, _IPV4_SHAPE, _DIGIT_RUN, _SQL = 1, 2, 4, 8


class _Detector:
    __slots__ = ("apply", "checks", "kind", "literals", "sufficient", "trigger")

    def __init__(
        self,
        kind: DetectorName,
        checks: int,
        apply: _Apply,
        *,
        literals: tuple[str, ...] = (),
        trigger: Callable[[str], object] | None = None,
        sufficient: int = 0,
    ) -> None:
        self.kind = kind
        # Which first checks must pass for this detector to find anything: a value that only tripped the digit
        # check is never searched for API keys. ``literals`` are this detector's part of the literal check.
        self.checks = checks
        self.literals = literals
        # A more precise condition when the first checks are not enough, skipped when a ``sufficient`` one
        # passed (a digit run needs no second look for the phone detector).
        self.trigger = trigger
        self.sufficient = sufficient
        self.apply = apply


def _substitute(pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str]) -> _Apply:
    """A detector body: ``pattern.sub`` with ``replace``, counting only matches that ``replace`` changed."""

    def apply(text: str) -> tuple[str, int]:
        found = 0

        def one(match: re.Match[str]) -> str:
            nonlocal found
            replacement = replace(match)
            if replacement != match.group(0):
                found += 1
            return replacement

        return pattern.sub(one, text), found

    return apply


def _marker(kind: DetectorName) -> Callable[[re.Match[str]], str]:
    marker = MARKERS[kind]
    return lambda match: marker


# SQL: a statement's first keyword, and the shape that keyword needs, so that "DELETE /users/7" (an HTTP
# method and a path) or "Update available" are not taken for SQL.
_SQL_SHAPE = re.compile(
    r"""(?:\A\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*|(?<![\w$]))(?:
        select\s.*?\bfrom\s|select\s+[-\d'(@$:?*]|values\s*\(|call\s+[\w.]+\s*\(|exec(?:ute)?\s+[\w.]+\s+[@:]
        |with\s.*?\bas\s*\(
        |(?:insert|replace|upsert|merge)\s.*?\binto\s
        |update\s.*?\bset\s
        |delete\s.*?\bfrom\s
    )""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_SQL_TOKENS = re.compile(
    r"""
    (?P<string>(?:\b[NnEeBbXxUu]&?)?'(?:[^'\\]|\\.|'')*(?:'|\Z))      # 'text', N'text', E'te\'xt'; unterminated too
    |(?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)\$|\Z))       # PostgreSQL $$text$$ / $tag$text$tag$
    |(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))                              # comments carry free text
    |(?P<identifier>"(?:[^"]|"")*"|`[^`]*`)                             # quoted: identifier or literal
    |(?P<number>(?<![\w$.:])(?:0[xX][0-9A-Fa-f]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)(?![\w.]))
    """,
    re.DOTALL | re.VERBOSE,
)


# A double-quoted token is a string literal (MySQL reads "text" as one) where a value is expected: after a
# comparison, "(", ",", or a keyword that takes a value. Elsewhere (after FROM, in "t"."column") it is an
# identifier and is kept.
_VALUE_BEFORE = re.compile(r"(?:[=<>(,]|\b(?:like|ilike|in|values|then|else|between)(?<=\w))\s*\Z", re.IGNORECASE)
_QUALIFIED_AFTER = re.compile(r"\s*\.")


def _redact_sql(text: str) -> tuple[str, int]:
    shape = _SQL_SHAPE.search(text)
    if shape is None:
        return text, 0
    # Only from the statement on: "query failed at 12:03: SELECT ..." keeps its prefix as it was.
    statement = text[shape.start() :]

    def one(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "?":
            return found
        if match.lastgroup == "identifier":
            before = statement[max(0, match.start() - 16) : match.start()]
            if (
                found[0] == "`"
                or before.endswith(".")
                or _QUALIFIED_AFTER.match(statement, match.end())
                or _VALUE_BEFORE.search(before) is None
            ):
                return found
        return "" if match.lastgroup == "comment" else "?"

    result = text[: shape.start()] + _SQL_TOKENS.sub(one, statement)
    # One finding per statement: the number of literals says nothing useful about what was exposed.
    return (result, 1) if result != text else (text, 0)


# URL query strings: from the "?" of a word holding a "/" (a path or URL), or of a word that starts with "?key=",
# to the next whitespace. The fragment after it goes too, since it may carry tokens as well. A lone "?" (a SQL
# placeholder, a question) is left alone. Words are only tried from their start, and the part before the first
# "/" cannot hold one: each word is scanned a bounded number of times, never once per character.
_URL_QUERY = re.compile(
    r"(?:(?<![^\s?])(?P<path>[^\s?/]*/[^\s?]*)\?|(?<!\S)\?(?=[\w.%-]+=))(?!<query>(?:\s|$))(?P<query>\S+)"
)


def _replace_query(match: re.Match[str]) -> str:
    return f"{match.group('path') or ''}?{MARKERS['url_query']}"


# Token prefixes are recognised after anything but a letter or digit: "sess_eyJ...", "cli_ghp_...", "cred-AKIA...".
_JWT = re.compile(r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")

# API keys with a well-known shape; the minimum lengths are well below the real ones so that shortened
# or future variants are still caught, and well above what ordinary words reach.
_API_KEY = re.compile(
    r"""(?<![A-Za-z0-9])(?:
        sk-[A-Za-z0-9_-]{20,}                       # OpenAI (sk-proj-, sk-svcacct-), Anthropic (sk-ant-)
        |(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}   # Stripe secret and restricted keys
        |gh[pousr]_[A-Za-z0-9]{30,}                 # GitHub tokens
        |github_pat_[A-Za-z0-9_]{22,}               # GitHub fine-grained tokens
        |(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])   # AWS access key ids
        |xox[abeoprs]-[A-Za-z0-9-]{10,}             # Slack tokens
        |xapp-[A-Za-z0-9-]{10,}                     # Slack app tokens
        |AIza[A-Za-z0-9_-]{35}                      # Google API keys
        |glpat-[A-Za-z0-9_-]{20,}                   # GitLab personal access tokens
    )""",
    re.VERBOSE,
)
# RFC 6750 / RFC 7617 credentials after an Authorization scheme word; the scheme word is kept.
_AUTH_SCHEME = re.compile(r"(?<![A-Za-z0-9])(Bearer|bearer|BEARER|Basic|basic|BASIC)(\s+)(?!<)([A-Za-z0-9._~+/-]+=*)")


def _replace_auth(match: re.Match[str]) -> str:
    scheme, space, credential = match.group(1), match.group(2), match.group(3)
    if scheme.lower() == "basic":
        # "Basic" is also an English word: only a base64 "user:password" pair is a credential.
        try:
            decoded = base64.b64decode(credential, validate=True)
        except (binascii.Error, ValueError):
            return match.group(0)
        if b":" not in decoded:
            return match.group(0)
    elif len(credential) < 8 or (len(credential) < 20 and credential.isalpha()):
        return match.group(0)  # "Bearer authentication" is prose; tokens are long or hold digits and symbols
    return f"{scheme}{space}{MARKERS['token']}"


def _redact_tokens(text: str) -> tuple[str, int]:
    found = 0
    if _AUTH_SCHEME.search(text) is not None:
        text, found = _substitute(_AUTH_SCHEME, _replace_auth)(text)
    text, keys = _API_KEY.subn(MARKERS["token"], text)
    return text, found + keys


# key=value and "key": "value" pairs whose key ends with a credential word; the key is kept.
_CREDENTIAL_WORDS = (
    r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|authorization"
    r"|session[_-]?id|sessionid|cookie"
)
# The key is matched from its credential word only (what precedes it is kept as it is): a pattern that also
# matched the start of the key would retry at every position of a long value.
# An Authorization value other than Bearer and Basic (handled by the token detector) is "<scheme> <credentials>"
# (RFC 9110 section 11.4): the scheme word is kept and everything after it, to the end of the line, goes; Digest
# credentials hold quotes, commas and spaces.
_SECRET = re.compile(
    rf"""(?i)(?:
        authorization(["']?\s*[=:]\s*["']?(?!(?:bearer|basic)\s)[a-z][\w-]*[ \t]+)(?!<)([^\s][^\r\n]*)
        |(?:{_CREDENTIAL_WORDS})(["']?\s*[=:]\s*["']?)(?!<|(?:bearer|basic)\s|[a-z][\w-]*[ \t]+<)([^\s&;,'"]+)
    )""",
    re.VERBOSE,
)
# Credentials in a URL's authority (RFC 3986 section 3.2.1): "scheme://user:password@host" keeps the user.
_URL_CREDENTIALS = re.compile(r"(://[^\s:/?#@\[\]]*:)(?!<secret>@)([^\s/?#@]+)@")
_SECRET_TRIGGER = re.compile(rf"""(?:{_CREDENTIAL_WORDS})["']?\s*[=:]|://[^\s/?#@]*:""")


def _has_credential_key(text: str) -> bool:
    return _SECRET_TRIGGER.search(text.lower()) is not None


def _replace_secret(match: re.Match[str]) -> str:
    value = 2 if match.start(2) >= 0 else 4
    return match.group(0)[: match.start(value) - match.start(0)] + MARKERS["secret"]


_replace_secrets = _substitute(_SECRET, _replace_secret)


def _redact_secrets(text: str) -> tuple[str, int]:
    text, found = _replace_secrets(text)
    if "://" in text:
        text, more = _URL_CREDENTIALS.subn(rf"\1{MARKERS['secret']}@", text)
        found += more
    return text, found


# Tried from the start of a local part only (never from each of its characters, which is quadratic on "a@a@a@...");
# "%40" is an "@" percent-encoded in a URL path.
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+(?:@|%40)(?:[\w-]+(?:\.[\w-]+)*\.([^\W\d_]{2,})|\[[0-9A-Fa-f:.]+\])")
# Asset names such as "icon@2x.png" have an email's shape; these extensions are not top-level domains.
_ASSET_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "css", "js", "map", "bmp"})


def _replace_email(match: re.Match[str]) -> str:
    top_level = match.group(1)
    if top_level is not None and top_level.lower() in _ASSET_EXTENSIONS:
        return match.group(0)
    return MARKERS["email"]


# IP addresses: candidates by shape, then validated by the ipaddress module. An optional /prefix is kept so
# that truncated output ("10.1.2.0/24") is recognised as already truncated and left alone.
_IPV4 = re.compile(r"(?<![A-Za-z0-9.])(\d{1,3}(?:\.\d{1,3}){3})(?!\.?\d)(/\d{1,2}(?!\d))?")
# An address may follow a word and a colon ("peer:2001:db8::7"), where the colon cannot tell it from a longer
# run of groups: a candidate is also tried right after a single ":", and ipaddress decides. A candidate that
# fails is tried again past its first ":" ("a:::1" is "a:" and "::1").
_IPV6 = re.compile(
    r"(?:(?<![A-Za-z0-9:.])|(?<=:)(?<!::))([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w.-]+)?)"
    r"(?![A-Za-z0-9:]|\.\d)(/\d{1,3}(?!\d))?"
)


def _ip_replacer(version: int, mode: IPMode) -> Callable[[re.Match[str]], str]:
    parse: Callable[[str], ipaddress.IPv4Address | ipaddress.IPv6Address]
    parse, prefix, marker = (
        (ipaddress.IPv4Address, 24, MARKERS["ipv4"]) if version == 4 else (ipaddress.IPv6Address, 48, MARKERS["ipv6"])
    )

    def replace(match: re.Match[str]) -> str:
        candidate, suffix = match.group(1), match.group(2) or ""
        try:
            address = parse(candidate)
        except ValueError:
            head, colon, rest = candidate.partition(":")
            if version == 6 and colon and head:
                return head + colon + match.re.sub(replace, rest + suffix)
            return match.group(0)
        if mode == "mask":
            return marker + suffix
        given = int(suffix[1:]) if suffix else address.max_prefixlen
        network = ipaddress.ip_network(f"{address.compressed.split('%')[0]}/{min(given, prefix)}", strict=False)
        if suffix and given <= prefix and network.network_address == ipaddress.ip_address(candidate.split("%")[0]):
            return match.group(0)  # already a network at least as coarse as the truncation
        return network.compressed

    return replace


_CNPJ = re.compile(
    r"(?<!\d)(\d{2})\.?(\d{3})\.?(\d{3})/?(\d{4})-?(\d{2})(?!\d)"
    # The alphanumeric CNPJ is only recognised fully formatted: 14 upper-case characters alone are too
    # common in ordinary identifiers.
    r"|(?<![0-9A-Za-z])([0-9A-Z]{2})\.([0-9A-Z]{3})\.([0-9A-Z]{3})/([0-9A-Z]{4})-(\d{2})(?![0-9A-Za-z])"
)


def _replace_cnpj(match: re.Match[str]) -> str:
    chars = "".join(part for part in match.groups() if part)
    return MARKERS["cnpj"] if cnpj_valid(chars) else match.group(0)


_CPF = re.compile(r"(?<!\d)(\d{3})\.?(\d{3})\.?(\d{3})-?(\d{2})(?!\d)")


def _replace_cpf(match: re.Match[str]) -> str:
    return MARKERS["cpf"] if cpf_valid("".join(match.groups())) else match.group(0)


# Cards: 13-19 digits, single spaces or dashes between them, starting with 2-6 (every major network: Visa 4,
# Mastercard 2/5, Amex and Diners 3, Discover, Elo and Hipercard 6), Luhn-checked. A "+" before the digits
# makes them a phone number instead.
_CARD = re.compile(r"(?<![\d+])[2-6](?:[ -]?\d){12,18}(?!\d)")
_DIGIT_GROUP = re.compile(r"\d+")


def _replace_card(match: re.Match[str]) -> str:
    text = match.group(0)
    groups = [(group.start(), group.end()) for group in _DIGIT_GROUP.finditer(text)]
    # The whole candidate first, then with whole groups dropped from the end, then from the start: a card
    # followed or preceded by another number ("4111 1111 1111 1111 12") is still found.
    spans = [(0, len(groups))]
    spans += [(0, end) for end in range(len(groups) - 1, 0, -1)]
    spans += [(start, len(groups)) for start in range(1, len(groups))]
    for first, last in spans:
        begin, end = groups[first][0], groups[last - 1][1]
        digits = re.sub(r"\D", "", text[begin:end])
        if 13 <= len(digits) <= 19 and "2" <= digits[0] <= "6" and luhn_valid(digits):
            return f"{text[:begin]}{MARKERS['card']}{text[end:]}"
    return text


# Phones. International (E.164 written with or without separators): "+" or the "00" international call prefix,
# a country code, 8-15 digits in all. A letter or "_" before it does not hide it ("tel_+5511912345678").
_INTERNATIONAL_PHONE = re.compile(r"(?:(?<![0-9+])\+|(?<![0-9+.])00(?=[1-9]))[1-9]\d*(?:(?:[ .-]|[ .-]?\()\d+\)?)*")
# Brazilian national numbers: a two-digit area code (never containing 0), optionally with the trunk 0, then
# 8 digits or 9 + 8 digits. Without separators only mobile numbers (9 + 8 digits) qualify, also in the E.164
# storage form without "+" (55 + area + 9 + 8 digits): a plain 10-digit number is far more often a Unix timestamp.
# North American "(415) 555-2671" and "415-555-2671" are recognised too. Only a digit, "+" or a decimal point
# before the number hides it: "id_11912345678" is a phone number.
_NATIONAL_PHONE = re.compile(
    r"""(?<![\d+])(?<!\d\.)(?:
        \(0?[1-9]{2}\)\s?(?:9\s?)?\d{4}[\s-]?\d{4}
        |0?[1-9]{2}[\s-](?:9\s?)?\d{4}[\s-]?\d{4}
        |(?:55)?0?[1-9]{2}9\d{8}
        |\([2-9]\d{2}\)\s?\d{3}[\s.-]\d{4}
        |(?:1-)?[2-9]\d{2}-[2-9]\d{2}-\d{4}
        |(?:1\.)?[2-9]\d{2}\.[2-9]\d{2}\.\d{4}
    )(?!\d)""",
    re.VERBOSE,
)


def _replace_international_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    total = -2 if text.startswith("00") else 0  # the call prefix is not part of the number
    end = 0
    # Trailing groups past 15 digits belong to whatever follows the number ("+55 11 91234-5678 200").
    for group in _DIGIT_GROUP.finditer(text):
        if total + len(group.group(0)) > 15:
            break
        total += len(group.group(0))
        end = group.end()
    if total < 8:
        return text
    if end < len(text) and text[end] == ")":
        end += 1
    return MARKERS["phone"] + text[end:]


_replace_international_phones = _substitute(_INTERNATIONAL_PHONE, _replace_international_phone)


def _redact_phones(text: str) -> tuple[str, int]:
    found = 0
    if "+" in text or "00" in text:
        text, found = _replace_international_phones(text)
    text, national = _NATIONAL_PHONE.subn(MARKERS["phone"], text)
    return text, found + national


# First checks. Literal-led alternatives are searched together (the regex engine then skips quickly to a
# possible first character); digit shapes have a search each; the SQL keyword is matched at the start only.
# A statement may start anywhere in a value ("query failed: SELECT ..."), so its first keyword is looked for
# everywhere, with substring tests on the lower-cased value (several times faster than a case-insensitive regex
# alternation); a leading comment counts at the start of the value only.
_SQL_KEYWORDS = ("select", "values", "call", "exec", "with", "insert", "replace", "upsert", "merge", "update", "delete")


def _may_hold_sql(text: str, keywords: tuple[str, ...] = _SQL_KEYWORDS) -> bool:
    lowered = text.lower()
    for keyword in keywords:
        if keyword in lowered:
            return True
    return lowered.lstrip()[:2] in ("/*", "--")


_TOKEN_PREFIXES = (
    "sk-", "sk_", "rk_", "gh[pousr]_", "github_pat_", "AKIA", "ASIA", "AIza", "xox", "xapp-", "glpat-",
    "Bearer", "bearer", "BEARER", "Basic", "basic", "BASIC",
)  # fmt: skip
_IPV4_SHAPE_PATTERN = r"\d\.\d{1,3}\.\d{1,3}\.\d"
# A run of 8+ digits and separators, starting and ending with a digit: necessary for a phone, card, CPF or CNPJ.
_DIGIT_RUN_PATTERN = r"\d[\d\s.()/-]{6,}\d"


def _searcher(pattern: str) -> Callable[[str], object]:
    return re.compile(pattern).search


# A UUID holds digit groups between dashes ("...-df32-7560-0500-...") that read as a phone, card, CPF or CNPJ.
# It identifies a thing, never a person's number, so the digit-shape detectors look only outside UUIDs.
_UUID = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])")


def _outside_uuids(apply: Callable[[str], tuple[str, int]]) -> Callable[[str], tuple[str, int]]:
    def apply_outside_uuids(text: str) -> tuple[str, int]:
        if _UUID.search(text) is None:
            return apply(text)
        pieces: list[str] = []
        found = 0
        start = 0
        for uuid in _UUID.finditer(text):
            redacted, count = apply(text[start : uuid.start()])
            pieces += [redacted, uuid.group()]
            found += count
            start = uuid.end()
        redacted, count = apply(text[start:])
        return "".join([*pieces, redacted]), found + count

    return apply_outside_uuids


def _build(kind: DetectorName, ip_mode: IPMode) -> _Detector:
    """One detector: the first checks it needs, its own trigger if those are not precise enough, and its body."""
    if kind == "sql":
        return _Detector(kind, _SQL, _redact_sql)
    if kind == "url_query":
        apply = _substitute(_URL_QUERY, _replace_query)
        return _Detector(kind, _LITERAL, apply, literals=(r"\?\S",), trigger=_searcher(r"\?\S"))
    if kind == "jwt":
        return _Detector(kind, _LITERAL, _substitute(_JWT, _marker(kind)), literals=("eyJ",))
    if kind == "token":
        # The literal check holds every prefix of every detector, so each still checks its own.
        trigger = _searcher("|".join(_TOKEN_PREFIXES))
        return _Detector(kind, _LITERAL, _redact_tokens, literals=_TOKEN_PREFIXES, trigger=trigger)
    if kind == "secret":
        return _Detector(kind, _LITERAL, _redact_secrets, literals=("=", ":"), trigger=_has_credential_key)
    if kind == "email":
        apply = _substitute(_EMAIL, _replace_email)
        return _Detector(kind, _LITERAL, apply, literals=("@", "%40"), trigger=_searcher("@|%40"))
    if kind == "ipv6":
        # Every IPv6 address holds "::" or a hex group between two colons.
        trigger = _searcher(r":(?::|[0-9A-Fa-f]{1,4}:)")
        apply = _substitute(_IPV6, _ip_replacer(6, ip_mode))
        return _Detector(kind, _LITERAL, apply, literals=(":",), trigger=trigger)
    if kind == "ipv4":
        return _Detector(kind, _IPV4_SHAPE, _substitute(_IPV4, _ip_replacer(4, ip_mode)))
    if kind == "cnpj":
        # Numeric CNPJs are digit runs; alphanumeric ones are recognised formatted only, by their "/XXXX-dd".
        trigger = _searcher(_DIGIT_RUN_PATTERN + r"|/[0-9A-Z]{4}-\d\d")
        apply = _outside_uuids(_substitute(_CNPJ, _replace_cnpj))
        return _Detector(
            kind, _DIGIT_RUN | _LITERAL, apply, literals=("/[0-9A-Z]{4}-",), trigger=trigger, sufficient=_DIGIT_RUN
        )
    if kind == "cpf":
        return _Detector(kind, _DIGIT_RUN, _outside_uuids(_substitute(_CPF, _replace_cpf)))
    if kind == "card":
        return _Detector(kind, _DIGIT_RUN, _outside_uuids(_substitute(_CARD, _replace_card)))
    if kind == "phone":
        trigger = _searcher(_DIGIT_RUN_PATTERN + r"|\+[1-9]")
        return _Detector(
            kind,
            _DIGIT_RUN | _LITERAL,
            _outside_uuids(_redact_phones),
            literals=(r"\+[1-9]",),
            trigger=trigger,
            sufficient=_DIGIT_RUN,
        )
    raise ValueError(f"unknown detector {kind!r} (valid: {', '.join(DETECTION_ORDER)})")


def _never(text: str) -> None:
    return None


class Redactor:
    """Runs the enabled detectors over a string, in :data:`DETECTION_ORDER`, and reports what it found.

    ``ip_mode="truncate"`` keeps the network of an IP address instead of masking it: ``10.1.2.3`` becomes
    ``10.1.2.0/24`` and ``2001:db8:1:2::7`` becomes ``2001:db8:1::/48``.

    >>> Redactor(["email"]).redact("mail ana@example.com, call +55 11 91234-5678")
    ('mail <email>, call +55 11 91234-5678', (('email', 1),))
    >>> Redactor(ip_mode="truncate").redact("client 192.168.7.42")
    ('client 192.168.7.0/24', (('ipv4', 1),))
    """

    __slots__ = ("_digit_run", "_digits", "_ipv4_shape", "_literal", "_sql_start", "_steps", "detectors")

    def __init__(self, detectors: Iterable[DetectorName] = DETECTION_ORDER, *, ip_mode: IPMode = "mask") -> None:
        wanted = set(detectors)
        unknown = wanted - set(DETECTION_ORDER)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)} (valid: {', '.join(DETECTION_ORDER)})")
        self.detectors: tuple[DetectorName, ...] = tuple(kind for kind in DETECTION_ORDER if kind in wanted)
        self._steps = tuple(_build(kind, ip_mode) for kind in self.detectors)
        literals = list(dict.fromkeys(literal for step in self._steps for literal in step.literals))
        needed = 0
        for step in self._steps:
            needed |= step.checks
        self._literal = _searcher("|".join(literals)) if literals else _never
        self._ipv4_shape = _searcher(_IPV4_SHAPE_PATTERN) if needed & _IPV4_SHAPE else _never
        self._digit_run = _searcher(_DIGIT_RUN_PATTERN) if needed & _DIGIT_RUN else _never
        # Both digit shapes in one search (their common leading \d factored out) for the usual case where
        # neither is there; which one matched is looked up only when one did.
        digit_shapes = ((_IPV4_SHAPE, _IPV4_SHAPE_PATTERN), (_DIGIT_RUN, _DIGIT_RUN_PATTERN))
        tails = [pattern.removeprefix("\\d") for bit, pattern in digit_shapes if needed & bit]
        self._digits = _searcher(r"\d(?:" + "|".join(tails) + ")") if tails else _never
        self._sql_start: Callable[[str], object] = _may_hold_sql if needed & _SQL else _never

    def redact(self, text: str) -> tuple[str, Findings]:
        """``text`` with every finding replaced by its marker, and the findings per detector.

        A value with nothing to find comes back as the same object, with no findings; that path is two regex
        searches and a set lookup that fail (a few hundred nanoseconds for a short label value).
        """
        checks = 0
        if self._literal(text) is not None:
            checks = _LITERAL
        if self._digits(text) is not None:
            if self._ipv4_shape(text) is not None:
                checks |= _IPV4_SHAPE
            if self._digit_run(text) is not None:
                checks |= _DIGIT_RUN
        if self._sql_start(text):
            checks |= _SQL
        if not checks:
            return text, _NO_FINDINGS
        findings: list[tuple[DetectorName, int]] = []
        for step in self._steps:
            # Triggers look at the current text: what earlier detectors replaced is no longer there.
            if step.checks & checks and (step.trigger is None or step.sufficient & checks or step.trigger(text)):
                replaced, found = step.apply(text)
                if found:  # without findings the text is equal, and the same object is kept
                    text = replaced
                    findings.append((step.kind, found))
        return text, tuple(findings)
