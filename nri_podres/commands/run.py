"""``nri-podres run``: the NRI plugin daemon."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from nri_podres.errors import ConfigError, TopologyError

EX_CONFIG = 78  # systemd's unit does not restart on this code: a bad config needs a person


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", default="/var/run/nri/nri.sock", help="NRI socket of the runtime (default: %(default)s)")
    parser.add_argument("--config", default="/etc/nri-podres/config.toml", help="TOML configuration (default: %(default)s; a missing default file means built-in defaults)")
    parser.add_argument("--state-dir", default=None, help="checkpoint directory (default: [state] dir of the config)")
    parser.add_argument("--sysfs", default="/sys", help="sysfs root to read the topology from (default: %(default)s)")
    parser.add_argument("--machine", default=None, help="machine description file instead of sysfs (for testing)")
    parser.add_argument("--name", default=None, help="plugin name (default: NRI_PLUGIN_NAME, then [plugin] name)")
    parser.add_argument("--index", default=None, help="two-digit plugin index (default: NRI_PLUGIN_IDX, then [plugin] index)")
    parser.add_argument("--admin-socket", default=None, help="root-only status socket (default: /run/nri-podres/admin.sock)")
    parser.add_argument("--metrics-address", default=None, help="Prometheus exporter host:port (default: [metrics] address)")
    parser.add_argument("--no-metrics", action="store_true", help="do not start the Prometheus exporter")
    parser.add_argument("--log-format", default=None, choices=["auto", "json", "console", "journal"])
    parser.add_argument("--journal-socket", default="/run/systemd/journal/socket", help="journald's native socket (default: %(default)s)")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])


def execute(args: argparse.Namespace) -> int:
    from nri_podres import admin, daemon, log
    from nri_podres import config as config_mod

    try:
        cfg = _load_config(args.config, config_mod)
        log.configure_logging(args.log_format or cfg.log.format, args.log_level or cfg.log.level, journal_socket=args.journal_socket)
        topology = _load_topology(args)
        _check_config_fits(cfg, topology)
        options = daemon.DaemonOptions(
            socket_path=args.socket,
            state_dir=Path(args.state_dir or cfg.state.dir),
            name=args.name or os.environ.get("NRI_PLUGIN_NAME") or cfg.plugin.name,
            index=args.index or os.environ.get("NRI_PLUGIN_IDX") or cfg.plugin.index,
            admin_socket=args.admin_socket or admin.DEFAULT_SOCKET,
            metrics_address=None if args.no_metrics or not cfg.metrics.enabled else (args.metrics_address or cfg.metrics.address),
        )
        return asyncio.run(daemon.serve(topology, cfg, options, os.environ))
    except (ConfigError, TopologyError) as exc:
        print(f"nri-podres: {exc}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 0


def _load_config(path: str, config_mod: object) -> object:
    p = Path(path)
    if not p.exists():
        if path != "/etc/nri-podres/config.toml":
            raise ConfigError(f"config file {path} does not exist")
        return config_mod.default_config()  # type: ignore[attr-defined]
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    return config_mod.load_config(text, path)  # type: ignore[attr-defined]


def _load_topology(args: argparse.Namespace) -> object:
    if args.machine:
        from nri_podres.machine import load_machine

        return load_machine(Path(args.machine))
    from nri_podres.sysfs import read_topology

    return read_topology(Path(args.sysfs))


def _check_config_fits(cfg: object, topology: object) -> None:
    """Reserved CPUs must be CPUs of this machine (the kubelet refuses them too)."""
    online = topology.online  # type: ignore[attr-defined]
    reserved = cfg.cpu.reserved_cpus  # type: ignore[attr-defined]
    if not reserved <= online:
        raise ConfigError(f"cpu.reserved-cpus: {str(reserved)!r} names CPU(s) {reserved - online} this machine does not have (online: {online})")
