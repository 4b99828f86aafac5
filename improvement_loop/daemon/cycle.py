"""One nightly cycle as a state machine persisted in the catalog's `cycles` table:

    snapshot -> value -> advantages -> policy -> export -> sign -> gate -> canary -> promote | rollback
    (snapshot may end it as skipped: too few new episodes; gate as refused)

Each state does its work, writes its outputs under the cycle's work dir (WORK/cycle-<id>/states/<state>.json,
atomically, last), and only then is the state advanced in the database. Killed at any point (kill -9) and
restarted, the cycle resumes in its recorded state; a state whose output file exists is not redone (its
outputs are read back), and a training step killed midway resumes from its own checkpoints (cycle/stages.py).
Training runs as child processes of `robot-runtime-train` (under `training.launcher`, e.g. torchrun), which
die with the daemon. Every state that ran is appended to the cycle's executed.log (state, pid), so a test
or an operator sees what ran twice.

A cycle trains on a snapshot: WORK/cycle-<id>/snapshot/episodes/ holds a link per labeled episode the
catalog listed when the cycle began, so episodes arriving meanwhile wait for the next cycle. A round's
training directory is WORK/cycle-<id>/train/ (round number = cycle id), so a release's version names its
cycle (r<id>-<time>). Bundle labels (model_id@version) name releases in the records, as episodes do.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from robot_runtime.bringup.launcher import stop_with_parent
from robot_runtime.bundle import load_bundle
from robot_runtime.episode import EpisodeStore, checked_episode_id
from robot_runtime.files import write_json_atomic
from robot_runtime.fleet.releases import sign_bundle, sign_rollback
from robot_runtime.improvement_loop.daemon import canary, gate, records
from robot_runtime.improvement_loop.daemon.config import DaemonConfig
from robot_runtime.improvement_loop.daemon.lock import CycleLock
from robot_runtime.improvement_loop.fleet.deployments import Deployments

log = logging.getLogger("daemon")

KILL_AT = "ROBOT_RUNTIME_DAEMON_KILL_AT"   # tests: SIGKILL this process once <state>'s outputs are written
_TRAINING = ("value", "advantages", "policy", "export")
_AFTER = dict(zip(records.STATES[:8], records.STATES[1:8]))   # snapshot -> value ... gate -> canary


class StateFailed(RuntimeError):
    """A state cannot complete; the cycle ends failed with this reason."""


class CycleRunner:
    def __init__(self, cfg: DaemonConfig, conn: sqlite3.Connection, sleep=time.sleep, clock=time.time):
        self.cfg, self.conn, self.sleep, self.clock = cfg, conn, sleep, clock
        self.deployments = Deployments(cfg.catalog)

    def run(self) -> records.Cycle:
        """Resume the running cycle or start one, and drive it to its end (or until paused)."""
        with CycleLock(self.cfg.work, self.conn):
            c = records.current_cycle(self.conn) or records.new_cycle(self.conn, self.cfg.digest(), "",
                                                                      Path(self.cfg.work))
            log.info("cycle %d in state %s", c.id, c.state)
            while c.status == records.RUNNING and not records.daemon_state(self.conn).paused:
                if not self.step(c):
                    self.sleep(self.cfg.canary.poll_seconds)
                c = records.cycle(self.conn, c.id)
            return c

    def step(self, c: records.Cycle) -> bool:
        """Run the cycle's current state once; False when it waits (the canary)."""
        out = Path(c.work_dir) / "states" / f"{c.state}.json"
        if out.is_file():
            result = json.loads(out.read_text())
        else:
            try:
                result = getattr(self, f"_{c.state}")(c)
            except StateFailed as err:
                result = {"finish": records.FAILED, "reason": f"{c.state}: {err}"}
            except Exception as err:  # a bug or a broken input must end the cycle with its reason, not loop
                _log_text(c, "error.log", traceback.format_exc())
                result = {"finish": records.FAILED, "reason": f"{c.state}: {type(err).__name__}: {err}"}
            if result is None:
                return False
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out, result)
            _log_text(c, "executed.log", f"{c.state} {os.getpid()} {time.time():.3f}\n")
        if os.environ.get(KILL_AT) == c.state:
            os.kill(os.getpid(), signal.SIGKILL)
        self._apply(c, result)
        return True

    def _apply(self, c: records.Cycle, result: dict) -> None:
        made = {d.kind for d in records.decisions(self.conn, c.id)}
        for d in result.get("decisions", []):
            if d["kind"] not in made:
                records.record_decision(self.conn, c.id, d["kind"], d["accepted"], d["numbers"], d["reason"])
        columns = result.get("columns", {})
        if "finish" in result:
            records.finish(self.conn, c.id, result["finish"], result["reason"], **columns)
            log.info("cycle %d %s in %s: %s", c.id, result["finish"], c.state, result["reason"])
        else:
            records.advance(self.conn, c.id, c.state, result["next"], **columns)
            log.info("cycle %d: %s done, now %s", c.id, c.state, result["next"])

    def _output(self, c: records.Cycle, state: str) -> dict:
        return json.loads((Path(c.work_dir) / "states" / f"{state}.json").read_text())

    # --- states: each returns its result ({"next" | "finish", "reason", "columns", "decisions", ...}) ---

    def _snapshot(self, c: records.Cycle) -> dict:
        if not Path(self.cfg.training.pretrained).is_file():
            raise StateFailed(f"{self.cfg.training.pretrained}: no pretrain result; run `robot-runtime-train "
                              "--stage pretrain` on the demonstrations first (training.pretrained)")
        mark, judged = self._high_water(c.id), not self.cfg.training.progress_labels
        rows = self.conn.execute("SELECT episode_id, received_at, outcome FROM episodes "
                                 + ("WHERE outcome != 'unlabeled' " if judged else "")
                                 + "ORDER BY episode_id").fetchall()
        new = [r for r in rows if mark is None or r[1] > mark]
        snapshot = {"episodes": [r[0] for r in rows], "high_water": max((r[1] for r in rows), default=mark),
                    "new": len(new), "since": mark}
        if len(new) < self.cfg.min_new_episodes:
            return {"finish": records.SKIPPED, "columns": {"snapshot": snapshot},
                    "reason": f"{len(new)} new {'labeled ' if judged else ''}episodes since the last cycle, fewer "
                              f"than min_new_episodes ({self.cfg.min_new_episodes})"}
        root = Path(c.work_dir) / "snapshot" / "episodes"
        root.mkdir(parents=True, exist_ok=True)
        source = EpisodeStore(self.cfg.store, create=False).episodes_dir
        for episode_id, _, outcome in rows:
            link = root / checked_episode_id(episode_id)
            if outcome == "unlabeled":
                link_entries(source / episode_id, link)
            elif not link.is_symlink():
                link.symlink_to(source / episode_id, target_is_directory=True)
        cache = Path(self.cfg.training.pretrained).parent.parent / "text_cache"
        if cache.is_dir() and not (Path(c.work_dir) / "train" / "text_cache").exists():
            shutil.copytree(cache, Path(c.work_dir) / "train" / "text_cache")
        self.assign_baseline()
        incumbent = self.incumbent()
        return {"next": "value", "columns": {"snapshot": snapshot, "incumbent": incumbent[0] if incumbent else ""},
                "incumbent": incumbent}

    def _high_water(self, cycle_id: int) -> float | None:
        """received_at of the newest episode an earlier cycle trained on (skipped and failed ones did not)."""
        for earlier in records.cycles(self.conn, limit=1000):
            if earlier.id != cycle_id and earlier.status in (records.DONE, records.REFUSED):
                return earlier.snapshot.get("high_water")
        return None

    def assign_baseline(self) -> None:
        """Before the daemon's first release no robot has a target: `fleet.baseline_release` (the release the
        robots were provisioned with) becomes every robot's, so that it is the incumbent a first candidate must
        beat and the one a failing first canary returns to. A robot already on it is not offered it again."""
        robots = self.cfg.fleet.robots
        if self.cfg.fleet.baseline_release and all(self.deployments.target(r) is None for r in robots):
            self.deployments.assign(self.cfg.fleet.baseline_release, robots,
                                    "baseline: the release the fleet was provisioned with (fleet.baseline_release)")

    def incumbent(self) -> tuple[str, str, str] | None:
        """(bundle label, bundle dir, release name) of what most non-canary robots should run, or None."""
        rest = [r for r in self.cfg.fleet.robots if r not in self.cfg.fleet.canary] or self.cfg.fleet.robots
        names = Counter(t.name for t in (self.deployments.target(r) for r in rest) if t is not None)
        if not names:
            return None
        name = names.most_common(1)[0][0]
        row = self.deployments.db.execute("SELECT path FROM releases WHERE name = ? AND rollback = 0 "
                                          "ORDER BY sequence DESC LIMIT 1", (name,)).fetchone()
        if row is None:
            return None
        return load_bundle(row[0]).label, row[0], name

    def _train(self, c: records.Cycle, stage: str, *more: str) -> dict:
        t = self.cfg.training
        command = shutil.which(t.train_command) or str(Path(sys.executable).with_name(t.train_command))
        cmd = [*t.launcher, command, "--store", str(Path(c.work_dir) / "snapshot"),
               "--work", str(Path(c.work_dir) / "train"), "--stage", stage, "--round", str(c.id),
               "--pretrained", t.pretrained, "--model-id", t.model_id, "--method", t.method, "--beta", str(t.beta),
               "--value-steps", str(t.value_steps), "--policy-steps", str(t.policy_steps),
               "--threads", str(t.threads), *more, *t.extra_args]
        logs = Path(c.work_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{stage}.log", "ab") as err, open(logs / f"{stage}.json", "wb") as out:
            err.write(f"\n$ {' '.join(cmd)}\n".encode())
            err.flush()
            done = subprocess.run(cmd, stdout=out, stderr=err, preexec_fn=stop_with_parent,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0:
            tail = (logs / f"{stage}.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise StateFailed(f"robot-runtime-train --stage {stage} exited with {done.returncode}: "
                              f"{' | '.join(tail)} (log: {logs / f'{stage}.log'})")
        try:  # the step's done file, as the command prints it (the daemon itself never imports torch)
            return json.loads((logs / f"{stage}.json").read_text())
        except json.JSONDecodeError as error:
            raise StateFailed(f"robot-runtime-train --stage {stage} printed no result ({error}): see "
                              f"{logs / f'{stage}.log'}") from None

    def _value(self, c):
        t, done = self.cfg.training, {}
        if t.progress_labels:  # a rerun after a kill labels only what the first run left unlabeled
            done["progress_labels"] = self._train(c, "progress", "--min-confidence",
                                                  str(t.progress_min_confidence))["labels"]
        self._train(c, "value")
        return {"next": "advantages", **done}

    def _advantages(self, c):
        self._train(c, "advantages")
        return {"next": "policy"}

    def _policy(self, c):
        self._train(c, "policy")
        return {"next": "export"}

    def _export(self, c):
        result = self._train(c, "export")
        label = load_bundle(result["bundle_path"]).label
        return {"next": "sign", "columns": {"candidate": label}, "bundle": result["bundle_path"]}

    def _sign(self, c):
        bundle = self._output(c, "export")["bundle"]
        release = sign_bundle(bundle, self.cfg.release_key, self._next_sequence())
        return {"next": "gate", "release": release.name, "sequence": release.sequence}

    def _next_sequence(self) -> int:
        return int(self.deployments.db.execute("SELECT COALESCE(MAX(sequence), 0) FROM releases").fetchone()[0]) + 1

    def _gate(self, c):
        incumbent = self._output(c, "snapshot")["incumbent"]
        snapshot = EpisodeStore(Path(c.work_dir) / "snapshot", create=False)
        verdict = gate.evaluate(self._output(c, "export")["bundle"], incumbent[1] if incumbent else None,
                                self.cfg.gate, snapshot, c.snapshot["episodes"])
        decision = {"kind": "gate", "accepted": verdict.accepted, "numbers": verdict.numbers,
                    "reason": verdict.reason}
        if verdict.accepted:
            return {"next": "canary", "decisions": [decision]}
        return {"finish": records.REFUSED, "reason": f"gate: {verdict.reason}", "decisions": [decision]}

    def _canary(self, c):
        robots = self.cfg.fleet.canary
        if not robots:
            return {"next": "promote", "decisions": [{"kind": "canary", "accepted": True, "numbers": {},
                                                      "reason": "no canary robots configured"}]}
        signed = self._output(c, "sign")
        since = self._assign(c, robots, f"canary of cycle {c.id}")
        incumbent = self._output(c, "snapshot")["incumbent"]
        verdict = canary.judge(self.conn, self.deployments, self.cfg.canary, robots, c.candidate, signed["release"],
                               incumbent[0] if incumbent else "", since, self.cfg.gate.first_release_min_success,
                               now=self.clock())
        if verdict is None:
            return None
        return {"next": "promote" if verdict.accepted else "rollback",
                "decisions": [{"kind": "canary", "accepted": verdict.accepted, "numbers": verdict.numbers,
                               "reason": verdict.reason}]}

    def _assign(self, c, robots: list[str], reason: str) -> float:
        """Target `robots` at the candidate (those not already), return when the first of them got it."""
        signed = self._output(c, "sign")
        todo = [r for r in robots if (t := self.deployments.target(r)) is None or t.sequence != signed["sequence"]]
        if todo:
            self.deployments.assign(self._output(c, "export")["bundle"], todo, reason)
        return min(self.deployments.target(r).assigned_at for r in robots)

    def _promote(self, c):
        self._assign(c, self.cfg.fleet.robots, f"promoted by cycle {c.id}")
        reason = f"{c.candidate} promoted to all {len(self.cfg.fleet.robots)} robots"
        return {"finish": records.DONE, "reason": reason,
                "decisions": [{"kind": "promote", "accepted": True, "reason": reason,
                               "numbers": {"robots": self.cfg.fleet.robots}}]}

    def _rollback(self, c):
        why = next(d.reason for d in records.decisions(self.conn, c.id) if d.kind == "canary")
        incumbent = self._output(c, "snapshot")["incumbent"]
        robots = self.cfg.fleet.canary
        if not incumbent:
            reason = (f"no earlier release to return to (first release, no fleet.baseline_release): canary robots "
                      f"{robots} keep {c.candidate} until a later cycle's release; canary: {why}")
            return {"finish": records.FAILED, "reason": reason,
                    "decisions": [{"kind": "rollback", "accepted": False, "reason": reason, "numbers": {}}]}
        label, bundle_dir, name = incumbent
        out = Path(c.work_dir) / "rollback_release"
        targets = [self.deployments.target(r) for r in robots]
        if not all(t is not None and t.rollback and t.name == name for t in targets):
            if not self._known(out):  # signed but never handed out (killed in between): sign it afresh
                sign_rollback(bundle_dir, out, self.cfg.release_key, self._next_sequence())
            self.deployments.rollback(robots, name, out, f"cycle {c.id} canary: {why}")
        reason = f"rolled back canary robots {robots} to {label}: {why}"
        return {"finish": records.REFUSED, "reason": reason,
                "decisions": [{"kind": "rollback", "accepted": True, "reason": reason,
                               "numbers": {"robots": robots, "to": label}}]}

    def _known(self, directory: Path) -> bool:
        return self.deployments.db.execute("SELECT 1 FROM releases WHERE path = ?",
                                           (str(directory.resolve()),)).fetchone() is not None


def _log_text(c: records.Cycle, name: str, text: str) -> None:
    Path(c.work_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(c.work_dir) / name, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def link_entries(source: Path, episode: Path) -> None:
    """An unlabeled episode in the snapshot: its own directory of links to the fleet store's files, so that
    the labels the progress model writes (labels.json, replaced atomically) stay in the snapshot and the
    fleet's store keeps the episode as it came; a rerun completes a half-made directory."""
    episode.mkdir(exist_ok=True)
    for entry in source.iterdir():
        if not (episode / entry.name).is_symlink() and not (episode / entry.name).exists():
            (episode / entry.name).symlink_to(entry)
