"""The plugin stub: decodes Plugin-service requests and calls the plugin's handlers.

The stub is I/O-free: ``handle(service, method, payload) -> bytes`` either
returns the serialized response or raises ``RPCError``. Error-to-status
mapping happens here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from google.protobuf.message import DecodeError, Message

from nri_podres._proto import api_pb2 as pb
from nri_podres.errors import AdmissionError, ConfigError, PodresError, RPCError
from nri_podres.nri.events import (
    HANDLER_NAMES,
    POD_EVENTS,
    STATE_CHANGE_EVENTS,
    VALID_MASK_V0_10,
    Event,
    event_mask,
    method_name,
)
from nri_podres.nri.version import RuntimeInfo, infer
from nri_podres.ttrpc import Code

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
_NAME_RE = re.compile(r"[A-Za-z0-9_.+-]+")
_IDX_RE = re.compile(r"[0-9]{2}")

log = structlog.get_logger("nri_podres.nri")


def validate_identity(name: str, idx: str) -> None:
    if not _NAME_RE.fullmatch(name):
        msg = f"plugin name {name!r} is invalid: use letters, digits and _.+- only"
        raise ConfigError(msg)
    if not _IDX_RE.fullmatch(idx):
        msg = f"plugin index {idx!r} is invalid: it must be exactly two digits, e.g. '90'"
        raise ConfigError(msg)


def merge_updates(updates: Iterable[pb.ContainerUpdate], exclude: str = "") -> list[pb.ContainerUpdate]:
    """One update per container (a runtime rejects two claims of one field), none for ``exclude``."""
    merged: dict[str, pb.ContainerUpdate] = {}
    for u in updates:
        if not u.container_id or u.container_id == exclude:
            continue
        prior = merged.get(u.container_id)
        if prior is None:
            merged[u.container_id] = u  # the response copies it in; a copy here would be a second
        else:
            combined = pb.ContainerUpdate()  # never mutate the caller's messages
            combined.CopyFrom(prior)
            combined.MergeFrom(u)
            merged[u.container_id] = combined
    return list(merged.values())


class Stub:
    """Protocol semantics of the Plugin service around a plugin object."""

    def __init__(self, plugin: object, name: str, idx: str) -> None:
        validate_identity(name, idx)
        if not event_mask(plugin, VALID_MASK_V0_10):
            msg = f"{type(plugin).__name__} implements no NRI event handlers"
            raise ConfigError(msg)
        self.plugin: Any = plugin
        self.name = name
        self.idx = idx
        self.runtime = RuntimeInfo()
        self._sync_pods: list[pb.PodSandbox] = []
        self._sync_containers: list[pb.Container] = []
        self._methods: dict[str, tuple[type[Message], Callable[[Any], Message]]] = {
            "Configure": (pb.ConfigureRequest, self._configure),
            "Synchronize": (pb.SynchronizeRequest, self._synchronize),
            "Shutdown": (pb.Empty, self._shutdown),
            "CreateContainer": (pb.CreateContainerRequest, self._create_container),
            "UpdateContainer": (pb.UpdateContainerRequest, self._update_container),
            "StopContainer": (pb.StopContainerRequest, self._stop_container),
            "UpdatePodSandbox": (pb.UpdatePodSandboxRequest, self._update_pod_sandbox),
            "StateChange": (pb.StateChangeEvent, self._state_change),
        }
        self._add_dedicated_methods()

    def _add_dedicated_methods(self) -> None:
        """v0.12 runtimes call these first; unimplemented ones fall back to StateChange."""
        for event in HANDLER_NAMES:
            handler = getattr(self.plugin, HANDLER_NAMES[event], None)
            name = method_name(event)
            if name in self._methods or not callable(handler):
                continue
            request_type = getattr(pb, f"{name}Request")
            response_type = getattr(pb, f"{name}Response")
            self._methods[name] = (request_type, self._dedicated(event, response_type))

    # ---- registration ----

    def register_request(self) -> bytes:
        return pb.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.idx).SerializeToString()

    # ---- dispatch ----

    def handle(self, service: str, method: str, payload: bytes) -> bytes:
        if service != PLUGIN_SERVICE:
            raise RPCError(Code.UNIMPLEMENTED, f"service {service}")
        entry = self._methods.get(method)
        if entry is None:
            raise RPCError(Code.UNIMPLEMENTED, f"method {method}")
        request_type, fn = entry
        request = request_type()
        try:
            request.ParseFromString(payload)
        except DecodeError as exc:
            raise RPCError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc
        try:
            return fn(request).SerializeToString()
        except RPCError:
            raise
        except AdmissionError as exc:
            raise RPCError(Code.RESOURCE_EXHAUSTED, str(exc)) from exc
        except PodresError as exc:
            raise RPCError(Code.FAILED_PRECONDITION, str(exc)) from exc
        except Exception as exc:  # the one boundary where a bug becomes an INTERNAL answer
            log.exception("nri_handler_crashed", method=method)
            raise RPCError(Code.INTERNAL, f"nri-podres internal error in {method}: {exc!r}") from exc

    def take_unsolicited_updates(self) -> list[pb.ContainerUpdate]:
        """Updates with no reply to ride on, to send with UpdateContainers where that is safe."""
        take = getattr(self.plugin, "take_unsolicited_updates", None)
        if not self.runtime.update_containers_safe or not callable(take):
            return []
        return merge_updates(take())

    def after_reply(self) -> None:
        """The reply to the last request is sent: the plugin may do what could wait for it."""
        hook = getattr(self.plugin, "after_reply", None)
        if callable(hook):
            hook()

    def take_resync_request(self) -> bool:
        """Whether the plugin wants a fresh Synchronize (the transport then reconnects)."""
        take = getattr(self.plugin, "take_resync_request", None)
        return bool(take()) if callable(take) else False

    def connection_lost(self) -> None:
        self._sync_pods.clear()
        self._sync_containers.clear()
        hook = getattr(self.plugin, "connection_lost", None)
        if callable(hook):
            hook()

    # ---- handlers ----

    def _configure(self, req: pb.ConfigureRequest) -> pb.ConfigureResponse:
        self.runtime = infer(
            req.runtime_name, req.runtime_version, req.NRI_version, req.request_timeout, req.registration_timeout
        )
        hook = getattr(self.plugin, "configure", None)
        if callable(hook):
            hook(req.config, self.runtime)
        return pb.ConfigureResponse(events=event_mask(self.plugin, self.runtime.valid_mask))

    def _synchronize(self, req: pb.SynchronizeRequest) -> pb.SynchronizeResponse:
        self._sync_pods.extend(req.pods)
        self._sync_containers.extend(req.containers)
        if req.more:
            return pb.SynchronizeResponse(more=True)
        pods, containers = self._sync_pods, self._sync_containers
        self._sync_pods, self._sync_containers = [], []
        updates = self.plugin.synchronize(pods, containers)
        return pb.SynchronizeResponse(update=merge_updates(updates))

    def _shutdown(self, _req: pb.Empty) -> pb.Empty:
        hook = getattr(self.plugin, "shutdown", None)
        if callable(hook):
            hook()
        return pb.Empty()

    def _create_container(self, req: pb.CreateContainerRequest) -> pb.CreateContainerResponse:
        adjust, updates = self.plugin.create_container(req.pod, req.container)
        resp = pb.CreateContainerResponse(update=merge_updates(updates, exclude=req.container.id))
        if adjust is not None:
            resp.adjust.CopyFrom(adjust)
        return resp

    def _update_container(self, req: pb.UpdateContainerRequest) -> pb.UpdateContainerResponse:
        updates = self.plugin.update_container(req.pod, req.container, req.linux_resources)
        return pb.UpdateContainerResponse(update=merge_updates(updates))

    def _stop_container(self, req: pb.StopContainerRequest) -> pb.StopContainerResponse:
        updates = self.plugin.stop_container(req.pod, req.container)
        return pb.StopContainerResponse(update=merge_updates(updates, exclude=req.container.id))

    def _update_pod_sandbox(self, req: pb.UpdatePodSandboxRequest) -> pb.UpdatePodSandboxResponse:
        handler = getattr(self.plugin, "update_pod_sandbox", None)
        if not callable(handler):
            raise RPCError(Code.UNIMPLEMENTED, "method UpdatePodSandbox")
        handler(req.pod, req.overhead_linux_resources, req.linux_resources)
        return pb.UpdatePodSandboxResponse()

    def _state_change(self, req: pb.StateChangeEvent) -> pb.Empty:
        try:
            event = Event(req.event)
        except ValueError:
            return pb.Empty()  # an event from a newer runtime: nothing to do
        self._call_event(event, req.pod, req.container)
        return pb.Empty()

    def _dedicated(self, event: Event, response_type: type[Message]) -> Callable[[Any], Message]:
        def call(req: Any) -> Message:
            container = None if event in POD_EVENTS else req.container
            self._call_event(event, req.pod, container)
            return response_type()

        return call

    def _call_event(self, event: Event, pod: pb.PodSandbox, container: pb.Container | None) -> None:
        handler = getattr(self.plugin, HANDLER_NAMES.get(event, ""), None)
        if event not in STATE_CHANGE_EVENTS or not callable(handler):
            return
        if event in POD_EVENTS:
            handler(pod)
        else:
            handler(pod, container)
