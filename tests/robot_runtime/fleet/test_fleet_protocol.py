"""The upload wire: every message round-trips, anything else is a ProtocolError that names the field."""
import hashlib
import json
import random
import re

import pytest
from fleet_world import write_episode

from robot_runtime.episode import LABELS, EpisodeStore
from robot_runtime.fleet.protocol import (
    Chunk,
    FileEntry,
    InstallReport,
    Labels,
    Offer,
    ProtocolError,
    ReleaseChunk,
    ReleaseFetch,
    ReleaseOffer,
    ReleasePoll,
    Reply,
    describe_episode,
    file_offsets,
    parse_release_answer,
    parse_reply,
    parse_request,
    segments,
)

FILES = (FileEntry("a/c/0", 5000, "a" * 64), FileEntry("commit.json", 300, "b" * 64))
DATA = b"\x00\x01" * 2000


def header(**fields) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def test_messages_round_trip():
    offer = Offer.build("r1-ep0", FILES, 4096)
    assert parse_request(offer.frames()) == offer and (offer.total_bytes, offer.chunks) == (5300, 2)
    assert offer.chunk_range(1) == (4096, 1204)
    chunk = Chunk("r1-ep0", 1, hashlib.sha256(DATA).hexdigest(), DATA)
    parsed = parse_request(chunk.frames())
    assert (parsed.index, parsed.sha256, bytes(parsed.data)) == (1, chunk.sha256, DATA)
    labels = Labels("r1-ep0", hashlib.sha256(b"{}").hexdigest(), b"{}")
    assert parse_request(labels.frames()) == labels
    reply = Reply("resume", "r1-ep0", next=3, window=4)
    assert parse_reply(reply.frames()) == reply


SHA = "c" * 64
OFFER = {"type": "offer", "episode_id": "e1", "content_sha256": SHA, "chunk_size": 65536,
         "files": [["commit.json", 1, SHA]]}


@pytest.mark.parametrize("frames, problem", [
    ([], "not 0 frames"),
    ([b"\xff\xfe"], "header: not JSON"),
    ([b"[" * 100000], "header: not JSON"),
    ([b"[1]"], "not a JSON object"),
    ([json.dumps({**OFFER, "v": 2}).encode()], "protocol version 2"),
    ([header(type=["offer"])], "not a request"),
    ([header(**{**OFFER, "extra": 1})], "expected exactly"),
    ([header(**OFFER), b"x"], "1 data frames, expected 0"),
    ([header(**{**OFFER, "episode_id": "../up"})], "episode_id '../up' is not allowed"),
    ([header(**{**OFFER, "chunk_size": 10})], "chunk_size: 10 is not an integer in"),
    ([header(**{**OFFER, "chunk_size": True})], "chunk_size: True is not an integer"),
    ([header(**{**OFFER, "files": [["../commit.json", 1, SHA]]})], "path '../commit.json'"),
    ([header(**{**OFFER, "files": [["commit.json", -1, SHA]]})], "size: -1"),
    ([header(**{**OFFER, "files": [["commit.json", 1, "z"]]})], "sha256: not a sha256"),
    ([header(**{**OFFER, "files": [["b", 1, SHA], ["a", 1, SHA], ["commit.json", 1, SHA]]})], "sorted"),
    ([header(**{**OFFER, "files": [["a", 1, SHA], ["a/b", 1, SHA], ["commit.json", 1, SHA]]})], "also a directory"),
    ([header(**{**OFFER, "files": [["commit.json", 1, SHA], ["labels.json", 1, SHA]]})], "not labels.json"),
    ([header(**{**OFFER, "files": [["x", 1, SHA]]})], "must hold commit.json"),
    ([header(**{**OFFER, "files": [[f"f{i}", 1, SHA] for i in range(70000)]})], "1 to 65536"),
    ([header(**OFFER)], "content_sha256: does not match"),
    ([header(type="chunk", episode_id="e1", index=0, sha256=SHA), b"data"], "does not match its sha256"),
    ([header(type="chunk", episode_id="e1", index=-1, sha256=SHA), b"data"], "index: -1"),
    ([header(type="chunk", episode_id="e1", index=0, sha256=SHA), b"x" * (17 << 20)], "chunk data: 17825792 bytes"),
    ([header(type="labels", episode_id="e1", sha256=SHA), b"x" * (65 << 10)], "labels data: 66560 bytes"),
    ([header(type="reply", status="ok", episode_id="", next=0, window=0, reason="", content_sha256="")],
     "status 'ok'"),
])
def test_malformed_messages_are_refused_naming_the_field(frames, problem):
    parse = parse_reply if frames and b'"reply"' in frames[0] else parse_request
    with pytest.raises(ProtocolError, match=re.escape(problem)):
        parse(frames)


def test_segments_cover_exactly_the_requested_range():
    rng = random.Random(5)
    for _ in range(200):
        sizes = [rng.choice([0, 1, rng.randint(0, 5000)]) for _ in range(rng.randint(1, 8))]
        files = tuple(FileEntry(f"f{i}", size, SHA) for i, size in enumerate(sizes))
        blobs = [rng.randbytes(f.size) for f in files]
        stream = b"".join(blobs)
        start = rng.randint(0, len(stream))
        length = rng.randint(0, len(stream) - start)
        pieces = [blobs[i][within:within + count] for i, within, count in
                  segments(files, file_offsets(files), start, length)]
        assert b"".join(pieces) == stream[start:start + length]


def test_an_episode_is_described_from_its_commit_record_labels_apart(tmp_path):
    store = EpisodeStore(tmp_path)
    path = write_episode(store, "r1-ep0")
    files = describe_episode(path)
    store.label("r1-ep0", "failure")
    (path / ".labels.json.tmp.partial").write_text("left by a crash")
    assert describe_episode(path) == files  # labels travel as updates; temporaries never
    names = [f.path for f in files]
    assert "commit.json" in names and "progress.json" in names and LABELS not in names
    assert sum(f.size for f in files) == sum(p.stat().st_size for p in path.rglob("*") if p.is_file()
                                             and p.name not in (LABELS, ".labels.json.tmp.partial"))
    assert Offer.build("r1-ep0", files, 4096).content_sha256 == Offer.build("r1-ep0", files, 1 << 20).content_sha256


# -- fuzz: 10,000 mutated frame lists per parser; a typed message or a ProtocolError, nothing else --------------
FUZZ_PER_PARSER = 10_000
FUZZ_VALUES = [None, True, False, 0, -1, 7, 2 ** 63, 10 ** 400, 2.5, float("nan"), "", "x", "../x", "a/../../b",
               "c" * 64, "C" * 64, "é\u0000", [], [1], [["commit.json", 1, SHA]], [["../x", 1, SHA]], {}, {"v": 1}]
REQUESTS = [Offer.build("r1-ep0", FILES, 4096), Chunk("r1-ep0", 1, hashlib.sha256(DATA).hexdigest(), DATA),
            Labels("r1-ep0", hashlib.sha256(b"{}").hexdigest(), b"{}"), ReleasePoll("v1", 3),
            ReleaseFetch(SHA, 2), InstallReport("release-0003", 3, False, "signature", "bad key", "v1")]
ANSWERS = [ReleaseOffer.build("release-0003", 3, FILES, 4096),
           ReleaseChunk(SHA, 0, hashlib.sha256(DATA).hexdigest(), DATA), Reply("refused", "", reason="no")]
REPLIES = [Reply("resume", "r1-ep0", next=3, window=4), Reply("stored", "r1-ep0", content_sha256=SHA),
           Reply("refused", "r1-ep0", reason="corrupt")]


def _mutate_frames(message, rng: random.Random) -> list[bytes]:
    frames = [bytes(f) for f in message.frames()]
    header = json.loads(frames[0])
    kind = rng.randrange(6)
    if kind == 0:
        header[rng.choice(sorted(header))] = rng.choice(FUZZ_VALUES)
    elif kind == 1:
        del header[rng.choice(sorted(header))]
    elif kind == 2:
        header[rng.choice(["extra", "type", "v", "files", "data"])] = rng.choice(FUZZ_VALUES)
    frames[0] = json.dumps(header).encode()
    if kind == 3:  # bytes of the header or a data frame changed
        i = rng.randrange(len(frames))
        data = bytearray(frames[i] or b"\x00")
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        frames[i] = bytes(data)
    elif kind == 4:  # a frame cut short, added or removed
        i = rng.randrange(len(frames))
        frames[i] = frames[i][: rng.randrange(len(frames[i]) + 1)]
        frames = rng.choice([frames, frames + [b"extra"], frames[:-1]])
    elif kind == 5:  # a raw token for a value
        frames[0] = re.sub(rb'": ("[^"]*"|[-0-9.]+|true|false)', lambda m: b'": ' + rng.choice(
            [b"NaN", b"1e999", b"[" * 40, b"-", b'"\\ud800"', m.group(1)]), frames[0], count=1)
    return frames


@pytest.mark.parametrize("parse, messages", [(parse_request, REQUESTS), (parse_reply, REPLIES),
                                             (parse_release_answer, ANSWERS)], ids=lambda p: getattr(p, "__name__", ""))
def test_fuzzed_frames_give_a_typed_message_or_a_protocol_error(parse, messages):
    rng = random.Random(parse.__name__)
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(FUZZ_PER_PARSER):
        frames = _mutate_frames(messages[i % len(messages)], rng)
        try:
            parsed = parse(frames)
        except ProtocolError:
            outcomes["refused"] += 1
            continue
        assert parse([bytes(f) for f in parsed.frames()]) == parsed, frames  # accepted means well-formed
        outcomes["parsed"] += 1
    print(f"{parse.__name__}: {FUZZ_PER_PARSER} fuzzed, {outcomes}")
    assert outcomes["parsed"] > FUZZ_PER_PARSER // 50 and outcomes["refused"] > FUZZ_PER_PARSER // 3, outcomes
