"""Re-encode committed episodes with other camera codecs, into another store.

A fleet that recorded lossless (or at a high quality) can shrink its store later without
re-recording: each episode is read chunk by chunk (verified against its commit record, as
every read is) and written through the ordinary EpisodeWriter with the new codecs, so the
copy is committed, checksummed and crash-safe like any recorded episode. The id, rows,
metadata, start and end times and the operator's label are kept; `extra.transcoded_from`
records the codecs it had. The source store is never written to: swapping stores is the
user's decision, after `validate` of the new one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from robot_runtime.capture.codecs import CameraCodec
from robot_runtime.episode import LABELS, Episode, EpisodeError, EpisodeMetadata, EpisodeStore, Step
from robot_runtime.files import write_json_atomic

TRANSCODED_FROM = "transcoded_from"


def codecs_for(episode: Episode, choices: dict[str | None, CameraCodec]) -> dict[str, CameraCodec]:
    """Each camera's new codec: its own choice, else the default choice, else the codec it has."""
    unknown = {camera for camera in choices if camera is not None} - set(episode.layout.cameras)
    if unknown:
        raise EpisodeError(f"{episode.episode_id}: no camera(s) {sorted(unknown)} "
                           f"(it has {list(episode.layout.cameras)})")
    return {camera: choices.get(camera, choices.get(None, episode.codecs[camera])) for camera in episode.layout.cameras}


def transcode_episode(episode: Episode, target: EpisodeStore, codecs: dict[str, CameraCodec]) -> Path:
    """Commit a copy of `episode` into `target` with camera `codecs`; the committed path."""
    meta = episode.meta
    extra = dict(meta["extra"])
    extra.setdefault(TRANSCODED_FROM, {camera: codec.to_json() for camera, codec in episode.codecs.items()})
    metadata = EpisodeMetadata(task=meta["task"], robot_id=meta["robot_id"], control_rate_hz=meta["control_rate_hz"],
                               policy_version=meta["policy_version"], operator=meta["operator"],
                               episode_id=episode.episode_id, start_time=meta["start_time"], extra=extra)
    shutil.rmtree(target.staging_dir / episode.episode_id, ignore_errors=True)  # left by a killed transcode
    writer = target.writer(episode.layout, metadata, episode.chunk_steps, codecs)
    try:
        cameras = tuple(episode.layout.cameras)
        for start in range(0, episode.steps, episode.chunk_steps):
            stop = min(start + episode.chunk_steps, episode.steps)
            rows = {name: episode.array(name, start, stop) for name in episode.layout.arrays()}
            for i in range(stop - start):
                writer.append(Step(float(rows["timestamp"][i]), {c: rows[f"images/{c}"][i] for c in cameras},
                                   rows["state"][i], rows["action"][i], rows["policy_action"][i],
                                   bool(rows["intervention"][i]), bool(rows["held"][i])))
        # The recorded outcome, not the label's override (the label is copied beside it below).
        path = writer.commit(episode.attributes["outcome"], meta["end_reason"], truncated=meta["truncated"],
                             end_time=meta["end_time"])
    except BaseException:
        writer.discard()
        raise
    if (episode.path / LABELS).is_file():
        write_json_atomic(path / LABELS, json.loads((episode.path / LABELS).read_bytes()))
    return path


@dataclass
class TranscodeReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the target store
    failed: dict[str, str] = field(default_factory=dict)  # episode id -> why (damaged, refused)


def transcode_store(source: EpisodeStore, target: EpisodeStore, choices: dict[str | None, CameraCodec],
                    episode_ids: list[str] | None = None, skip_existing: bool = False) -> TranscodeReport:
    """Transcode `episode_ids` (default: every committed episode) of `source` into `target`.
    A damaged episode is reported and left out; the others are still written."""
    if source.root.resolve() == target.root.resolve():
        raise EpisodeError(f"{source.root}: transcode into another store; the source is never rewritten")
    report = TranscodeReport()
    wanted = episode_ids if episode_ids is not None else source.episode_ids()
    existing = set(target.episode_ids()) & set(wanted)
    if existing and not skip_existing:  # refused before anything is written
        raise EpisodeError(f"{target.root}: already holds episode(s) {sorted(existing)} (use --skip-existing)")
    for episode_id in wanted:
        if episode_id in existing:
            report.skipped.append(episode_id)
            continue
        try:
            episode = source.open(episode_id)
            transcode_episode(episode, target, codecs_for(episode, choices))
        except EpisodeError as err:
            report.failed[episode_id] = str(err)
            continue
        report.written.append(episode_id)
    return report
