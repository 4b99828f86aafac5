"""10,000 seeded fuzzed messages from an allowlisted key, oversized frames and raw TCP garbage at the ingest
server process: every message is answered or dropped, nothing crashes, memory stays bounded, and a good
robot is served afterwards."""
import hashlib
import json
import random
import socket

import zmq
from fleet_world import ServerProcess, free_port, make_keys, uploader, write_episode

from robot_runtime.episode import EpisodeStore
from robot_runtime.fleet.keys import load_curve_keys
from robot_runtime.fleet.protocol import MAX_HEADER_BYTES, PROTOCOL_VERSION, Chunk, FileEntry, Offer

RSS_BOUND_KIB = 64 << 10  # growth allowed after 10,000 messages: offers held (one per robot) and allocator slack
ODD = [None, -1, 0, 2**63, 1e308, float("nan"), "", "x" * 5000, [], {}, True, "../../etc/passwd", "a/" * 20,
       "é\u202e", [[["deep"]]], {"v": 1}]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_upload(rng: random.Random, n: int) -> list[list[bytes]]:
    """A well-formed offer for a junk 'episode', then all its chunks with correct hashes: refused at the end."""
    blobs = {f"f{i}/c/{i}": rng.randbytes(rng.randint(0, 3000)) for i in range(rng.randint(1, 6))}
    blobs["commit.json"] = json.dumps({"schema_version": rng.choice([1, 2, 3]), "steps": rng.randint(0, 9),
                                       "episode_id": f"junk{n}", "committed_at": 1.0}).encode()
    files = tuple(FileEntry(p, len(b), sha(b)) for p, b in sorted(blobs.items()))
    offer = Offer.build(f"junk{n}", files, 4 << 10)
    stream = b"".join(blobs[f.path] for f in files)
    chunks = [Chunk(offer.episode_id, i, sha(stream[i * 4096:(i + 1) * 4096]), stream[i * 4096:(i + 1) * 4096])
              for i in range(offer.chunks)]
    return [offer.frames()] + [c.frames() for c in chunks]


def mutated(rng: random.Random, n: int) -> list[bytes]:
    """A valid message of some type with one field removed, added, or replaced by something odd."""
    data = rng.randbytes(rng.randint(1, 200))
    templates = [
        {"v": 1, "type": "offer", "episode_id": f"e{n}", "content_sha256": "0" * 64, "chunk_size": 65536,
         "files": [["commit.json", 10, "0" * 64]]},
        {"v": 1, "type": "chunk", "episode_id": f"e{n}", "index": rng.randint(0, 5), "sha256": sha(data)},
        {"v": 1, "type": "labels", "episode_id": "r1-ep0", "sha256": sha(data)},
        {"v": 1, "type": "reply", "status": "stored", "episode_id": "", "next": 0, "window": 0, "reason": "",
         "content_sha256": ""},
    ]
    header = rng.choice(templates)
    key = rng.choice(list(header))
    action = rng.random()
    if action < 0.2:
        del header[key]
    elif action < 0.3:
        header[f"extra{n % 7}"] = rng.choice(ODD)
    else:
        header[key] = rng.choice(ODD)
    frames = [json.dumps(header).encode()]
    return frames + [data] * rng.choice([0, 1, 1, 1, 2, 5])


def random_json(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth > 4 or pick < 0.4:
        return rng.choice(ODD[:12])
    if pick < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["v", "type", "files", "x"]): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def messages(rng: random.Random, count: int):
    n = 0
    while n < count:
        kind = rng.random()
        if kind < 0.005:
            batch = fake_upload(rng, n)
        elif kind < 0.0055:
            files = [[f"d{i}/f", 1 << 20, "1" * 64] for i in range(60000)]  # a huge but valid-looking table
            batch = [[json.dumps({"v": PROTOCOL_VERSION, "type": "offer", "episode_id": f"big{n}",
                                  "content_sha256": "0" * 64, "chunk_size": 1 << 20, "files": files}).encode()]]
        elif kind < 0.35:
            batch = [mutated(rng, n)]
        elif kind < 0.55:
            batch = [[json.dumps(random_json(rng)).encode()]]
        elif kind < 0.6:
            batch = [[b"[" * rng.randint(1000, 200000)]]
        elif kind < 0.65:
            batch = [[json.dumps({"v": 1, "type": "chunk"}).encode()] * rng.randint(3, 8)]
        else:
            batch = [[rng.randbytes(rng.randint(0, 2000)) for _ in range(rng.randint(1, 3))]]
        for frames in batch[: count - n]:
            yield frames
            n += 1


def fuzz(endpoint: str, keyfile, server_public, count: int, seed: int) -> int:
    """Send `count` messages as an allowlisted robot; returns how many replies came back."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey = load_curve_keys(keyfile)
    sock.curve_serverkey = server_public
    sock.linger = 0
    sock.connect(endpoint)
    replies = outstanding = 0
    for frames in messages(random.Random(seed), count):
        sock.send_multipart(frames)
        outstanding += 1
        while outstanding > 50 or (outstanding and sock.poll(0)):
            if not sock.poll(10000):
                raise AssertionError(f"the server stopped answering after {replies} replies")
            sock.recv_multipart()
            replies += 1
            outstanding -= 1
    while outstanding and sock.poll(10000):
        sock.recv_multipart()
        replies += 1
        outstanding -= 1
    context.destroy(linger=0)
    return replies


def oversized(endpoint: str, keyfile, server_public, count: int) -> None:
    """Frames above the server's ZMQ_MAXMSGSIZE: libzmq drops the connection before allocating them."""
    context = zmq.Context()
    for _ in range(count):
        sock = context.socket(zmq.DEALER)
        sock.curve_publickey, sock.curve_secretkey = load_curve_keys(keyfile)
        sock.curve_serverkey = server_public
        sock.connect(endpoint)
        sock.send_multipart([b"{}", b"\0" * (MAX_HEADER_BYTES + (1 << 20))])
        assert not sock.poll(100)  # no answer: the connection was dropped
        sock.close(linger=0)
    context.destroy(linger=0)


def garbage(port: int, rng: random.Random, count: int) -> None:
    """Raw TCP: random bytes where a ZMTP greeting and a CURVE handshake belong."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(rng.randbytes(rng.randint(1, 4000)))


def test_fuzzed_and_oversized_messages_neither_crash_nor_grow_the_server(tmp_path):
    made = make_keys(tmp_path, robots=("r1", "fuzzer"))
    port = free_port()
    server = ServerProcess(tmp_path / "fleet", made, port, tmp_path / "server.log").start()
    robot = EpisodeStore(tmp_path / "robot")
    write_episode(robot, "r1-ep0", seed=1)
    try:
        good = uploader(robot, made, "r1", server.endpoint)
        assert good.sync() == 1
        server_public = load_curve_keys(made.server_public)[0]
        fuzz(server.endpoint, made.robot("fuzzer"), server_public, 300, seed=1)  # warm up the allocator
        before = server.rss_kib()
        replies = fuzz(server.endpoint, made.robot("fuzzer"), server_public, 10_000, seed=2)
        oversized(server.endpoint, made.robot("fuzzer"), server_public, 20)
        garbage(port, random.Random(4), 200)
        after = server.rss_kib()
        write_episode(robot, "r1-ep1", seed=2)
        assert good.sync() == 1  # still serves a good robot
        good.stop()
        assert server.process.poll() is None
    finally:
        server.stop()
    print(f"fuzz: {replies} replies to 10,000 messages, RSS {before} -> {after} KiB")
    assert replies == 10_000
    assert after - before < RSS_BOUND_KIB
    log = (tmp_path / "server.log").read_text()
    assert "malformed message from fuzzer" in log and "Traceback" not in log
    assert EpisodeStore(tmp_path / "fleet").episode_ids() == ["r1-ep0", "r1-ep1"]
