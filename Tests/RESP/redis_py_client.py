#!/usr/bin/env python3
"""wald through redis-py, a client nobody here wrote: appends, reads, follows, auth, WAIT,
READONLY, binary payloads across protocols, and conditional appends racing. Run by
RESPClientTests (Tests/WaldEndToEndTests) against real wald processes on loopback:

    redis_py_client.py --port P --follower-port F --auth-port A --token T --protocol 2|3

Prints one line per check and exits non-zero at the first failure (with the traceback)."""
import argparse
import socket
import struct
import sys
import threading
import time

import redis

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--follower-port", type=int, required=True)
parser.add_argument("--auth-port", type=int, required=True)
parser.add_argument("--token", required=True)
parser.add_argument("--protocol", type=int, choices=[0, 2, 3], required=True,
                    help="2 or 3; 0 = redis-py's own default (whatever it sends on connect)")
args = parser.parse_args()


requested = args.protocol
# With 0, redis-py's own default (RESP3 in current releases, which send HELLO 3 on connect).
args.protocol = requested or getattr(redis.connection, "DEFAULT_RESP_VERSION", 2)


def client(port, **kwargs):
    if requested:
        kwargs["protocol"] = requested
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=30, **kwargs)


def check(name):
    print(f"ok  {name} (RESP{args.protocol}{'' if requested else ', redis-py default'})", flush=True)


def lsn(entry_id):
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    major, minor = text.split("-")
    assert minor == "0", text
    return int(major)


r = client(args.port)
assert r.ping() is True
assert r.echo(b"hi") == b"hi"
assert r.client_setname("redis-py-test") is True
assert r.client_getname() in (b"redis-py-test", "redis-py-test")
check("connect, PING, ECHO, CLIENT SETNAME/GETNAME")

first = lsn(r.xadd("wal", {"data": b"first record"}))
with r.pipeline(transaction=False) as pipe:
    for i in range(100):
        pipe.xadd("wal", {"data": f"pipelined {i}".encode()})
    ids = [lsn(x) for x in pipe.execute()]
assert ids == list(range(first + 1, first + 101)), ids[:5]
assert r.xlen("wal") >= first + 100
check("XADD single and 100 pipelined: consecutive IDs")

entries = r.xrange("wal", min=f"{first}-0", max=f"{first + 100}-0")
assert [lsn(i) for i, _ in entries] == list(range(first, first + 101))
assert entries[0][1] == {b"data": b"first record"}, entries[0]
assert entries[5][1] == {b"data": b"pipelined 4"}
assert r.xrange("wal", min=f"({first}", max=f"{first + 2}", count=1)[0][0] in (f"{first + 1}-0".encode(), f"{first + 1}-0")
back = r.xrevrange("wal", max=f"{first + 100}-0", min=f"{first}-0", count=3)
assert [lsn(i) for i, _ in back] == [first + 100, first + 99, first + 98]
check("XRANGE / XREVRANGE with bounds, exclusive start and COUNT")

every_byte = bytes(range(256)) * 3
binary = lsn(r.xadd("wal", {"data": every_byte}))
assert r.xrange("wal", min=binary, max=binary)[0][1][b"data"] == every_byte
# The same record through the binary protocol: REPLAY from it, count 1.
with socket.create_connection(("127.0.0.1", args.port)) as s:
    s.sendall(struct.pack(">IB", 18, 0x02) + struct.pack(">QQB", binary, 1, 0))
    buffer = b""
    while len(buffer) < 4 or len(buffer) < 4 + struct.unpack(">I", buffer[:4])[0]:
        buffer += s.recv(65536)
    length, opcode, got = struct.unpack(">IBQ", buffer[:13])
    assert opcode == 0x82 and got == binary and buffer[13:4 + length] == every_byte
    # And the other way: a binary APPEND of every byte value, read back with XRANGE.
    record = bytes(reversed(every_byte))
    body = struct.pack(">BI", 0, 1) + struct.pack(">I", len(record)) + record
    s.sendall(struct.pack(">IB", 1 + len(body), 0x01) + body)
    buffer = buffer[4 + length:]
    while True:
        if len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack(">I", buffer[:4])[0]:
            length, opcode = struct.unpack(">IB", buffer[:5])
            if opcode == 0x81:
                break
            buffer = buffer[4 + length:]
            continue
        buffer += s.recv(65536)
    appended = struct.unpack(">Q", buffer[5:13])[0]
assert r.xrange("wal", min=appended, max=appended)[0][1][b"data"] == record
# And through the text protocol: REPLAY prints the bytes as they are.
with socket.create_connection(("127.0.0.1", args.port)) as s:
    s.sendall(f"REPLAY {binary} 1\n".encode())
    text = b""
    while not text.endswith(b"END %d\r\n" % (binary + 1)):
        text += s.recv(65536)
    assert text.startswith(b"RECORD %d %d\r\n" % (binary, len(every_byte)) + every_byte + b"\r\n"), text[:40]
check("every byte value, byte-identical through RESP, binary and text")

done = threading.Event()


def append_later():
    time.sleep(0.3)
    client(args.port).xadd("wal", {"data": b"while blocked"})
    done.set()


threading.Thread(target=append_later).start()
started = time.monotonic()
answer = r.xread({"wal": "$"}, block=10000, count=10)
elapsed = time.monotonic() - started
done.wait(10)
if isinstance(answer, dict):
    # RESP3: a map {stream: entries}; redis-py may wrap the entries in one more list.
    assert args.protocol == 3, answer
    entries = answer[b"wal"] if b"wal" in answer else answer["wal"]
    if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], (list, tuple)):
        entries = entries[0]
else:
    # RESP2's [[stream, entries]], or the shape redis-py gives RESP3 replies when it keeps
    # its legacy response shapes (its default when no protocol is asked for).
    assert answer[0][0] in (b"wal", "wal"), answer
    entries = answer[0][1]
assert [e[1] for e in entries] == [{b"data": b"while blocked"}], answer
assert 0.2 < elapsed < 5, elapsed
assert r.xread({"wal": "$"}, block=200) in (None, {}, [])
assert r.xread({"wal": "0"}, count=2) is not None
check("XREAD BLOCK answered by an append from another client; XREAD BLOCK times out with null")

assert r.execute_command("CLIENT", "WALD-DURABILITY", "buffered") in (b"OK", "OK", True)
buffered = lsn(r.xadd("wal", {"data": b"buffered"}))
assert r.execute_command("CLIENT", "WALD-DURABILITY", "durable") in (b"OK", "OK", True)
assert lsn(r.xadd("wal", {"data": b"durable again"})) == buffered + 1
check("CLIENT WALD-DURABILITY buffered|durable")

try:
    r.xadd("other", {"data": b"x"})
    raise AssertionError("XADD to another key was accepted")
except redis.exceptions.ResponseError as error:
    assert "'wal'" in str(error), error
try:
    r.xadd("wal", {"a": b"1", "b": b"2"})
    raise AssertionError("XADD with two fields was accepted")
except redis.exceptions.ResponseError as error:
    assert "data" in str(error), error
try:
    r.execute_command("FROBNICATE", "x")
    raise AssertionError("unknown command accepted")
except redis.exceptions.ResponseError as error:
    assert str(error).startswith("unknown command 'FROBNICATE', with args beginning with: 'x'"), error
assert r.ping() is True  # the connection stayed open
check("errors: another key, other fields, unknown command (Redis's words); the connection stays open")

info = r.xinfo_stream("wal")
last = lsn(info["last-generated-id"] if "last-generated-id" in info else info[b"last-generated-id"])
assert r.xadd("wal", {"data": b"exact"}, id=f"{last + 1}-0") in (f"{last + 1}-0".encode(), f"{last + 1}-0")
for stale in (f"{last + 1}-0", f"{last}"):
    try:
        r.xadd("wal", {"data": b"again"}, id=stale)
        raise AssertionError(f"XADD with ID {stale} at or below the top was accepted")
    except redis.exceptions.ResponseError as error:
        assert "equal or smaller than the target stream top item" in str(error), error
try:
    r.xadd("wal", {"data": b"gap"}, id=f"{last + 5}-0")
    raise AssertionError("XADD beyond the next LSN was accepted")
except redis.exceptions.ResponseError as error:
    assert f"{last + 2}-0" in str(error), error
check("XADD with an explicit ID: the next LSN only")

winners = {}
lock = threading.Lock()


def racer(n):
    c = client(args.port)
    for _ in range(30):
        info = c.xinfo_stream("wal")
        top = lsn(info["last-generated-id"] if "last-generated-id" in info else info[b"last-generated-id"])
        try:
            got = lsn(c.xadd("wal", {"data": f"racer {n} at {top + 1}".encode()}, id=f"{top + 1}-0"))
            with lock:
                assert got not in winners, f"LSN {got} won twice"
                winners[got] = f"racer {n} at {top + 1}".encode()
        except redis.exceptions.ResponseError:
            pass


threads = [threading.Thread(target=racer, args=(n,)) for n in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert winners, "nobody won"
for lsn_, payload in winners.items():
    assert r.xrange("wal", min=lsn_, max=lsn_)[0][1][b"data"] == payload
check(f"conditional appends from 6 racing clients: {len(winners)} LSNs, exactly one winner each")

assert r.execute_command("WAIT", 1, 5000) == 1
follower = client(args.follower_port)
try:
    follower.xadd("wal", {"data": b"not here"})
    raise AssertionError("a follower accepted XADD")
except redis.exceptions.ReadOnlyError as error:
    assert str(args.port) in str(error), error
deadline = time.monotonic() + 10
while time.monotonic() < deadline and follower.xlen("wal") < r.xlen("wal"):
    time.sleep(0.05)
assert follower.xrange("wal", min=binary, max=binary)[0][1][b"data"] == every_byte
check("WAIT 1 with a follower; READONLY from the follower, which has the same records")

locked = redis.Redis(host="127.0.0.1", port=args.auth_port, protocol=2, socket_timeout=30)  # RESP2: no HELLO before AUTH
try:
    locked.xadd("wal", {"data": b"x"})
    raise AssertionError("XADD without AUTH was accepted")
except redis.exceptions.AuthenticationError:
    pass
except redis.exceptions.ResponseError as error:
    assert "NOAUTH" in str(error) or "Authentication required" in str(error), error
authed = client(args.auth_port, password=args.token)
assert lsn(authed.xadd("wal", {"data": b"with a token"})) >= 1
try:
    client(args.auth_port, password="wrong").ping()
    raise AssertionError("a wrong token was accepted")
except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
    pass
check("AUTH: refused without, accepted with the token, refused with a wrong one")

trimmed = r.xtrim("wal", minid=f"{first}", approximate=True)
assert isinstance(trimmed, int) and trimmed >= 0
try:
    r.xtrim("wal", minid=f"{first}", approximate=False)
    raise AssertionError("XTRIM = was accepted")
except redis.exceptions.ResponseError as error:
    assert "whole segments" in str(error), error
assert "redis_version" in r.info()
assert r.dbsize() == 1
check("XTRIM MINID ~, INFO, DBSIZE")
print("all checks passed")
