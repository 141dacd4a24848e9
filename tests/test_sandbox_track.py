"""The sandbox's Braze /users/track simulator behaves as Braze documents it
(https://www.braze.com/docs/api/endpoints/user_data/post_user_track/, https://www.braze.com/docs/api/api_limits/)."""
from __future__ import annotations

import pytest

from tests.fakes import FakeClock
from wallet_proxy.sandbox import SimState, make_sandbox_app
from wallet_proxy.sandbox.track import TrackState, track_state

AUTH = {"Authorization": "Bearer key"}


@pytest.fixture
def sim():
    return SimState(clock=FakeClock(1_800_000_000.5))


@pytest.fixture
def client(sim):
    return make_sandbox_app(sim).test_client()


def track(client, attributes, headers=AUTH):
    return client.post("/users/track", json={"attributes": attributes}, headers=headers)


def test_writes_attributes_counts_data_points_and_sends_rate_headers(client, sim):
    answer = track(client, [{"external_id": "a", "x": 1, "y": [1, 2]}, {"external_id": "b", "x": 2}])
    assert answer.status_code == 201
    assert answer.json == {"message": "success", "attributes_processed": 2}
    assert track_state(sim).profiles == {"a": {"x": 1, "y": [1, 2]}, "b": {"x": 2}}
    assert track_state(sim).data_points == 3
    assert answer.headers["X-RateLimit-Limit"] == "3000"
    assert answer.headers["X-RateLimit-Remaining"] == "2999"
    assert answer.headers["X-RateLimit-Reset"] == "1800000003"  # the end of this 3 s window


def test_bad_objects_are_skipped_and_named_by_index_in_a_201(client, sim):
    answer = track(client, [{"external_id": "a", "x": 1}, {"x": 2}, {"external_id": "c", "s": "z" * 256},
                            {"external_id": "d", "arr": list(range(26))}, {"external_id": "e", "x": 5}])
    assert answer.status_code == 201 and answer.json["attributes_processed"] == 2
    assert [e["index"] for e in answer.json["errors"]] == [1, 2, 3]
    assert all(e["input_array"] == "attributes" for e in answer.json["errors"])
    assert set(track_state(sim).profiles) == {"a", "e"}


def test_more_than_75_objects_is_a_400_that_writes_nothing(client, sim):
    answer = track(client, [{"external_id": f"u{i}", "x": i} for i in range(76)])
    assert answer.status_code == 400 and "75" in answer.json["message"]
    assert track_state(sim).profiles == {}


def test_no_key_is_401_and_past_the_budget_is_429_until_the_window_resets(client, sim):
    assert track(client, [{"external_id": "a"}], headers={}).status_code == 401
    sim.track = TrackState(limit=3, window=3.0)
    assert [track(client, [{"external_id": "a", "x": 1}]).status_code for _ in range(4)] == [201, 201, 201, 429]
    refused = track(client, [{"external_id": "a", "x": 1}])
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    sim.clock.tick(3.0)
    assert track(client, [{"external_id": "a", "x": 1}]).status_code == 201


def test_faults_by_external_id_prefix(client):
    assert track(client, [{"external_id": "fault-500-x", "x": 1}]).status_code == 500
    answer = track(client, [{"external_id": "fault-429-x", "x": 1}])
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"


def test_an_unknown_external_id_gets_a_profile_unless_the_object_updates_existing_only(client, sim):
    # https://www.braze.com/docs/api/objects_filters/user_attributes_object/: without
    # "_update_existing_only": true an object for an unknown external_id creates the profile.
    assert track(client, [{"external_id": "no-profile-1", "x": 1}]).status_code == 201
    assert track_state(sim).created == ["no-profile-1"] and track_state(sim).profiles["no-profile-1"] == {"x": 1}
    answer = track(client, [{"external_id": "no-profile-2", "x": 1, "_update_existing_only": True},
                            {"external_id": "known", "x": 2, "_update_existing_only": True}])
    assert answer.status_code == 201
    assert "no-profile-2" not in track_state(sim).profiles and track_state(sim).created == ["no-profile-1"]
    assert track_state(sim).profiles["known"] == {"x": 2}
