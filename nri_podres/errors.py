"""The exception hierarchy. The core raises; the NRI boundary maps to the wire."""

from __future__ import annotations


class PodresError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(PodresError):
    """Bad configuration: names the key and the bad value."""


class TopologyError(PodresError):
    """The machine description could not be read or makes no sense."""


class AdmissionError(PodresError):
    """A pod or container cannot be admitted; ``reason`` is the kubelet-style name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ProtocolError(PodresError):
    """A peer violated the wire protocol; the connection cannot continue."""


class RemoteProtocolError(ProtocolError):
    """The other side sent something we cannot parse."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot carry."""


class RPCError(PodresError):
    """An error answered on the wire as a google.rpc.Status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
