"""The plugin's configuration: one frozen ``Config``, read from TOML and validated.

Every error names the key (``cpu.reserved-cpus``) and the bad value; unknown keys
are errors too, so a typo never silently falls back to a default. Names mirror the
kubelet's options so that a kubelet configuration carries over.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nri_podres.cpuset import CPUSet
from nri_podres.errors import ConfigError
from nri_podres.quantity import parse_bytes

POLICIES = ("none", "best-effort", "restricted", "single-numa-node")
SCOPES = ("pod", "container")
LOG_FORMATS = ("auto", "json", "console", "journal")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class TopologyConfig:
    policy: str = "single-numa-node"
    scope: str = "pod"
    prefer_closest_numa_nodes: bool = False


@dataclass(frozen=True, slots=True)
class CPUConfig:
    reserved_cpus: CPUSet = CPUSet.parse("0")
    strict_cpu_reservation: bool = False
    full_pcpus_only: bool = False
    distribute_cpus_across_numa: bool = False
    prefer_align_cpus_by_uncorecache: bool = False
    lift_quota_for_exclusive: bool = True


def _default_reserved_memory() -> Mapping[int, int]:
    return {0: 1 << 30}


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    reserved_bytes: Mapping[int, int] = field(default_factory=_default_reserved_memory)


@dataclass(frozen=True, slots=True)
class PluginConfig:
    name: str = "podres"
    index: str = "90"


@dataclass(frozen=True, slots=True)
class StateConfig:
    dir: str = "/var/lib/nri-podres"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    address: str = "127.0.0.1:9189"
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str = "auto"
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    topology: TopologyConfig = TopologyConfig()
    cpu: CPUConfig = CPUConfig()
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    plugin: PluginConfig = PluginConfig()
    state: StateConfig = StateConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()

    @property
    def pod_scope(self) -> bool:
        """Pod bubbles are built only for scope ``pod`` under a real topology policy."""
        return self.topology.scope == "pod" and self.topology.policy != "none"


def default_config() -> Config:
    return Config()


def load_config(text: str, source: str) -> Config:
    """Parse TOML ``text`` (read from ``source``, used in messages) into a Config."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    tables = _Reader(raw, source, "")
    config = Config(
        topology=_topology(tables.table("topology")),
        cpu=_cpu(tables.table("cpu")),
        memory=_memory(tables.table("memory")),
        plugin=_plugin(tables.table("plugin")),
        state=StateConfig(dir=tables.table("state").string("dir", StateConfig().dir)),
        metrics=_metrics(tables.table("metrics")),
        log=_log(tables.table("log")),
    )
    tables.finish()
    _check_combinations(config, source)
    return config


T = TypeVar("T")


class _Reader:
    """Reads one TOML table, remembering which keys were consumed."""

    def __init__(self, raw: Mapping[str, Any], source: str, prefix: str) -> None:
        self._raw = raw
        self._source = source
        self._prefix = prefix
        self._seen: set[str] = set()
        self._children: list[_Reader] = []

    def fail(self, key: str, value: object, why: str) -> ConfigError:
        return ConfigError(f"{self._source}: {self._prefix}{key} = {value!r}: {why}")

    def _get(self, key: str, kind: type, kind_name: str, default: T) -> T:
        self._seen.add(key)
        if key not in self._raw:
            return default
        value = self._raw[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(key, value, f"expected {kind_name}")
        return value  # type: ignore[return-value]

    def table(self, key: str) -> _Reader:
        raw = self._get(key, dict, "a table", {})
        child = _Reader(raw, self._source, f"{self._prefix}{key}.")
        self._children.append(child)
        return child

    def string(self, key: str, default: str) -> str:
        return self._get(key, str, "a string", default)

    def boolean(self, key: str, default: bool) -> bool:
        return self._get(key, bool, "true or false", default)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.fail(key, value, f"expected one of {', '.join(choices)}")
        return value

    def converted(self, key: str, default: T, convert: Callable[[str], T]) -> T:
        if key not in self._raw:
            self._seen.add(key)
            return default
        text = self.string(key, "")
        try:
            return convert(text)
        except ValueError as exc:
            raise self.fail(key, text, str(exc)) from None

    def raw_table(self, key: str) -> Mapping[str, Any] | None:
        self._seen.add(key)
        value = self._raw.get(key)
        if value is not None and not isinstance(value, dict):
            raise self.fail(key, value, "expected a table")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            key = unknown[0]
            raise self.fail(key, self._raw[key], "unknown key")
        for child in self._children:
            child.finish()


def _topology(t: _Reader) -> TopologyConfig:
    return TopologyConfig(
        policy=t.choice("policy", POLICIES, TopologyConfig().policy),
        scope=t.choice("scope", SCOPES, TopologyConfig().scope),
        prefer_closest_numa_nodes=t.boolean("prefer-closest-numa-nodes", False),
    )


def _cpu(t: _Reader) -> CPUConfig:
    return CPUConfig(
        reserved_cpus=t.converted("reserved-cpus", CPUSet.parse("0"), CPUSet.parse),
        strict_cpu_reservation=t.boolean("strict-cpu-reservation", False),
        full_pcpus_only=t.boolean("full-pcpus-only", False),
        distribute_cpus_across_numa=t.boolean("distribute-cpus-across-numa", False),
        prefer_align_cpus_by_uncorecache=t.boolean("prefer-align-cpus-by-uncorecache", False),
        lift_quota_for_exclusive=t.boolean("lift-quota-for-exclusive", True),
    )


def _memory(t: _Reader) -> MemoryConfig:
    raw = t.raw_table("reserved")
    if raw is None:
        return MemoryConfig()
    reserved: dict[int, int] = {}
    for node_text, size in raw.items():
        key = f"reserved.{node_text}"
        if not node_text.isdigit():
            raise t.fail(key, size, "NUMA node ids are non-negative integers")
        if not isinstance(size, str | int) or isinstance(size, bool):
            raise t.fail(key, size, "expected a quantity such as '1Gi'")
        try:
            reserved[int(node_text)] = parse_bytes(size)
        except ValueError as exc:
            raise t.fail(key, size, str(exc)) from None
    return MemoryConfig(reserved_bytes=dict(sorted(reserved.items())))


def _plugin(t: _Reader) -> PluginConfig:
    name = t.string("name", PluginConfig().name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise t.fail("name", name, "expected letters, digits, '.', '_' or '-'")
    index = t.string("index", PluginConfig().index)
    if not re.fullmatch(r"\d\d", index):
        raise t.fail("index", index, "expected two digits, e.g. '90'")
    return PluginConfig(name=name, index=index)


def _metrics(t: _Reader) -> MetricsConfig:
    address = t.string("address", MetricsConfig().address)
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise t.fail("address", address, "expected host:port, e.g. '127.0.0.1:9189'")
    return MetricsConfig(address=address, enabled=t.boolean("enabled", True))


def _log(t: _Reader) -> LogConfig:
    return LogConfig(
        format=t.choice("format", LOG_FORMATS, LogConfig().format),
        level=t.choice("level", LOG_LEVELS, LogConfig().level),
    )


def _check_combinations(config: Config, source: str) -> None:
    """The kubelet's invalid option combinations (k8s static policy options)."""
    cpu = config.cpu
    if cpu.distribute_cpus_across_numa and cpu.prefer_align_cpus_by_uncorecache:
        raise ConfigError(
            f"{source}: cpu.distribute-cpus-across-numa = true and "
            "cpu.prefer-align-cpus-by-uncorecache = true cannot be combined"
        )
