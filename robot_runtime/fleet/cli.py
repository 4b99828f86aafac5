"""`robot-runtime-fleet`: the fleet's keys from the command line (more fleet commands join as subcommands).

    robot-runtime-fleet keys robot r1 --dir keys/robots        # a robot's CURVE certificate
    robot-runtime-fleet keys server ingest --dir keys/server   # the ingest server's CURVE certificate
    robot-runtime-fleet keys release nightly --dir keys/release
    robot-runtime-fleet keys list --dir keys/robots
    robot-runtime-fleet keys revoke r1 --dir keys/robots
"""
from __future__ import annotations

import argparse
import sys

from robot_runtime.fleet import keys


def _keys(args: argparse.Namespace) -> None:
    if args.action in ("robot", "server"):
        public, secret = keys.create_curve_certificate(args.dir, args.name)
        print(f"wrote {public} (share it: the {'server' if args.action == 'robot' else 'robots'} need it) "
              f"and {secret} (keep it on this machine)")
    elif args.action == "release":
        public, secret = keys.create_release_key(args.dir, args.name)
        print(f"wrote {public} (install it in each robot's trust store) and {secret} (keep it on the workstation)")
    elif args.action == "list":
        for info in keys.list_keys(args.dir):
            state = "revoked" if info.revoked else "active"
            print(f"{info.name}\t{info.kind}\t{state}\t{'secret here' if info.has_secret else 'public only'}"
                  f"\t{info.public_path}")
    elif args.action == "revoke":
        for path in keys.revoke(args.dir, args.name):
            print(f"revoked: moved to {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="robot-runtime-fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    k = commands.add_parser("keys", help="make, list and revoke CURVE certificates and release keys")
    k.add_argument("action", choices=("robot", "server", "release", "list", "revoke"))
    k.add_argument("name", nargs="?", help="key name (robot id, server name or release key name)")
    k.add_argument("--dir", required=True, help="key directory")
    k.set_defaults(run=_keys)
    args = parser.parse_args(argv)
    if args.command == "keys" and args.action not in ("list",) and not args.name:
        parser.error(f"keys {args.action} needs a NAME")
    try:
        args.run(args)
    except (keys.FleetKeyError, ValueError) as err:
        print(f"robot-runtime-fleet: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
