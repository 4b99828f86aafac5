"""Write real rosbag2 bags for tests: sqlite3 (the rosbag2 schema + metadata.yaml) and MCAP
(`ros2` profile, `ros2msg` schemas, `cdr` channels), payloads serialized by rclpy."""
from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

import yaml
from mcap.writer import CompressionType, Writer
from rclpy.serialization import serialize_message

SHARE = Path(sys.prefix) / "share"


def type_name(msg) -> str:
    return f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"


def msg_definition(full_type: str) -> str:
    """The `ros2msg` schema text of a type: its .msg, then every nested type's after a ==== line,
    as rosbag2's MCAP storage writes it."""
    def text(name):  # name: pkg/Name
        package, base = name.split("/")
        return (SHARE / package / "msg" / f"{base}.msg").read_text()

    package, _, base = full_type.split("/")
    root = f"{package}/{base}"
    seen, order, todo = {root}, [], [root]
    while todo:
        current = todo.pop(0)
        for line in text(current).splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            kind = re.sub(r"\[.*\]$", "", line.split()[0])
            if "/" not in kind and kind[:1].isupper():  # same-package type, e.g. "Header" inside std_msgs
                kind = f"{current.split('/')[0]}/{kind}"
            if "/" in kind and kind not in seen:
                seen.add(kind)
                order.append(kind)
                todo.append(kind)
    parts = [text(root)] + [f"{'=' * 80}\nMSG: {name}\n{text(name)}" for name in order]
    return "\n".join(parts)


def _metadata(directory: Path, storage: str, files: list[str], messages) -> None:
    topics = {}
    for topic, msg, _ in messages:
        topics.setdefault(topic, [type_name(msg), 0])[1] += 1
    times = [t for _, _, t in messages]
    info = {"rosbag2_bagfile_information": {
        "version": 9, "storage_identifier": storage,
        "duration": {"nanoseconds": max(times) - min(times)},
        "starting_time": {"nanoseconds_since_epoch": min(times)},
        "message_count": len(messages),
        "topics_with_message_count": [
            {"topic_metadata": {"name": name, "type": kind, "serialization_format": "cdr",
                                "offered_qos_profiles": "", "type_description_hash": ""}, "message_count": count}
            for name, (kind, count) in topics.items()],
        "compression_format": "", "compression_mode": "",
        "relative_file_paths": files,
        "files": [{"path": f, "starting_time": {"nanoseconds_since_epoch": min(times)},
                   "duration": {"nanoseconds": max(times) - min(times)}, "message_count": len(messages)}
                  for f in files],
        "custom_data": None, "ros_distro": "kilted"}}
    (directory / "metadata.yaml").write_text(yaml.safe_dump(info, sort_keys=False))


def write_sqlite3_bag(directory: Path, messages: list[tuple[str, object, int]]) -> Path:
    """messages: (topic, ROS message, log time ns). Returns the bag directory."""
    directory.mkdir(parents=True)
    name = f"{directory.name}_0.db3"
    db = sqlite3.connect(directory / name)
    db.executescript("""
        CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
        CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
        CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                            serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL,
                            type_description_hash TEXT NOT NULL);
        CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL, encoding TEXT NOT NULL,
                                         encoded_message_definition TEXT NOT NULL,
                                         type_description_hash TEXT NOT NULL);
        CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                              data BLOB NOT NULL);
        CREATE INDEX timestamp_idx ON messages (timestamp ASC);
        INSERT INTO schema VALUES (4, 'kilted');
    """)
    ids, definitions = {}, set()
    for topic, msg, _ in messages:
        if topic not in ids:
            ids[topic] = len(ids) + 1
            db.execute("INSERT INTO topics VALUES (?, ?, ?, 'cdr', '', '')", (ids[topic], topic, type_name(msg)))
            if type_name(msg) not in definitions:
                definitions.add(type_name(msg))
                db.execute("INSERT INTO message_definitions (topic_type, encoding, encoded_message_definition, "
                           "type_description_hash) VALUES (?, 'ros2msg', ?, '')",
                           (type_name(msg), msg_definition(type_name(msg))))
    db.executemany("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
                   [(ids[topic], t, serialize_message(msg)) for topic, msg, t in messages])
    db.commit()
    db.close()
    _metadata(directory, "sqlite3", [name], messages)
    return directory


def write_mcap_bag(directory: Path, messages: list[tuple[str, object, int]], chunk_size: int = 64 * 1024) -> Path:
    """messages: (topic, ROS message, log time ns). Returns the bag directory."""
    directory.mkdir(parents=True)
    name = f"{directory.name}_0.mcap"
    with open(directory / name, "wb") as f:
        writer = Writer(f, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        writer.start(profile="ros2", library="robot_runtime tests")
        schemas, channels = {}, {}
        for topic, msg, t in messages:
            kind = type_name(msg)
            if kind not in schemas:
                schemas[kind] = writer.register_schema(kind, "ros2msg", msg_definition(kind).encode())
            if topic not in channels:
                channels[topic] = writer.register_channel(topic, "cdr", schemas[kind],
                                                          {"offered_qos_profiles": ""})
            writer.add_message(channels[topic], log_time=t, data=serialize_message(msg), publish_time=t)
        writer.finish()
    _metadata(directory, "mcap", [name], messages)
    return directory
