"""What a runtime's NRI version allows, inferred from its Configure request."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nri_podres.nri.events import VALID_MASK_V0_6, VALID_MASK_V0_10

# Runtime releases and the NRI release they embed (the first release of each line).
_CONTAINERD_NRI = [((2, 2, 1), (0, 11, 0)), ((2, 2, 0), (0, 10, 0)), ((1, 7, 26), (0, 8, 0)), ((0, 0, 0), (0, 6, 1))]
_CRIO_NRI = [((1, 35, 0), (0, 11, 0)), ((1, 34, 0), (0, 10, 0)), ((1, 32, 0), (0, 9, 0)), ((0, 0, 0), (0, 6, 1))]


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    name: str = ""
    version: str = ""
    nri_version: tuple[int, int, int] = (0, 6, 1)
    request_timeout_s: float = 2.0
    registration_timeout_s: float = 5.0

    @property
    def valid_mask(self) -> int:
        return VALID_MASK_V0_10 if self.nri_version >= (0, 10, 0) else VALID_MASK_V0_6

    @property
    def update_containers_safe(self) -> bool:
        """UpdateContainers can deadlock a runtime's NRI layer before v0.12.1."""
        return self.nri_version >= (0, 12, 1)

    @property
    def has_dedicated_event_methods(self) -> bool:
        return self.nri_version >= (0, 12, 0)


def _triple(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def infer(
    runtime_name: str,
    runtime_version: str,
    nri_version: str,
    request_timeout_ms: int,
    registration_timeout_ms: int,
) -> RuntimeInfo:
    """Best knowledge of the runtime's NRI version; unknown means 0.6.1 (the safe floor)."""
    nri = _triple(nri_version) if nri_version else None
    if nri is None:
        table = _CRIO_NRI if runtime_name == "cri-o" else _CONTAINERD_NRI
        rv = _triple(runtime_version) or (0, 0, 0)
        nri = next(n for r, n in table if rv >= r)
        if request_timeout_ms and nri < (0, 7, 0):
            nri = (0, 7, 0)  # the timeout fields arrived in v0.7
    return RuntimeInfo(
        name=runtime_name,
        version=runtime_version,
        nri_version=nri,
        request_timeout_s=request_timeout_ms / 1000 if request_timeout_ms else 2.0,
        registration_timeout_s=registration_timeout_ms / 1000 if registration_timeout_ms else 5.0,
    )
