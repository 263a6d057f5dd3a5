"""Packaging: unit file, runtime drop-ins, example config, DaemonSet and the .deb itself."""

from __future__ import annotations

import configparser
import dataclasses
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from nri_podres import __version__
from nri_podres.config import Config, default_config, load_config

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SYSTEM_PYTHON = "/usr/bin/python3"


# --- systemd unit ------------------------------------------------------------------------


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    unit.optionxform = str  # keys are case-sensitive
    unit.read(path)
    return unit


def test_unit_is_a_supervised_notify_service() -> None:
    """Type=notify with a watchdog, restarts except on bad config, ordered before kubelet."""
    unit = read_unit(PACKAGING / "nri-podres.service")
    service, ordering = unit["Service"], unit["Unit"]
    assert {k: service[k] for k in ("Type", "NotifyAccess", "WatchdogSec", "Restart")} == {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30s",
        "Restart": "always",
    }
    assert service["RestartPreventExitStatus"] == "78"
    assert service["ExecStart"].split()[:2] == ["/usr/bin/nri-podres", "run"]
    assert service["StateDirectory"] == "nri-podres"
    assert service["ConfigurationDirectory"] == "nri-podres"
    assert set(ordering["After"].split()) == {"containerd.service", "crio.service"}
    assert ordering["Before"] == "kubelet.service"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_never_stops_with_the_runtime() -> None:
    """No Requires/BindsTo/PartOf on the runtime: reconnecting handles its restarts."""
    unit = read_unit(PACKAGING / "nri-podres.service")
    assert not {"Requires", "BindsTo", "PartOf", "Requisite"} & set(unit["Unit"])


def test_unit_hardening_keeps_sys_reads_and_unix_sockets() -> None:
    """Strict hardening, but /sys stays readable and AF_UNIX stays allowed."""
    service = read_unit(PACKAGING / "nri-podres.service")["Service"]
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectKernelTunables"] == "yes"  # read-only /sys, still readable
    assert service["CapabilityBoundingSet"] == ""
    assert service["NoNewPrivileges"] == "yes"
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()
    assert "User" not in service and "DynamicUser" not in service  # root: the NRI dir is 0700
    assert "ProtectProc" not in service and "PrivateNetwork" not in service
    assert "InaccessiblePaths" not in service


def test_unit_comments_stand_on_their_own_lines() -> None:
    """systemd has no trailing comments: a '#' after a value would become part of it."""
    for line in (PACKAGING / "nri-podres.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            assert "#" not in line.split("=", 1)[1], line


# --- runtime drop-ins and example configuration --------------------------------------------


def test_runtime_drop_ins_enable_nri_with_external_plugins() -> None:
    """Each drop-in enables NRI, allows external connections and keeps the default socket."""
    ctrd17 = tomllib.loads((PACKAGING / "containerd-1.7-nri.toml").read_text())
    ctrd2 = tomllib.loads((PACKAGING / "containerd-2.x-nri.toml").read_text())
    crio = tomllib.loads((PACKAGING / "crio-nri.conf").read_text())["crio"]["nri"]
    assert (ctrd17["version"], ctrd2["version"]) == (2, 3)
    for table in (ctrd17, ctrd2):
        nri = table["plugins"]["io.containerd.nri.v1.nri"]
        assert (nri["disable"], nri["disable_connections"]) == (False, False)
        assert nri["socket_path"] == "/var/run/nri/nri.sock"
        assert (nri["plugin_registration_timeout"], nri["plugin_request_timeout"]) == ("5s", "2s")
    assert (crio["enable_nri"], crio["nri_disable_connections"]) == (True, False)
    assert crio["nri_listen"] == "/var/run/nri/nri.sock"


def test_example_config_documents_exactly_the_defaults() -> None:
    """The shipped config loads (unknown keys would fail) and equals the built-in defaults."""
    assert load_config((PACKAGING / "config.toml").read_text(), "config.toml") == default_config()


def test_example_config_shows_every_key() -> None:
    """Every setting the daemon knows appears in the example, so none stays undocumented."""
    shown = tomllib.loads((PACKAGING / "config.toml").read_text())
    for table in dataclasses.fields(Config):
        keys = {f.name.replace("_", "-") for f in dataclasses.fields(getattr(default_config(), table.name))}
        keys = {"reserved" if k == "reserved-bytes" else k for k in keys}
        assert set(shown[table.name]) == keys, table.name


# --- DaemonSet -----------------------------------------------------------------------------


def load_manifests() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((PACKAGING / "daemonset.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_daemonset_mounts_the_nri_directory_sys_and_state() -> None:
    """hostPath /var/run/nri (directory, read-only), /sys read-only, /var/lib/nri-podres."""
    pod = load_manifests()["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    host_paths = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    by_path = {hp["path"]: (name, hp.get("type")) for name, hp in host_paths.items()}
    assert by_path["/var/run/nri"][1] == "DirectoryOrCreate"  # the directory, not the socket
    assert mounts[by_path["/var/run/nri"][0]]["readOnly"] is True
    assert mounts[by_path["/sys"][0]]["readOnly"] is True
    assert mounts[by_path["/var/lib/nri-podres"][0]]["mountPath"] == "/var/lib/nri-podres"
    sysfs_mount = mounts[by_path["/sys"][0]]["mountPath"]
    assert container["command"][container["command"].index("--sysfs") + 1] == sysfs_mount


def test_daemonset_is_node_critical_unprivileged_and_probed() -> None:
    """system-node-critical, no hostPID, not privileged, `nri-podres status` probes."""
    pod = load_manifests()["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["hostPID"] is False
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["nri-podres", "status"]
    assert container["livenessProbe"]["failureThreshold"] >= 3  # lenient: kills unpin


def test_daemonset_config_map_is_a_valid_config() -> None:
    """The ConfigMap's config.toml loads and exposes metrics on the pod's address."""
    text = load_manifests()["ConfigMap"]["data"]["config.toml"]
    config = load_config(text, "ConfigMap nri-podres-config")
    assert config.metrics.address == "0.0.0.0:9189"
    (container,) = load_manifests()["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 9189


# --- the Debian package --------------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the .deb once for this module (pip fetches the dependency wheels)."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "PYTHON": sys.executable, "TARGET_PYTHON": SYSTEM_PYTHON}
    result = subprocess.run(
        ["bash", str(PACKAGING / "build-deb.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.name.startswith(f"nri-podres_{__version__}_") and path.suffix == ".deb"
    return path


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def deb_field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_deb_control_and_conffiles(deb: Path) -> None:
    """Control fields name the package, version and Python; the config is a conffile."""
    assert deb_field(deb, "Package") == "nri-podres"
    assert deb_field(deb, "Version") == __version__
    depends = deb_field(deb, "Depends")
    assert "python3 (>= 3.11)" in depends
    conffiles = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    listing = subprocess.run(
        ["tar", "-xOf", "-", "./conffiles"], input=conffiles, capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == ["/etc/nri-podres/config.toml"]


def test_deb_installs_the_expected_files(extracted: Path) -> None:
    """Launcher, private modules with their dependencies, unit, config and examples."""
    assert os.access(extracted / "usr/bin/nri-podres", os.X_OK)
    lib = extracted / "usr/lib/nri-podres"
    for module in ("nri_podres/cli.py", "nri_podres/sdnotify.py", "google/protobuf", "structlog", "yaml", "prometheus_client"):
        assert (lib / module).exists(), module
    unit = extracted / "lib/systemd/system/nri-podres.service"
    assert unit.read_bytes() == (PACKAGING / "nri-podres.service").read_bytes()
    assert (extracted / "etc/nri-podres/config.toml").read_bytes() == (PACKAGING / "config.toml").read_bytes()
    examples = extracted / "usr/share/doc/nri-podres/examples"
    assert sorted(p.name for p in examples.iterdir()) == [
        "containerd-1.7-nri.toml",
        "containerd-2.x-nri.toml",
        "crio-nri.conf",
        "daemonset.yaml",
    ]
    assert not list(lib.rglob("*.pyc")), "byte code is compiled at install, not shipped"


def test_extracted_launcher_runs_with_the_system_python(extracted: Path) -> None:
    """The launcher finds its private directory relative to itself and runs --version."""
    result = subprocess.run(
        [str(extracted / "usr/bin/nri-podres"), "--version"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"nri-podres {__version__}"), result.stderr


def test_bundled_dependencies_load_from_the_package(extracted: Path) -> None:
    """Debian's python3 imports protobuf, structlog, yaml and prometheus_client from the tree."""
    lib = extracted / "usr/lib/nri-podres"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import google.protobuf, structlog, yaml, prometheus_client;"
        "print('\\n'.join(m.__file__ for m in (google.protobuf, structlog, yaml, prometheus_client)))"
    )
    result = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", code, str(lib)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert all(line.startswith(str(lib)) for line in result.stdout.splitlines())


def test_maintainer_scripts_are_executable_shell(deb: Path, tmp_path: Path) -> None:
    """postinst/prerm/postrm exist, are executable and pass `sh -n`."""
    subprocess.run(["dpkg-deb", "--control", str(deb), str(tmp_path / "DEBIAN")], check=True)
    for script in ("postinst", "prerm", "postrm"):
        path = tmp_path / "DEBIAN" / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["sh", "-n", str(path)], check=True)


def test_systemd_analyze_verifies_the_unit(extracted: Path, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit, with ExecStart at the extracted launcher."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is needed (package systemd)")
    launcher = extracted / "usr/bin/nri-podres"
    text = (PACKAGING / "nri-podres.service").read_text().replace("/usr/bin/nri-podres", str(launcher))
    unit = tmp_path / "nri-podres.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120, check=False
    )
    complaints = [line for line in result.stderr.splitlines() if "nri-podres.service" in line]
    assert (result.returncode, complaints) == (0, [])
