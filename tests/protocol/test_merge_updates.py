"""One update per container in a reply: a runtime rejects two claims of one field."""

from __future__ import annotations

from nri_podres._proto import api_pb2 as pb
from nri_podres.nri.stub import merge_updates


def update(container_id: str, cpus: str = "", mems: str = "") -> pb.ContainerUpdate:
    u = pb.ContainerUpdate(container_id=container_id)
    if cpus:
        u.linux.resources.cpu.cpus = cpus
    if mems:
        u.linux.resources.cpu.mems = mems
    return u


def test_duplicates_merge_in_order_and_the_inputs_stay_as_they_were() -> None:
    first, second = update("a", cpus="0-3", mems="0"), update("a", cpus="4-7")
    merged = merge_updates([first, update("b", cpus="1"), second])
    assert [u.container_id for u in merged] == ["a", "b"]
    assert merged[0].linux.resources.cpu.cpus == "4-7"  # the later claim wins
    assert merged[0].linux.resources.cpu.mems == "0"
    assert first.linux.resources.cpu.cpus == "0-3" and not second.linux.resources.cpu.mems


def test_the_replied_container_and_anonymous_updates_are_dropped() -> None:
    merged = merge_updates([update("self", cpus="0"), update("", cpus="1"), update("other", cpus="2")], exclude="self")
    assert [u.container_id for u in merged] == ["other"]
