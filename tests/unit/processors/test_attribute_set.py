"""AttributeSet: an attribute dict that never changes and carries a token no other set in the process gets."""

from __future__ import annotations

import copy
import functools
import gc
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors._merge import AttributeSet, attributes_key

CONTENT = {"route": "/users", "status": 200, "ok": True, "ratio": 0.5, "tags": ("a", "b")}

scalars = st.one_of(
    st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.binary(max_size=4)
)
# OpenTelemetry allows sequence values; lists are unhashable, which attributes_key handles by making them tuples.
values = st.one_of(scalars, st.tuples(scalars, scalars), st.lists(st.one_of(st.text(max_size=4), st.integers())))
attribute_dicts = st.dictionaries(st.text(max_size=8), values, max_size=6)


# --- Immutability ------------------------------------------------------------------------------------------------


def _ior(attributes: AttributeSet) -> None:
    attributes |= {"route": "/other"}


MUTATIONS: dict[str, Callable[[AttributeSet], Any]] = {
    "set an existing item": lambda s: s.__setitem__("route", "/other"),
    "set a new item": lambda s: s.__setitem__("new", 1),
    "delete an existing item": lambda s: s.__delitem__("route"),
    "delete a missing item": lambda s: s.__delitem__("missing"),
    "update from a dict": lambda s: s.update({"route": "/other"}),
    "update from keywords": lambda s: s.update(new=1),
    "update with nothing": lambda s: s.update(),
    "pop an existing key": lambda s: s.pop("route"),
    "pop a missing key with a default": lambda s: s.pop("missing", None),
    "popitem": lambda s: s.popitem(),
    "clear": lambda s: s.clear(),
    "setdefault on a new key": lambda s: s.setdefault("new", 1),
    "setdefault on an existing key": lambda s: s.setdefault("route", "/other"),
    "in-place or (|=)": _ior,
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_every_in_place_change_raises_type_error_and_leaves_the_set_as_it_was(
    mutate: Callable[[AttributeSet], Any],
) -> None:
    attributes = AttributeSet(CONTENT)
    token, key = attributes.token, attributes.key()
    with pytest.raises(TypeError, match="cannot be changed"):
        mutate(attributes)
    assert attributes == CONTENT
    assert list(attributes) == list(CONTENT)
    assert attributes.token == token
    assert attributes.key() == key == attributes_key(CONTENT)


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_an_empty_set_refuses_changes_too(mutate: Callable[[AttributeSet], Any]) -> None:
    # popitem and clear on an empty dict would be KeyError / a no-op: the refusal does not depend on the content.
    attributes = AttributeSet()
    with pytest.raises(TypeError):
        mutate(attributes)
    assert attributes == {}


def test_operators_that_build_a_new_mapping_give_a_plain_mutable_dict() -> None:
    attributes = AttributeSet(CONTENT)
    merged = attributes | {"extra": 1}
    copied = attributes.copy()
    results: list[dict[str, Any]] = [merged, copied, {"extra": 1} | attributes, dict(attributes)]
    for result in results:
        assert type(result) is dict
        result["route"] = "/changed"  # a plain dict: the caller may change it
    assert merged == {**CONTENT, "extra": 1, "route": "/changed"}
    assert attributes == CONTENT


# --- Tokens ------------------------------------------------------------------------------------------------------


def test_sets_with_equal_content_get_different_tokens() -> None:
    sets = [AttributeSet(CONTENT) for _ in range(100)]
    assert len({s.token for s in sets}) == len(sets)
    assert all(s == CONTENT for s in sets)


def test_tokens_are_never_reused_after_a_set_is_garbage_collected() -> None:
    seen_tokens: set[int] = set()
    seen_ids: set[int] = set()
    reused_ids = 0
    for index in range(2000):
        attributes = AttributeSet({"n": index % 3})
        assert attributes.token not in seen_tokens, f"token {attributes.token} given twice"
        seen_tokens.add(attributes.token)
        reused_ids += id(attributes) in seen_ids
        seen_ids.add(id(attributes))
        del attributes
        if index % 100 == 0:
            gc.collect()
    # The scenario the token exists for: a new set at the address of a dead one (an id()-keyed cache would be
    # served a stale entry). CPython reuses freed memory at once, so this happens on almost every iteration.
    assert reused_ids > 0
    assert len(seen_tokens) == 2000


def test_tokens_stay_unique_when_sets_are_made_from_several_threads() -> None:
    tokens: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(len(tokens))

    def make(out: list[int]) -> None:
        barrier.wait()
        out.extend(AttributeSet({"k": i}).token for i in range(5000))

    threads = [threading.Thread(target=make, args=(out,)) for out in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [token for out in tokens for token in out]
    assert len(every) == 20_000
    assert len(set(every)) == len(every)


def test_tokens_are_ints_that_grow_with_each_new_set() -> None:
    first, second = AttributeSet(), AttributeSet()
    assert type(first.token) is int
    assert second.token > first.token


# --- Copies and pickling -----------------------------------------------------------------------------------------


def pickled(attributes: AttributeSet, protocol: int) -> Any:
    return pickle.loads(pickle.dumps(attributes, protocol=protocol))  # noqa: S301 - our own bytes, just made


COPIERS: dict[str, Callable[[AttributeSet], Any]] = {
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    **{f"pickle protocol {p}": functools.partial(pickled, protocol=p) for p in range(2, 6)},
}


@pytest.mark.parametrize("copier", COPIERS.values(), ids=COPIERS.keys())
def test_a_copy_or_unpickled_set_is_an_equal_attribute_set_with_a_fresh_token(
    copier: Callable[[AttributeSet], Any],
) -> None:
    # What happens to the token: a copy is rebuilt through __init__ and so is a new set with a new token, never
    # the original's (a token names one object; the copy's per-set caches start empty, which is only slower).
    original = AttributeSet(CONTENT)
    before = AttributeSet().token
    duplicate = copier(original)
    assert type(duplicate) is AttributeSet
    assert duplicate is not original
    assert duplicate == original == CONTENT
    assert list(duplicate) == list(original)  # key order kept
    assert duplicate.token != original.token
    assert duplicate.token > before  # newer than every set made before it
    assert duplicate.key() == original.key()
    with pytest.raises(TypeError):
        duplicate["route"] = "/other"
    assert original == CONTENT


def test_deepcopy_copies_mutable_values_and_copy_shares_them() -> None:
    inner = [1, 2]
    original = AttributeSet({"list": inner})
    assert copy.copy(original)["list"] is inner
    deep = copy.deepcopy(original)
    assert deep["list"] == inner
    assert deep["list"] is not inner


def test_a_pickled_set_loads_in_the_same_process_with_a_token_not_seen_before() -> None:
    original = AttributeSet(CONTENT)
    payload = pickle.dumps(original)
    loaded = [pickle.loads(payload) for _ in range(3)]  # noqa: S301 - our own bytes, just made
    assert len({s.token for s in loaded} | {original.token}) == 4


# --- Equality, hashing, key() ------------------------------------------------------------------------------------


def test_equality_is_dict_equality_and_ignores_the_token() -> None:
    attributes = AttributeSet(CONTENT)
    assert attributes == dict(CONTENT)
    assert dict(CONTENT) == attributes
    assert attributes == AttributeSet(CONTENT)
    assert attributes == AttributeSet(reversed(list(CONTENT.items())))  # order does not matter, as for dicts
    assert attributes != {**CONTENT, "route": "/other"}
    assert attributes != AttributeSet({**CONTENT, "extra": 1})


def test_an_attribute_set_is_unhashable_like_a_dict_and_key_is_its_hashable_identity() -> None:
    attributes = AttributeSet(CONTENT)
    with pytest.raises(TypeError, match="unhashable"):
        hash(attributes)
    with pytest.raises(TypeError):
        {attributes}  # noqa: B018
    assert {attributes.key(): 1}[AttributeSet(CONTENT).key()] == 1
    assert hash(attributes.key()) == hash(attributes_key(dict(CONTENT)))


def test_key_is_computed_once_and_attributes_key_returns_it() -> None:
    attributes = AttributeSet(CONTENT)
    assert attributes.key() is attributes.key()
    assert attributes_key(attributes) is attributes.key()


@settings(max_examples=200, deadline=None)
@given(attribute_dicts)
def test_key_equals_attributes_key_of_a_plain_dict_with_the_same_content(content: dict[str, Any]) -> None:
    attributes = AttributeSet(content)
    assert attributes.key() == attributes_key(dict(content))
    assert attributes_key(attributes) == attributes_key(dict(content))
    hash(attributes.key())  # always hashable, list values included


def test_key_of_a_set_with_list_values_matches_the_plain_dict_fallback() -> None:
    content = {"tags": ["a", "b"], "route": "/"}
    assert AttributeSet(content).key() == attributes_key(content) == frozenset({("tags", ("a", "b")), ("route", "/")})


def test_keyword_and_pair_construction_match_dict_construction() -> None:
    assert AttributeSet(route="/", status=200) == {"route": "/", "status": 200}
    assert AttributeSet([("route", "/")], status=200) == dict([("route", "/")], status=200)
    assert AttributeSet() == {}
