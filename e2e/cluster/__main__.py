"""Command line of the test control plane: up, down, status (run through e2e/cluster/up etc.)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from . import binaries, controlplane, images, state


def _exports(cluster: state.ClusterState) -> str:
    return "\n".join(
        [
            f"export KUBECONFIG={shlex.quote(cluster.kubeconfig)}",
            f'export PATH={shlex.quote(cluster.bin_dir)}:"$PATH"',
            f"# component logs: {cluster.log_dir}",
        ]
    )


def cmd_up(args: argparse.Namespace) -> int:
    nodes = None if args.no_nodes else Path(args.nodes)
    cluster = controlplane.up(args.name, persistent=True, nodes=nodes, real_node=args.real_node)
    # stdout carries only shell lines, so `eval "$(e2e/cluster/up)"` sets the environment.
    print(_exports(cluster))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    names = [s.name for s in state.all_states()] if args.all else [args.name]
    status = 0
    for name in names:
        try:
            if controlplane.down(name) is None:
                logging.info("no cluster %r is running", name)
        except controlplane.ClusterError as error:
            logging.error("%s", error)
            status = 1
    return status


def cmd_status(args: argparse.Namespace) -> int:
    clusters = state.all_states()
    if not clusters:
        print("no test cluster is running")
    for cluster in clusters:
        dead = cluster.dead_components()
        health = "running" if not dead else "BROKEN: " + ", ".join(p.component for p in dead) + " died"
        if cluster.owner_pid is None:
            owner = "started by hand"
        elif cluster.owner_alive():
            owner = f"owned by pid {cluster.owner_pid}"
        else:
            owner = f"its run, pid {cluster.owner_pid}, is gone: the next `up` or `down --all` cleans it"
        print(f"{cluster.name}: {health} ({owner})")
        print(f"  KUBECONFIG={cluster.kubeconfig}")
        print(f"  logs: {cluster.log_dir}")
        for proc in cluster.processes:
            print(f"  {proc.component:<24} pid {proc.pid:<8} ports {proc.ports}")
    bin_dir = binaries.built_bin_dir()
    print(f"binaries: {bin_dir or 'not built (bash e2e/cluster/build)'}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    cluster = state.load(args.name)
    if cluster is None:
        logging.error("no cluster %r is running; start one with e2e/cluster/up", args.name)
        return 1
    print(_exports(cluster))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e/cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a cluster that runs until `down`; prints shell exports")
    up.add_argument("--name", default="default")
    up.add_argument("--nodes", default=str(controlplane.NODES_DIR), help="Node YAML file or folder")
    up.add_argument("--no-nodes", action="store_true", help="start without the fake node fleet")
    up.add_argument(
        "--real-node",
        action="store_true",
        help="also run a real node (kubelet, containerd, kube-proxy, CoreDNS) with the project's images; needs root",
    )
    up.set_defaults(run=cmd_up)
    down = sub.add_parser("down", help="stop a cluster and remove its data (logs are kept)")
    down.add_argument("--name", default="default")
    down.add_argument("--all", action="store_true", help="stop every recorded cluster")
    down.set_defaults(run=cmd_down)
    status = sub.add_parser("status", help="list recorded clusters and their processes")
    status.set_defaults(run=cmd_status)
    env = sub.add_parser("env", help="print the shell exports of a running cluster")
    env.add_argument("--name", default="default")
    env.set_defaults(run=cmd_env)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="[cluster %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    try:
        return int(args.run(args))
    except (controlplane.ClusterError, binaries.BuildError, images.ImageBuildError) as error:
        logging.error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
