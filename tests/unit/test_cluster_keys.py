"""Keys on a Redis Cluster: every key of one id lands in one slot whatever the id holds,
two ids never share a key, and a batch's script calls cover each key once, in one slot."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eddy.streams.store import keys
from eddy.streams.store.slots import SLOTS, lowest_slots, script_calls, slot_of, slot_tag

# Ids as producers send them, and the ones that would break a naive hash tag.
IDS = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="{}~ab", max_size=8),
    st.sampled_from(["", "{", "}", "{}", "}{", "~", "~fng=", "a{b}c", "{u1}"]),
)


@given(IDS)
def test_every_key_of_an_entity_lands_in_one_slot(entity_id: str) -> None:
    slots = {
        slot_of(keys.entity_features("eddy.", "3f2a", entity_id)),
        slot_of(keys.entity_features("eddy.", "other", entity_id)),
        slot_of(keys.cached_answer("eddy.", entity_id, "fraud")),
        slot_of(keys.hot_requests("eddy.", entity_id, "fraud")),
        slot_of("{" + keys.hash_tag(entity_id) + "}"),
    }
    assert len(slots) == 1


@given(IDS)
def test_every_key_of_a_record_lands_in_one_slot(record_id: str) -> None:
    slots = {
        slot_of(keys.snapshot("eddy.", record_id)),
        slot_of(keys.joined_label("eddy.", record_id)),
        slot_of(keys.request_log("eddy.", record_id)),
    }
    assert len(slots) == 1


@given(IDS, IDS)
def test_two_ids_never_share_a_tag(first: str, second: str) -> None:
    if first != second:
        assert keys.hash_tag(first) != keys.hash_tag(second)


@given(IDS)
def test_a_tag_holds_no_brace_and_is_never_empty(record_id: str) -> None:
    tag = keys.hash_tag(record_id)
    assert tag
    assert "{" not in tag
    assert "}" not in tag


def test_ids_without_braces_keep_the_keys_they_always_had() -> None:
    assert keys.entity_features("eddy.", "s", "user-7") == "eddy.features:s:{user-7}"
    assert keys.request_log("eddy.", "r-1") == "eddy.request:{r-1}"


def test_every_slot_has_a_tag_that_lands_in_it() -> None:
    assert [slot_of("{" + slot_tag(slot) + "}") for slot in range(SLOTS)] == list(range(SLOTS))


@given(st.lists(IDS, max_size=60), st.booleans())
def test_script_calls_cover_each_key_once_in_one_slot(ids: list[str], cluster: bool) -> None:
    names = [keys.snapshot("eddy.", record_id) for record_id in ids]
    calls = script_calls(names, cluster)
    covered = sorted(p for call in calls for p in call)
    assert covered == list(range(len(names)))
    if cluster:
        assert all(len({slot_of(names[p]) for p in call}) == 1 for call in calls)
        assert len({slot_of(names[call[0]]) for call in calls}) == len(calls)
    else:
        assert len(calls) == (1 if names else 0)


def test_each_master_gets_the_lowest_slot_it_serves() -> None:
    owners = {slot: "a" if slot < 5461 else "b" if slot < 10923 else "c" for slot in range(SLOTS)}
    owners[3] = "c"  # a slot migrated to another master
    assert lowest_slots(owners) == [0, 3, 5461]
