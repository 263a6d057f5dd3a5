"""Configuration: defaults, every key, and errors that name the key and the value."""

from __future__ import annotations

import pytest

from nri_podres.config import default_config, load_config
from nri_podres.cpuset import CPUSet
from nri_podres.errors import ConfigError

FULL = """
[topology]
policy = "restricted"
scope = "container"
prefer-closest-numa-nodes = true

[cpu]
reserved-cpus = "0-1,64"
strict-cpu-reservation = true
full-pcpus-only = true
distribute-cpus-across-numa = true
prefer-align-cpus-by-uncorecache = false
lift-quota-for-exclusive = false

[memory]
reserved = { "0" = "1Gi", "1" = "512Mi" }

[plugin]
name = "podres-test"
index = "10"

[state]
dir = "/tmp/podres"

[metrics]
address = "0.0.0.0:9999"
enabled = false

[log]
format = "json"
level = "debug"
"""


def test_defaults() -> None:
    cfg = default_config()
    assert cfg.topology.policy == "single-numa-node"
    assert cfg.topology.scope == "pod"
    assert cfg.cpu.reserved_cpus == CPUSet.parse("0")
    assert cfg.cpu.lift_quota_for_exclusive is True
    assert cfg.memory.reserved_bytes == {0: 1 << 30}
    assert (cfg.plugin.name, cfg.plugin.index) == ("podres", "90")
    assert cfg.metrics.address == "127.0.0.1:9189"
    assert load_config("", "empty.toml") == cfg


def test_every_key_is_read() -> None:
    cfg = load_config(FULL, "full.toml")
    assert cfg.topology.policy == "restricted" and cfg.topology.scope == "container"
    assert cfg.topology.prefer_closest_numa_nodes
    assert cfg.cpu.reserved_cpus == CPUSet.parse("0,1,64")
    assert cfg.cpu.strict_cpu_reservation and cfg.cpu.full_pcpus_only
    assert cfg.cpu.distribute_cpus_across_numa and not cfg.cpu.lift_quota_for_exclusive
    assert cfg.memory.reserved_bytes == {0: 1 << 30, 1: 512 << 20}
    assert (cfg.plugin.name, cfg.plugin.index, cfg.state.dir) == ("podres-test", "10", "/tmp/podres")
    assert cfg.metrics.enabled is False and cfg.metrics.address == "0.0.0.0:9999"
    assert (cfg.log.format, cfg.log.level) == ("json", "debug")
    assert not cfg.pod_scope


def test_empty_reserved_cpus_is_allowed() -> None:
    assert load_config('[cpu]\nreserved-cpus = ""', "x").cpu.reserved_cpus == CPUSet()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[topology]\npolicy = "strict"', ["topology.policy", "'strict'"]),
        ('[topology]\nscope = "node"', ["topology.scope", "'node'"]),
        ("[topology]\nprefer-closest-numa-nodes = 1", ["topology.prefer-closest-numa-nodes", "1"]),
        ('[cpu]\nreserved-cpus = "0-x"', ["cpu.reserved-cpus", "'0-x'"]),
        ("[cpu]\nreserved-cpus = 0", ["cpu.reserved-cpus", "0"]),
        ('[cpu]\nfull-pcpus-only = "yes"', ["cpu.full-pcpus-only", "'yes'"]),
        ('[cpu]\nunknown-option = true', ["cpu.unknown-option", "unknown key"]),
        ('[memory]\nreserved = { "a" = "1Gi" }', ["memory.reserved.a"]),
        ('[memory]\nreserved = { "0" = "lots" }', ["memory.reserved.0", "'lots'"]),
        ('[plugin]\nindex = "9"', ["plugin.index", "'9'"]),
        ('[plugin]\nname = "a b"', ["plugin.name", "'a b'"]),
        ('[metrics]\naddress = "nowhere"', ["metrics.address", "'nowhere'"]),
        ('[log]\nformat = "xml"', ["log.format", "'xml'"]),
        ('[log]\nlevel = "loud"', ["log.level", "'loud'"]),
        ('[nonsense]\na = 1', ["nonsense", "unknown key"]),
        ("topology = 3", ["topology", "3"]),
        ("[cpu\n", ["invalid TOML"]),
        ("[cpu]\ndistribute-cpus-across-numa = true\nprefer-align-cpus-by-uncorecache = true",
         ["cannot be combined"]),
    ],
)
def test_errors_name_the_key_and_the_value(text: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(text, "node.toml")
    message = str(e.value)
    assert message.startswith("node.toml: ")
    for name in names:
        assert name in message
