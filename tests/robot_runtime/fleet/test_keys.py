"""Fleet keys: CURVE certificates and Ed25519 release keys made, listed and revoked through the CLI."""
import os
import stat

import pytest
import zmq

from robot_runtime.fleet import keys
from robot_runtime.fleet.cli import main


def test_cli_makes_lists_and_revokes_keys(tmp_path, capsys):
    main(["keys", "robot", "r1", "--dir", str(tmp_path)])
    main(["keys", "release", "nightly", "--dir", str(tmp_path)])
    assert stat.S_IMODE(os.stat(tmp_path / "r1.key_secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "nightly.release.pem").st_mode) == 0o600
    public, secret = keys.load_curve_keys(tmp_path / "r1.key_secret")
    assert len(zmq.utils.z85.decode(public)) == 32 and secret is not None
    keys.load_release_public_key(tmp_path / "nightly.release.pub")
    capsys.readouterr()
    main(["keys", "list", "--dir", str(tmp_path)])
    listing = capsys.readouterr().out
    assert "r1\tcurve\tactive" in listing and "nightly\trelease\tactive" in listing
    main(["keys", "revoke", "r1", "--dir", str(tmp_path)])
    assert not (tmp_path / "r1.key").exists() and (tmp_path / "revoked" / "r1.key").exists()
    assert [(k.name, k.revoked) for k in keys.list_keys(tmp_path) if k.kind == "curve"] == [("r1", True)]


def test_refusals_name_the_problem(tmp_path, capsys):
    main(["keys", "robot", "r1", "--dir", str(tmp_path)])
    for argv, problem in ([["keys", "robot", "r1"], "already exists"], [["keys", "robot", "../x"], "not allowed"],
                          [["keys", "revoke", "nobody"], "no public key named 'nobody'"]):
        with pytest.raises(SystemExit):
            main([*argv, "--dir", str(tmp_path)])
        assert problem in capsys.readouterr().err
    (tmp_path / "bad.release.pub").write_text("not a key")
    with pytest.raises(keys.FleetKeyError, match="not a release public key"):
        keys.load_release_public_key(tmp_path / "bad.release.pub")
