"""NRI events, their subscription bits, and the handler each one calls."""

from __future__ import annotations

import enum


class Event(enum.IntEnum):
    RUN_POD_SANDBOX = 1
    STOP_POD_SANDBOX = 2
    REMOVE_POD_SANDBOX = 3
    CREATE_CONTAINER = 4
    POST_CREATE_CONTAINER = 5
    START_CONTAINER = 6
    POST_START_CONTAINER = 7
    UPDATE_CONTAINER = 8
    POST_UPDATE_CONTAINER = 9
    STOP_CONTAINER = 10
    REMOVE_CONTAINER = 11
    UPDATE_POD_SANDBOX = 12
    POST_UPDATE_POD_SANDBOX = 13
    VALIDATE_CONTAINER_ADJUSTMENT = 14

    @property
    def bit(self) -> int:
        return 1 << (self.value - 1)


# NRI 0.6.1 (containerd 1.7) refuses any bit above this; v0.10 added 12-14.
VALID_MASK_V0_6 = 0x7FF
VALID_MASK_V0_10 = 0x3FFF

# Event -> the plugin method that handles it (the Go stub's names, in snake case).
HANDLER_NAMES: dict[Event, str] = {
    Event.RUN_POD_SANDBOX: "run_pod_sandbox",
    Event.STOP_POD_SANDBOX: "stop_pod_sandbox",
    Event.REMOVE_POD_SANDBOX: "remove_pod_sandbox",
    Event.CREATE_CONTAINER: "create_container",
    Event.POST_CREATE_CONTAINER: "post_create_container",
    Event.START_CONTAINER: "start_container",
    Event.POST_START_CONTAINER: "post_start_container",
    Event.UPDATE_CONTAINER: "update_container",
    Event.POST_UPDATE_CONTAINER: "post_update_container",
    Event.STOP_CONTAINER: "stop_container",
    Event.REMOVE_CONTAINER: "remove_container",
    Event.UPDATE_POD_SANDBOX: "update_pod_sandbox",
    Event.POST_UPDATE_POD_SANDBOX: "post_update_pod_sandbox",
}

# Events a 0.6.1..0.11 runtime delivers through StateChange; from v0.12 they
# have dedicated methods of the same (CamelCase) name.
STATE_CHANGE_EVENTS: frozenset[Event] = frozenset(
    {
        Event.RUN_POD_SANDBOX,
        Event.STOP_POD_SANDBOX,
        Event.REMOVE_POD_SANDBOX,
        Event.POST_CREATE_CONTAINER,
        Event.START_CONTAINER,
        Event.POST_START_CONTAINER,
        Event.POST_UPDATE_CONTAINER,
        Event.REMOVE_CONTAINER,
        Event.POST_UPDATE_POD_SANDBOX,
    }
)

POD_EVENTS: frozenset[Event] = frozenset(
    {
        Event.RUN_POD_SANDBOX,
        Event.STOP_POD_SANDBOX,
        Event.REMOVE_POD_SANDBOX,
        Event.POST_UPDATE_POD_SANDBOX,
    }
)


def method_name(event: Event) -> str:
    """The dedicated ttrpc method name of an event, e.g. ``RunPodSandbox``."""
    return "".join(part.capitalize() for part in event.name.split("_"))


def event_mask(plugin: object, valid_mask: int) -> int:
    """The subscription mask: every event whose handler the plugin implements."""
    mask = 0
    for event, name in HANDLER_NAMES.items():
        if callable(getattr(plugin, name, None)) and event.bit & valid_mask:
            mask |= event.bit
    return mask
