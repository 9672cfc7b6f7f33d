"""``streampi mqtt``: the bridge from a running server to an MQTT broker and Home Assistant
(events, counts, snapshots, stats, discovery; docs/integrations.md). ``streampi serve
--mqtt URL`` starts one itself; run this one for a server elsewhere or under CurveZMQ."""

from __future__ import annotations

import argparse
import sys

from ._argtypes import DefaultsHelpFormatter, add_curve_client, bounded, endpoint_or_none

FORMATTER = DefaultsHelpFormatter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://[user@]host[:port] or mqtts://... (TLS; port 1883 / 8883 unless given)")
    p.add_argument("--password-file", metavar="FILE", help=(
        "read the broker password from the first line of this file (or set STREAMPI_MQTT_PASSWORD; a password in "
        "the URL is visible in the process list)"))
    p.add_argument("--ca", metavar="FILE", help="CA certificate(s) of an mqtts:// broker (default: the system's)")
    p.add_argument("--server", default="tcp://127.0.0.1:5556", metavar="ENDPOINT", help="the server's results endpoint")
    p.add_argument("--control", default="tcp://127.0.0.1:5557", type=endpoint_or_none, metavar="ENDPOINT",
                   help="the server's control endpoint: availability, labels, worker health ('none': without)")
    p.add_argument("--prefix", default="streampi", help="the topic prefix: PREFIX/events, PREFIX/available, ...")
    p.add_argument("--discovery-prefix", default="homeassistant", type=endpoint_or_none, metavar="PREFIX",
                   help="Home Assistant's discovery prefix ('none': no discovery)")
    p.add_argument("--labels", metavar="LABEL,...", help=(
        "labels whose sensors every stream gets as soon as it is seen (default: every label of the model)"))
    p.add_argument("--node-id", metavar="ID", help="the Home Assistant device id (default: the prefix and host name)")
    p.add_argument("--stats-interval", type=bounded(float, above=0, maximum=86400), default=60.0, metavar="SECONDS",
                   help="publish PREFIX/stats this often")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    add_curve_client(p)


def run(args: argparse.Namespace) -> int:
    from .. import logs
    from ..integrations.mqtt import MqttState, parse_broker
    from ..integrations.mqtt_bridge import Bridge, die_with_parent

    die_with_parent()  # (a bridge that `streampi serve --mqtt` started)
    logs.setup(args.log_level, json=args.log_json)
    broker, warnings = parse_broker(args.broker, password_file=args.password_file, ca_file=args.ca)
    for w in warnings:
        print(f"streampi: warning: {w}", file=sys.stderr, flush=True)
    labels = [lb.strip() for lb in args.labels.split(",") if lb.strip()] if args.labels else None
    state = MqttState(args.prefix, args.discovery_prefix, node=args.node_id, announce=labels)
    bridge = Bridge(args.server, args.control, broker, state, stats_interval=args.stats_interval, announce=labels,
                    curve_secret=args.curve_secret, curve_server=args.curve_server)
    return bridge.run()
