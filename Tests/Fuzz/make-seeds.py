#!/usr/bin/env python3
"""Writes the small seed corpora in corpus/<target>/ (valid inputs the fuzzer mutates).
Run from anywhere: python3 Tests/Fuzz/make-seeds.py. The formats are docs/protocol.md and docs/format.md."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def frame(op, body=b""):
    return struct.pack(">I", 1 + len(body)) + bytes([op]) + body

def append(records, buffered=False):
    body = bytes([1 if buffered else 0]) + struct.pack(">I", len(records))
    for r in records:
        body += struct.pack(">I", len(r)) + r
    return frame(0x01, body)

def replay(start, count, follow=False):
    return frame(0x02, struct.pack(">QQB", start, count, 1 if follow else 0))

SYNC, INFO, PROMOTE = frame(0x03), frame(0x04), frame(0x09)

def header(first, previous, log_id=bytes(range(0x10, 0x20)), version=2):
    h = b"WALDSEG\0" + struct.pack("<HHI", version, 64, 0) + log_id + struct.pack("<QQQI", first, previous, 0, 0)
    return h + struct.pack("<I", crc32c(h))

def record(lsn, payload, committed=None):
    """A version 2 frame (24-byte header with the committed LSN, default lsn - 1)."""
    body = struct.pack("<IQQ", len(payload), lsn, lsn - 1 if committed is None else committed) + payload
    return struct.pack("<I", crc32c(body)) + body

def record_v1(lsn, payload):
    """A version 1 frame (16-byte header), as logs written before format version 2 hold."""
    body = struct.pack("<IQ", len(payload), lsn) + payload
    return struct.pack("<I", crc32c(body)) + body

def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

binary = {
    "append": append([b"hello", b"abc"]),
    "append-buffered": append([b"x" * 40], buffered=True),
    "replay": replay(7, 2),
    "replay-follow": replay(0, 0, follow=True),
    "small-requests": SYNC + INFO + frame(0x05, b"hi") + frame(0x06, struct.pack(">Q", 100)) + PROMOTE,
    "feedback-auth": frame(0x07, struct.pack(">Q", 9)) + frame(0x08, b"s3cret"),
    "responses": frame(0x81, struct.pack(">QI", 7, 2)) + frame(0x82, struct.pack(">Q", 7) + b"hello")
        + frame(0x83, struct.pack(">Q", 9)) + frame(0x84, struct.pack(">Q", 8)) + frame(0x85, b'{"version":"0.1.0"}')
        + frame(0x86, b"hi") + frame(0x87, struct.pack(">Q", 65)) + frame(0x88) + frame(0x89, struct.pack(">Q", 9)),
    "error": frame(0xFF, b"\x00\x03LSN 1 is out of range"),
    "too-large": struct.pack(">I", 0x00FFFFFF) + b"\x01",
}
# Every u64 and u32 field at its edges: 0, 1, 2^32 - 1, 2^32, 2^32 + 1, 2^63, 2^64 - 2, 2^64 - 1.
EDGES = [0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 2, 2**64 - 1]
U32_EDGES = [0, 1, 2**31, 2**32 - 1]
binary["edge-lsns"] = b"".join(replay(v, v) + replay(v, 0, follow=True) + frame(0x06, struct.pack(">Q", v))
                               + frame(0x07, struct.pack(">Q", v)) for v in EDGES)
binary["edge-responses"] = b"".join(frame(0x81, struct.pack(">QI", v, c)) + frame(0x82, struct.pack(">Q", v) + b"r")
                                    + frame(0x83, struct.pack(">Q", v)) + frame(0x87, struct.pack(">Q", v))
                                    for v in EDGES for c in U32_EDGES[:2])
# APPEND whose count or record length claims more than the frame holds.
binary["edge-append-counts"] = b"".join(frame(0x01, bytes([0]) + struct.pack(">I", c) + struct.pack(">I", 1) + b"x")
                                        for c in U32_EDGES) + b"".join(
    frame(0x01, bytes([0]) + struct.pack(">II", 1, n) + b"xy") for n in U32_EDGES)
for name, data in binary.items():
    write("binary", name, data)

text = {
    "ping": b"PING\r\n",
    "append-replay": b"APPEND hello world\nAPPEND second\nREPLAY 1\nREPLAY 1 1\nREPLAY 0 5 FOLLOW\n",
    "commands": b"SYNC\ninfo\nTRUNCATE 100\nAUTH s3cret\nPROMOTE\nMETRICS\nQUIT\n",
    "bad": b"FROB\nREPLAY x\nSYNC now\nAPPEND\n",
    "edge-numbers": b"REPLAY 0 18446744073709551615 FOLLOW\nREPLAY 18446744073709551616\nTRUNCATE 4294967296\n"
        b"REPLAY 1 4294967295\nTRUNCATE 18446744073709551615\nREPLAY 000000000000000000000000000001\n",
}
for name, data in text.items():
    write("text", name, data)

records = record(1, b"one") + record(2, b"") + record(3, b"three")
recovery = {
    "raw-valid": b"\x00" + header(1, 0) + records,
    "raw-valid-v1": b"\x00" + header(1, 0, version=1) + record_v1(1, b"one") + record_v1(2, b"") + record_v1(3, b"three"),
    "raw-committed-says-durable-after-damage": b"\x00" + header(1, 0) + record(1, b"one", 0) + b"\x00" * 40
        + record(3, b"three", 2),
    "header-unsynced-tail": b"\x01" + record(1, b"one", 0) + record(2, b"two", 1) + record(3, b"three", 1) + record(4, b"four", 1),
    "header-records": b"\x01" + records,
    "header-records-zeros": b"\x01" + records + bytes(64),
    "header-torn-tail": b"\x01" + records + record(4, b"torn record")[:20],
    "header-damage-then-valid": b"\x01" + record(1, b"one") + b"\xff" * 16 + record(3, b"three"),
    "second-segment": b"\x02" + record(4, b"four") + record(5, b"five"),
}
for name, data in recovery.items():
    write("recovery", name, data)

session = {
    "binary-append-replay": append([b"hello", b"abc"]) + append([b"buffered"], buffered=True) + SYNC
        + replay(0, 3) + INFO + frame(0x05, b"hi") + frame(0x06, struct.pack(">Q", 1)),
    "binary-follow": append([b"a"]) + replay(0, 0, follow=True) + frame(0x07, struct.pack(">Q", 1)),
    "binary-bad-opcode": append([b"a"]) + frame(0x42, b"zz") + SYNC,
    "text-session": b"PING\nAPPEND hello world\nREPLAY 1 2\nSYNC\nINFO\nTRUNCATE 1\nQUIT\n",
    "text-follow": b"APPEND x\nREPLAY 0 0 FOLLOW\nPING\n",
    "bad-first-byte": b"\x7fhello\n",
}
# The same edges against the running server, in both encodings.
session["binary-edges"] = append([b"one"]) + b"".join(
    replay(v, 1) + replay(1, v) + frame(0x06, struct.pack(">Q", v)) + frame(0x07, struct.pack(">Q", v))
    + frame(0x05, b"edge") for v in EDGES)
session["binary-follow-edge"] = append([b"a"]) + replay(0, 2**64 - 1, follow=True) + frame(0x07, struct.pack(">Q", 2**64 - 1))
session["text-edges"] = b"APPEND one\n" + b"".join(
    b"REPLAY %d\nREPLAY 1 %d\nTRUNCATE %d\nPING\n" % (v, v, v) for v in EDGES) + (
    b"REPLAY 18446744073709551616\nREPLAY 1 99999999999999999999\nTRUNCATE 18446744073709551616\n"
    b"REPLAY 18446744073709551615 18446744073709551615 FOLLOW\n")
for name, data in session.items():
    write("session", name, data)

# RESP (docs/protocol.md, "RESP"): what redis-cli and redis-py send, and conditional appends.
def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

resp_seeds = {
    "xadd": resp("XADD", "wal", "*", "data", b"hello\x00\xff"),
    "xadd-explicit-id": resp("XADD", "wal", "NOMKSTREAM", "7-0", "data", "x") + resp("XADD", "wal", "8", "data", ""),
    "hello-auth": resp("HELLO", "3", "AUTH", "default", "s3cret") + resp("CLIENT", "SETNAME", "n") + resp("PING"),
    "ranges": resp("XRANGE", "wal", "-", "+", "COUNT", "10") + resp("XREVRANGE", "wal", "+", "(3-0"),
    "xread": resp("XREAD", "COUNT", "2", "BLOCK", "5", "STREAMS", "wal", "$"),
    "empty-and-split": b"*0\r\n" + resp("ECHO", "x" * 40)[:17],
}
for name, data in resp_seeds.items():
    write("resp", name, data)

write("binary", "append-expected-lsn",
      frame(0x01, bytes([2]) + struct.pack(">Q", 5) + struct.pack(">I", 1) + struct.pack(">I", 3) + b"abc"))
write("text", "appendat", b"APPENDAT 1 first\nAPPENDAT 1 again\nAPPENDAT x y\nAPPENDAT 18446744073709551615 z\n")

resp_sessions = {
    "resp-append-read": resp("HELLO", "3") + resp("XADD", "wal", "*", "data", "one") + resp("XADD", "wal", "*", "data", "two")
        + resp("XRANGE", "wal", "-", "+") + resp("XREVRANGE", "wal", "+", "-", "COUNT", "1") + resp("XLEN", "wal")
        + resp("XINFO", "STREAM", "wal") + resp("INFO") + resp("CONFIG", "GET", "*"),
    "resp-blocking": resp("XADD", "wal", "*", "data", "a") + resp("XREAD", "BLOCK", "20", "STREAMS", "wal", "$")
        + resp("WAIT", "1", "20") + resp("XREAD", "BLOCK", "0", "STREAMS", "wal", "$"),
    "resp-conditional": resp("XADD", "wal", "1-0", "data", "x") + resp("XADD", "wal", "99999-0", "data", "y")
        + resp("CLIENT", "WALD-DURABILITY", "buffered") + resp("XADD", "wal", "*", "data", "z") + resp("XTRIM", "wal", "MINID", "~", "2"),
    "resp-errors": resp("SET", "k", "v") + resp("XADD", "other", "*", "data", "x") + resp("XRANGE", "wal", "x", "y") + b"*1\r\n$abc\r\n",
}
for name, data in resp_sessions.items():
    write("session", name, data)
