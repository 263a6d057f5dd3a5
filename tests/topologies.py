"""The kubelet's test machines (cpu_manager policy_test.go), built with Topology.from_cpus.

Each row of k8s's fixtures maps a CPU id to (core, socket, NUMA node[, uncore]);
old fixtures have no uncore field, so the uncore (L3) group is 0 everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from nri_podres.cpuset import CPUSet
from nri_podres.topology import CPUInfo, NUMANode, Topology

Row = Callable[[int], tuple[int, int, int, int]]  # cpu -> (core, socket, numa, l3)

GIB = 1 << 30


def build(n_cpus: int, row: Row, memory_bytes: int | None = None) -> Topology:
    cpus = []
    for c in range(n_cpus):
        core, socket, numa, l3 = row(c)
        cpus.append(CPUInfo(id=c, core=core, socket=socket, numa=numa, l3=l3))
    nodes = sorted({numa for _, _, numa, _ in map(row, range(n_cpus))})
    return Topology.from_cpus(
        cpus, [NUMANode(id=n, cpus=CPUSet(), memory_bytes=memory_bytes) for n in nodes]
    )


def single_socket_ht() -> Topology:
    return build(8, lambda c: (c % 4, 0, 0, 0))


def dual_socket_ht(memory_bytes: int | None = None) -> Topology:
    return build(12, lambda c: (c % 6, c % 2, c % 2, 0), memory_bytes)


def dual_socket_no_ht() -> Topology:
    return build(8, lambda c: (c, c // 4, c // 4, 0))


def triple_socket_ht() -> Topology:
    def row(c: int) -> tuple[int, int, int, int]:
        node = 1 if c < 6 else 0 if c < 12 else 2
        return c // 2, node, node, 0

    return build(18, row)


def dual_socket_multi_numa_per_socket_ht() -> Topology:
    """Xeon 6230 as the kubelet models it: 80 CPUs, 2 sockets, 4 NUMA nodes."""
    return build(80, lambda c: (c % 40, (c % 40) // 20, (c % 40) // 10, 0))


def small_uncore_128() -> Topology:
    """topoSingleSocketSingleNumaPerSocketSMTSmallUncore: 8 CPUs per uncore."""
    return build(128, lambda c: (c % 64, 0, 0, (c % 64) // 4))


def no_smt_uncore(n_cpus: int = 32) -> Topology:
    """topoSmallSingleSocketSingleNumaPerSocketNoSMTUncore / the KEP-4800 example."""
    return build(n_cpus, lambda c: (c, 0, 0, c // 8))


def dual_socket_uncore_384() -> Topology:
    """2x EPYC 9654: 16 CPUs per uncore, uncore = core // 8."""
    return build(384, lambda c: (c % 192, (c % 192) // 96, (c % 192) // 96, (c % 192) // 8))


_QUAD_CORES: dict[int, dict[int, tuple[int, ...]]] = {
    0: {0: (0, 109, 169, 229), 1: (50, 110, 170, 230), 64: (1, 13, 25, 38),
        65: (2, 14, 26, 39), 72: (9, 21, 33, 46), 73: (10, 22, 34, 47),
        8: (57, 117, 177, 237), 9: (58, 118, 178, 238), 24: (71, 131, 191, 251),
        25: (72, 132, 192, 252), 32: (79, 139, 199, 259), 33: (80, 140, 200, 260),
        40: (87, 147, 207, 267), 41: (88, 148, 208, 268), 48: (95, 155, 215, 275),
        49: (96, 156, 216, 276), 56: (103, 163, 223, 283), 57: (104, 164, 224, 284)},
    1: {66: (3, 15, 27, 40), 67: (4, 16, 28, 41), 74: (11, 23, 35, 48),
        75: (12, 24, 36, 49), 2: (51, 111, 171, 231), 3: (52, 112, 172, 232),
        10: (59, 119, 179, 239), 11: (60, 120, 180, 240), 18: (65, 125, 185, 245),
        19: (66, 126, 186, 246), 26: (73, 133, 193, 253), 27: (74, 134, 194, 254),
        34: (81, 141, 201, 261), 35: (82, 142, 202, 262), 42: (89, 149, 209, 269),
        43: (90, 150, 210, 270), 50: (97, 157, 217, 277), 51: (98, 158, 218, 278)},
    2: {68: (5, 17, 29, 42), 69: (6, 18, 30, 43), 4: (53, 113, 173, 233),
        5: (54, 114, 174, 234), 12: (61, 121, 181, 241), 13: (62, 122, 182, 242),
        20: (67, 127, 187, 247), 21: (68, 128, 188, 248), 28: (75, 135, 195, 255),
        29: (76, 136, 196, 256), 36: (83, 143, 203, 263), 37: (84, 144, 204, 264),
        44: (91, 151, 211, 271), 45: (92, 152, 212, 272), 52: (99, 159, 219, 279),
        53: (100, 160, 220, 280), 60: (105, 165, 225, 285), 61: (106, 166, 226, 286)},
    3: {70: (7, 19, 31, 44), 71: (8, 20, 32, 45), 63: (37, 108, 168, 228),
        62: (107, 167, 227, 287), 6: (55, 115, 175, 235), 7: (56, 116, 176, 236),
        14: (63, 123, 183, 243), 15: (64, 124, 184, 244), 22: (69, 129, 189, 249),
        23: (70, 130, 190, 250), 30: (77, 137, 197, 257), 31: (78, 138, 198, 258),
        38: (85, 145, 205, 265), 39: (86, 146, 206, 266), 46: (93, 153, 213, 273),
        47: (94, 154, 214, 274), 54: (101, 161, 221, 281), 55: (102, 162, 222, 282)},
}


def quad_socket_four_way_ht() -> Topology:
    """topoQuadSocketFourWayHT (Knights Landing-like): 288 CPUs, NUMA node = socket."""
    where = {
        cpu: (core, socket)
        for socket, cores in _QUAD_CORES.items()
        for core, cpus in cores.items()
        for cpu in cpus
    }
    return build(288, lambda c: (where[c][0], where[c][1], where[c][1], 0))


def synthetic(sockets: int, nodes_per_socket: int, cores_per_node: int,
              threads: int = 2, memory_bytes: int | None = None,
              cores_per_l3: int = 8) -> Topology:
    """Intel-style numbering: thread t of core k is CPU k + t * total_cores."""
    total_cores = sockets * nodes_per_socket * cores_per_node

    def row(c: int) -> tuple[int, int, int, int]:
        core = c % total_cores
        numa = core // cores_per_node
        return core, numa // nodes_per_socket, numa, core // cores_per_l3

    return build(total_cores * threads, row, memory_bytes)


# --- pods and containers with the CRI values the kubelet would send ---------------

from dataclasses import dataclass, field  # noqa: E402

from nri_podres import policy  # noqa: E402
from nri_podres.config import Config  # noqa: E402
from nri_podres.resources import Assignment, ContainerInfo, PodInfo  # noqa: E402
from nri_podres.state import State  # noqa: E402

PERIOD = 100_000


def shares_from_millis(millis: int) -> int:
    return 2 if millis == 0 else max(2, min(262144, millis * 1024 // 1000))


def pod_info(pod_id: str, cpu_millis: int, memory_bytes: int = GIB, *,
             limit_millis: int | None = None, annotations: dict[str, str] | None = None,
             name: str | None = None) -> PodInfo:
    """A pod with pod-level cpu request ``cpu_millis`` (limit ``limit_millis``) and memory."""
    limit = cpu_millis if limit_millis is None else limit_millis
    return PodInfo(pod_id, name or pod_id, "default", f"uid-{pod_id}", annotations or {},
                   shares_from_millis(cpu_millis), limit * PERIOD // 1000, PERIOD, memory_bytes)


def ctr_info(pod: PodInfo, ctr_id: str, cpu_millis: int | None = None,
             memory_bytes: int | None = None, *, limit_millis: int | None = None,
             cpus: CPUSet | None = None, mems=None) -> ContainerInfo:  # type: ignore[no-untyped-def]
    """A container; ``cpu_millis=None`` means no resources: it inherits the pod's limits."""
    if cpu_millis is None:
        return ContainerInfo(ctr_id, pod.id, ctr_id, {}, pod.cpu_shares, pod.cpu_quota,
                             pod.cpu_period, pod.memory_limit_bytes, cpus, mems)
    limit = cpu_millis if limit_millis is None else limit_millis
    return ContainerInfo(ctr_id, pod.id, ctr_id, {}, shares_from_millis(cpu_millis),
                         limit * PERIOD // 1000, PERIOD,
                         memory_bytes if memory_bytes is not None else GIB // 4, cpus, mems)


@dataclass
class Node:
    """A tiny driver: applies events in order like the plugin does, keeps the history."""

    topo: Topology
    cfg: Config
    state: State = field(default_factory=State.empty)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    at_create: dict[str, Assignment] = field(default_factory=dict)
    changes: list[dict[str, Assignment]] = field(default_factory=list)

    def run(self, pod: PodInfo) -> str:
        d = policy.run_pod(self.topo, self.cfg, self.state, pod)
        self.state, self.pods[pod.id] = d.state, pod
        self.changes.append(dict(d.changed))
        return d.reason

    def create(self, ctr: ContainerInfo) -> Assignment:
        d = policy.create_container(self.topo, self.cfg, self.state, self.pods[ctr.pod_id], ctr)
        assert d.assignment is not None
        self.state = d.state
        self.at_create[ctr.id] = d.assignment
        self.changes.append(dict(d.changed))
        return d.assignment

    def stop(self, ctr_id: str) -> None:
        d = policy.stop_container(self.topo, self.cfg, self.state, ctr_id)
        self.state = d.state
        self.changes.append(dict(d.changed))

    def cpus(self, ctr_id: str) -> str:
        return str(self.state.containers[ctr_id].assignment.cpus)

    def bubble(self, pod_id: str) -> str:
        return str(self.state.pods[pod_id].bubble)
