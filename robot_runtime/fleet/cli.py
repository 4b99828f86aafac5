"""`robot-runtime-fleet`: the fleet's keys and releases from the command line (more fleet commands join as
subcommands).

    robot-runtime-fleet keys robot r1 --dir keys/robots        # a robot's CURVE certificate
    robot-runtime-fleet keys server ingest --dir keys/server   # the ingest server's CURVE certificate
    robot-runtime-fleet keys release nightly --dir keys/release
    robot-runtime-fleet keys list --dir keys/robots
    robot-runtime-fleet keys revoke r1 --dir keys/robots
    robot-runtime-fleet release sign --bundle bundles/r3 --key keys/release/nightly.release.pem --sequence 3
    robot-runtime-fleet release verify --bundle bundles/r3 --trust /etc/robot_runtime/trust
    robot-runtime-fleet release rollback --bundle bundles/r2 --key keys/release/nightly.release.pem \
        --sequence 4 --out rollback-r2            # a signed instruction: robots go back to r2
"""
from __future__ import annotations

import argparse
import sys

from robot_runtime.bundle import BundleError
from robot_runtime.fleet import keys, releases


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


def _release(args: argparse.Namespace) -> None:
    if args.action == "sign":
        r = releases.sign_bundle(args.bundle, args.key, args.sequence, args.key_name)
        print(f"signed {r.name} as release {r.sequence} with key '{r.key}': {args.bundle}/{releases.RELEASE_FILE}")
    elif args.action == "rollback":
        r = releases.sign_rollback(args.bundle, args.out, args.key, args.sequence, args.key_name)
        print(f"signed a rollback to {r.name} as release {r.sequence} with key '{r.key}': "
              f"{args.out}/{releases.RELEASE_FILE}")
    elif args.action == "verify":
        trust = releases.TrustStore(args.trust)
        r = releases.verify_signed(args.bundle, trust)
        if not r.rollback:
            r, _ = releases.verify_release(args.bundle, trust)
        what = f"rollback instruction to {r.name}" if r.rollback else f"{r.name}, every file as signed"
        print(f"ok: {what}; release {r.sequence}, key '{r.key}', created {r.created_at}")


def _release_parser(commands) -> None:
    r = commands.add_parser("release", help="sign bundles and rollback instructions, verify them as a robot does")
    actions = r.add_subparsers(dest="action", required=True)
    sign = actions.add_parser("sign", help="sign a bundle directory (writes its release.json)")
    rollback = actions.add_parser("rollback", help="sign an instruction to make an installed bundle current again")
    for p in (sign, rollback):
        p.add_argument("--bundle", required=True, help="bundle directory")
        p.add_argument("--key", required=True, help="release secret key (<name>.release.pem)")
        p.add_argument("--sequence", required=True, type=int, help="release number, above every earlier one")
        p.add_argument("--key-name", help="the key's name in robots' trust stores (default: from the file name)")
    rollback.add_argument("--out", required=True, help="directory for the instruction's release.json")
    verify = actions.add_parser("verify", help="check a release against a trust store, as a robot would")
    verify.add_argument("--bundle", required=True, help="release directory (bundle or rollback instruction)")
    verify.add_argument("--trust", required=True, help="trust store: a directory of <name>.release.pub files")
    r.set_defaults(run=_release)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="robot-runtime-fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    k = commands.add_parser("keys", help="make, list and revoke CURVE certificates and release keys")
    k.add_argument("action", choices=("robot", "server", "release", "list", "revoke"))
    k.add_argument("name", nargs="?", help="key name (robot id, server name or release key name)")
    k.add_argument("--dir", required=True, help="key directory")
    k.set_defaults(run=_keys)
    _release_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "keys" and args.action not in ("list",) and not args.name:
        parser.error(f"keys {args.action} needs a NAME")
    try:
        args.run(args)
    except (keys.FleetKeyError, releases.ReleaseError, BundleError, ValueError, OSError) as err:
        print(f"robot-runtime-fleet: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
