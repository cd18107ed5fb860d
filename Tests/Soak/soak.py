#!/usr/bin/env python3
"""Chaos soak for wald: a primary with two followers (one cascading from the other) under
64 appending clients, replay and follow readers and random truncations, while a fault is
injected every few seconds (SIGKILL + restart, SIGSTOP/SIGCONT, a client that stops reading,
a connection cut mid-frame). An independent ledger keeps every acknowledged (LSN,
sha256(payload)); at the end the load stops, the followers catch up, and every node is
verified against the ledger. Then a disk-full phase runs a separate wald on a 64 MiB
filesystem until NO_SPACE, checks nothing acknowledged was lost, truncates and appends again.

Standard library only. Talks only to 127.0.0.1; every process it starts is stopped by PID.
The last line is `soak: acked=N verified=N lost=0 duplicates=0 gaps=0 faults=N
rss_start_kib=N rss_end_kib=N`; the exit status is non-zero when anything was lost,
duplicated, missing or corrupt.
"""
import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"

# Binary protocol (docs/protocol.md): frame = length:u32 opcode:u8 body, big-endian.
OP_APPEND, OP_REPLAY, OP_SYNC, OP_INFO, OP_PING, OP_TRUNCATE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
R_APPENDED, R_RECORD, R_END, R_SYNCED, R_INFO, R_PONG, R_TRUNCATED, R_ERROR = (
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0xFF)
ERROR_NAMES = {1: "BAD_REQUEST", 2: "TOO_LARGE", 3: "OUT_OF_RANGE", 4: "READ_ONLY",
               5: "UNAVAILABLE", 6: "NO_SPACE", 7: "UNAUTHORIZED", 8: "BUSY"}
NO_SPACE = 6
MAX_FRAME = 0x00FFFFFF
DIGEST_BYTES = 16  # truncated sha256 kept per LSN; collisions are not a concern at 128 bits


def digest(payload):
    return hashlib.sha256(payload).digest()[:DIGEST_BYTES]


def frame(opcode, body=b""):
    return struct.pack(">IB", 1 + len(body), opcode) + body


def append_body(records, buffered=False):
    parts = [struct.pack(">BI", 1 if buffered else 0, len(records))]
    for r in records:
        parts.append(struct.pack(">I", len(r)))
        parts.append(r)
    return b"".join(parts)


def replay_body(from_lsn, count=0, follow=False):
    return struct.pack(">QQB", from_lsn, count, 1 if follow else 0)


class ServerError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{ERROR_NAMES.get(code, code)}: {message}")
        self.code = code
        self.name = ERROR_NAMES.get(code, f"CODE_{code}")


class ProtocolViolation(Exception):
    pass


class Conn:
    """One binary-protocol connection (asyncio)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port, timeout=5.0):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, limit=1 << 24), timeout)
        return cls(reader, writer)

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self):
        header = await self.reader.readexactly(4)
        (length,) = struct.unpack(">I", header)
        if length < 1 or length > MAX_FRAME:
            raise ProtocolViolation(f"frame length {length}")
        data = await self.reader.readexactly(length)
        return data[0], data[1:]

    async def request(self, opcode, body=b"", timeout=30.0):
        await asyncio.wait_for(self.send(frame(opcode, body)), timeout)
        op, body = await asyncio.wait_for(self.read_frame(), timeout)
        if op == R_ERROR:
            (code,) = struct.unpack(">H", body[:2])
            raise ServerError(code, body[2:].decode("utf-8", "replace"))
        return op, body

    async def info(self, timeout=10.0):
        op, body = await self.request(OP_INFO, timeout=timeout)
        if op != R_INFO:
            raise ProtocolViolation(f"INFO answered with opcode {op:#x}")
        return json.loads(body.decode())

    def close(self):
        try:
            self.writer.transport.abort()
        except Exception:
            pass


class Ledger:
    """Every acknowledged (LSN, digest), in flat arrays indexed by LSN (LSNs are dense)."""

    def __init__(self):
        self.digests = bytearray()
        self.acked = bytearray()
        self.count = 0
        self.conflicts = 0
        self.uncertain = set()  # digests of appends whose outcome is unknown (error, cut, timeout)
        self.attempted_nonempty = 0

    def _grow(self, lsn):
        if lsn >= len(self.acked):
            extra = max(lsn + 1 - len(self.acked), 65536)
            self.acked.extend(b"\0" * extra)
            self.digests.extend(b"\0" * (extra * DIGEST_BYTES))

    def ack(self, lsn, d):
        self._grow(lsn)
        at = lsn * DIGEST_BYTES
        if self.acked[lsn]:
            if bytes(self.digests[at:at + DIGEST_BYTES]) != d:
                self.conflicts += 1  # one LSN acknowledged for two different payloads
            return
        self.acked[lsn] = 1
        self.digests[at:at + DIGEST_BYTES] = d
        self.count += 1

    def get(self, lsn):
        if lsn < len(self.acked) and self.acked[lsn]:
            at = lsn * DIGEST_BYTES
            return bytes(self.digests[at:at + DIGEST_BYTES])
        return None

    def max_lsn(self):
        return len(self.acked) - 1


class Stats:
    def __init__(self):
        self.errors = collections.Counter()  # by server error code name or client-side kind
        self.faults = collections.Counter()
        self.read_records = 0
        self.read_mismatches = 0  # a reader saw an acked LSN with another payload
        self.read_gaps = 0  # a reader saw LSNs that are not dense
        self.truncations = 0
        self.appended_batches = 0
        self.rss = []  # (time, incarnation, kib)

    def error(self, kind):
        self.errors[kind] += 1


def classify(exc):
    if isinstance(exc, ServerError):
        return exc.name
    if isinstance(exc, asyncio.TimeoutError):
        return "client:timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "client:eof"
    if isinstance(exc, ConnectionRefusedError):
        return "client:refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "client:reset"
    if isinstance(exc, ProtocolViolation):
        return "client:protocol"
    if isinstance(exc, OSError):
        return f"client:oserror:{exc.errno}"
    return "client:" + type(exc).__name__


# ---------------------------------------------------------------------------------------------
# wald processes


class Node:
    """One wald process: same data dir and port across restarts; stopped only by its PID."""

    def __init__(self, name, wald, data_dir, log_path, extra=(), port=0):
        self.name, self.wald, self.data_dir, self.log_path = name, wald, data_dir, log_path
        self.extra = list(extra)
        self.port = port
        self.proc = None
        self.incarnation = 0
        self.stopped = False  # SIGSTOPped
        self.last_durable = 0  # last durable LSN seen in INFO (a safe truncation bound)
        self.max_truncate = 1  # highest TRUNCATE point ever sent

    def start(self, timeout=60.0):
        for attempt in range(20):
            log = open(self.log_path, "ab")
            # Every client, reader, follower and verifier comes from 127.0.0.1: more than the
            # default max_connections_per_address (64), which is meant for many hosts.
            args = [self.wald, "--listen", f"{HOST}:{self.port}", "--data-dir", self.data_dir,
                    "--max-connections-per-address", "1024"] + self.extra
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                    start_new_session=True)
            log.close()
            line = read_line(proc.stdout, timeout)
            if line.startswith("ready "):
                addr = line.split()[1]
                self.port = int(addr.rsplit(":", 1)[1])
                self.proc = proc
                self.incarnation += 1
                self.stopped = False
                threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
                return
            # Not ready: most likely the port is briefly unavailable after a kill. Retry.
            kill_and_reap(proc)
            time.sleep(0.25 + 0.25 * attempt)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.proc:
            kill_and_reap(self.proc)
            self.stopped = False

    def sigstop(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.stopped = True

    def sigcont(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def terminate(self, timeout=30.0):
        """SIGTERM (clean shutdown); returns the exit status (None when it had to be killed)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.sigcont()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_and_reap(self.proc)
            return None

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, AttributeError):
            pass
        return None


def read_line(pipe, timeout):
    deadline = time.monotonic() + timeout
    data = b""
    fd = pipe.fileno()
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def drain(pipe):
    try:
        while pipe.read(65536):
            pass
    except Exception:
        pass


def kill_and_reap(proc):
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------------------------------------
# load


async def node_info(node):
    """INFO from `node` on a connection of its own."""
    conn = await Conn.open(node.port)
    try:
        return await conn.info()
    finally:
        conn.close()


class Soak:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.ledger = Ledger()
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.pause_faults = False
        segment = ["--max-segment-bytes", args.segment_bytes, "--log-level", "notice"]
        self.primary = Node("primary", args.wald, os.path.join(work, "primary"),
                            os.path.join(work, "primary.log"),
                            segment + ["--min-sync-replicas", str(args.min_sync_replicas)])
        self.followers = []
        self.nodes = [self.primary]

    def start_nodes(self):
        self.primary.start()
        f1 = Node("follower1", self.args.wald, os.path.join(self.work, "follower1"),
                  os.path.join(self.work, "follower1.log"),
                  ["--follow", f"{HOST}:{self.primary.port}", "--max-segment-bytes", self.args.segment_bytes,
                   "--log-level", "notice"])
        f1.start()
        f2 = Node("follower2", self.args.wald, os.path.join(self.work, "follower2"),
                  os.path.join(self.work, "follower2.log"),
                  ["--follow", f"{HOST}:{f1.port}", "--max-segment-bytes", self.args.segment_bytes,
                   "--log-level", "notice"])
        f2.start()
        self.followers = [f1, f2]
        self.nodes = [self.primary, f1, f2]

    # -- appenders --------------------------------------------------------------------------

    async def appender(self, index):
        rng = random.Random(self.rng.getrandbits(64))
        conn = None
        backoff = 0.05
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn = await Conn.open(self.primary.port)
                    backoff = 0.05
                except Exception as exc:
                    self.stats.error("append:" + classify(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
            count = 1 if rng.random() < 0.8 else rng.randint(2, 4)
            records = [rng.randbytes(rng.randint(0, 4096)) for _ in range(count)]
            digests = [digest(r) for r in records]
            try:
                op, body = await conn.request(OP_APPEND, append_body(records), timeout=30.0)
                if op != R_APPENDED or len(body) != 12:
                    raise ProtocolViolation(f"APPEND answered with opcode {op:#x}")
                first, n = struct.unpack(">QI", body)
                if n != count or first == 0:
                    raise ProtocolViolation(f"APPENDED first={first} count={n} for {count} records")
                for i, d in enumerate(digests):
                    self.ledger.ack(first + i, d)
                self.stats.appended_batches += 1
            except ServerError as exc:
                self.stats.error("append:" + exc.name)
                self.ledger.uncertain.update(digests)  # e.g. UNAVAILABLE after the write
                await asyncio.sleep(0.05)
            except Exception as exc:
                self.stats.error("append:" + classify(exc))
                self.ledger.uncertain.update(digests)
                conn.close()
                conn = None
        if conn:
            conn.close()

    # -- readers ----------------------------------------------------------------------------

    def check_record(self, lsn, payload):
        self.stats.read_records += 1
        expected = self.ledger.get(lsn)
        if expected is not None and expected != digest(payload):
            self.stats.read_mismatches += 1

    async def replay_reader(self, index):
        rng = random.Random(self.rng.getrandbits(64))
        while not self.stop.is_set():
            node = rng.choice(self.nodes)
            conn = None
            try:
                conn = await Conn.open(node.port)
                info = await conn.info()
                first, last = info["first_lsn"], info["durable_lsn"]
                if last < first:
                    await asyncio.sleep(0.2)
                    continue
                start = rng.randint(first, last)
                count = rng.randint(1, 500)
                await conn.send(frame(OP_REPLAY, replay_body(start, count)))
                expected = start
                while True:
                    op, body = await asyncio.wait_for(conn.read_frame(), 30.0)
                    if op == R_RECORD:
                        (lsn,) = struct.unpack(">Q", body[:8])
                        if lsn != expected:
                            self.stats.read_gaps += 1
                        self.check_record(lsn, body[8:])
                        expected = lsn + 1
                    elif op == R_END:
                        (nxt,) = struct.unpack(">Q", body)
                        if nxt != expected:
                            self.stats.read_gaps += 1
                        break
                    elif op == R_ERROR:
                        (code,) = struct.unpack(">H", body[:2])
                        raise ServerError(code, body[2:].decode("utf-8", "replace"))
                    else:
                        raise ProtocolViolation(f"unexpected opcode {op:#x} in replay")
            except Exception as exc:
                self.stats.error("replay:" + classify(exc))
                await asyncio.sleep(0.1)
            finally:
                if conn:
                    conn.close()
            await asyncio.sleep(rng.uniform(0.05, 0.5))

    async def follow_reader(self, node):
        """Follows `node` live; after a reconnect it must continue at exactly the next LSN."""
        next_lsn = 0
        while not self.stop.is_set():
            conn = None
            try:
                conn = await Conn.open(node.port)
                await conn.send(frame(OP_REPLAY, replay_body(next_lsn, 0, follow=True)))
                while not self.stop.is_set():
                    op, body = await conn.read_frame()  # cancelled at the end of the load
                    if op == R_RECORD:
                        (lsn,) = struct.unpack(">Q", body[:8])
                        if next_lsn and lsn != next_lsn:
                            self.stats.read_gaps += 1
                        self.check_record(lsn, body[8:])
                        next_lsn = lsn + 1
                    elif op == R_ERROR:
                        (code,) = struct.unpack(">H", body[:2])
                        if code == 3:  # truncated below us: start again from the first LSN
                            next_lsn = 0
                        raise ServerError(code, body[2:].decode("utf-8", "replace"))
                    else:
                        raise ProtocolViolation(f"unexpected opcode {op:#x} in follow")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.error("follow:" + classify(exc))
                await asyncio.sleep(0.2)
            finally:
                if conn:
                    conn.close()

    # -- truncation -------------------------------------------------------------------------

    async def refresh_positions(self):
        for node in self.nodes:
            if not node.alive() or node.stopped:
                continue
            conn = None
            try:
                conn = await Conn.open(node.port, timeout=2.0)
                info = await conn.info(timeout=2.0)
                node.last_durable = info["durable_lsn"]
            except Exception:
                pass
            finally:
                if conn:
                    conn.close()

    async def truncator(self):
        rng = random.Random(self.rng.getrandbits(64))
        while not self.stop.is_set():
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            await self.refresh_positions()
            # Never cut what a (possibly down) follower still needs: bound by every node's
            # last seen durable LSN, well behind the tail.
            bound = min(n.last_durable for n in self.nodes) - self.args.truncate_margin
            for node in self.nodes:
                if not node.alive() or node.stopped or bound < 2:
                    continue
                before = rng.randint(max(1, bound // 2), bound)
                conn = None
                try:
                    conn = await Conn.open(node.port, timeout=2.0)
                    node.max_truncate = max(node.max_truncate, before)
                    op, body = await conn.request(OP_TRUNCATE, struct.pack(">Q", before), timeout=10.0)
                    if op != R_TRUNCATED:
                        raise ProtocolViolation(f"TRUNCATE answered with opcode {op:#x}")
                    self.stats.truncations += 1
                except Exception as exc:
                    self.stats.error("truncate:" + classify(exc))
                finally:
                    if conn:
                        conn.close()

    # -- faults -----------------------------------------------------------------------------

    async def fault_injector(self):
        rng = random.Random(self.rng.getrandbits(64))
        kinds = self.args.faults.split(",")
        await asyncio.sleep(self.args.warmup)
        while not self.stop.is_set():
            await asyncio.sleep(rng.uniform(self.args.fault_min, self.args.fault_max))
            if self.stop.is_set():
                break
            kind = rng.choice(kinds)
            try:
                if kind == "kill_primary":
                    await self.kill_restart(self.primary, rng)
                elif kind == "kill_follower":
                    node = rng.choice(self.followers)
                    kind = f"kill_{node.name}"
                    await self.kill_restart(node, rng)
                elif kind == "sigstop":
                    node = rng.choice(self.nodes)
                    kind = f"sigstop_{node.name}"
                    node.sigstop()
                    await asyncio.sleep(rng.uniform(0.5, 3.0))
                    node.sigcont()
                elif kind == "slow_reader":
                    asyncio.ensure_future(self.slow_reader(rng.choice(self.nodes), rng.uniform(2.0, 8.0)))
                else:
                    await self.cut_mid_frame(rng)
                self.stats.faults[kind] += 1
            except Exception as exc:
                self.stats.error("fault:" + classify(exc))

    async def kill_restart(self, node, rng):
        node.kill9()
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        await asyncio.to_thread(node.start)

    async def slow_reader(self, node, stall):
        """Asks for the whole log and reads nothing for `stall` seconds, then closes."""
        conn = None
        try:
            conn = await Conn.open(node.port)
            await conn.send(frame(OP_REPLAY, replay_body(0, 0)))
            await asyncio.sleep(stall)
        except Exception as exc:
            self.stats.error("slow_reader:" + classify(exc))
        finally:
            if conn:
                conn.close()

    async def cut_mid_frame(self, rng):
        """Sends part of a frame to the primary, then cuts the connection (FIN or RST)."""
        records = [rng.randbytes(rng.randint(1, 4096))]
        data = frame(OP_APPEND, append_body(records))
        self.ledger.uncertain.add(digest(records[0]))  # never appended, but harmless if it were
        cut = rng.randint(1, len(data) - 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            await asyncio.to_thread(sock.connect, (HOST, self.primary.port))
            sock.sendall(data[:cut])
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            if rng.random() < 0.5:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        finally:
            sock.close()

    # -- RSS --------------------------------------------------------------------------------

    async def rss_sampler(self):
        start = time.monotonic()
        while not self.stop.is_set():
            kib = self.primary.rss_kib()
            if kib is not None:
                self.stats.rss.append((time.monotonic() - start, self.primary.incarnation, kib))
            await asyncio.sleep(1.0)

    # -- run --------------------------------------------------------------------------------

    async def run_load(self):
        tasks = [asyncio.ensure_future(self.appender(i)) for i in range(self.args.clients)]
        tasks += [asyncio.ensure_future(self.replay_reader(i)) for i in range(self.args.replay_readers)]
        tasks += [asyncio.ensure_future(self.follow_reader(n)) for n in self.nodes]
        tasks.append(asyncio.ensure_future(self.follow_reader(self.primary)))
        tasks.append(asyncio.ensure_future(self.truncator()))
        tasks.append(asyncio.ensure_future(self.fault_injector()))
        tasks.append(asyncio.ensure_future(self.rss_sampler()))
        started = time.monotonic()
        while time.monotonic() - started < self.args.duration:
            await asyncio.sleep(1.0)
            if self.args.progress and int(time.monotonic() - started) % self.args.progress == 0:
                print(f"soak: t={int(time.monotonic() - started)}s acked={self.ledger.count} "
                      f"faults={sum(self.stats.faults.values())} primary_rss_kib={self.primary.rss_kib()} "
                      f"primary_incarnation={self.primary.incarnation}", flush=True)
        self.stop.set()
        await asyncio.wait(tasks[:self.args.clients + self.args.replay_readers], timeout=60.0)
        await asyncio.wait(tasks[-3:], timeout=30.0)  # truncator, fault injector, rss sampler
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in self.nodes:
            if not node.alive():
                await asyncio.to_thread(node.start)
            node.sigcont()

    async def catch_up(self, timeout=180.0):
        """Waits until every follower has the primary's last LSN; returns (ok, seconds)."""
        started = time.monotonic()
        conn = await Conn.open(self.primary.port)
        try:
            op, body = await conn.request(OP_SYNC)
            info = await conn.info()
        finally:
            conn.close()
        target = info["last_lsn"]
        while time.monotonic() - started < timeout:
            done = True
            for node in self.followers:
                try:
                    if (await node_info(node))["durable_lsn"] < target:
                        done = False
                except Exception:
                    done = False
            if done:
                return True, time.monotonic() - started, target
            await asyncio.sleep(0.5)
        return False, time.monotonic() - started, target

    async def stall_report(self):
        """What a CI log needs to tell a stalled stream from a dead node: every node's positions,
        the TCP queues between the nodes (bytes stuck in a receive queue: the reader stopped
        reading; in a send queue: the peer stopped; none: nobody sent) and each log's tail."""
        out = []
        for node in self.nodes:
            try:
                i = await node_info(node)
                keep = ("role", "first_lsn", "last_lsn", "durable_lsn", "connections", "followers", "upstream")
                out.append(f"stall: {node.name} info " + json.dumps({k: i.get(k) for k in keep if k in i}))
            except Exception as exc:
                out.append(f"stall: {node.name} info FAILED {exc!r}")
        pids = {str(n.pid): n.name for n in self.nodes if n.pid}
        try:
            ss = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                                timeout=10).stdout.splitlines()
            for line in ss:
                parts = line.split()
                owner = next((name for pid, name in pids.items() if f"pid={pid}," in line), None)
                if owner and len(parts) >= 4:
                    out.append(f"stall: tcp {owner} {parts[2]} <-> {parts[3]} recv_q={parts[0]} send_q={parts[1]}")
        except Exception as exc:
            out.append(f"stall: ss FAILED {exc!r}")
        for node in self.nodes:
            try:
                with open(node.log_path, errors="replace") as f:
                    tail = [l.rstrip()[:300] for l in f if l.strip()][-12:]
                out.extend(f"stall: {node.name}.log | {l}" for l in tail)
            except OSError as exc:
                out.append(f"stall: {node.name}.log unreadable {exc!r}")
        return out

    async def verify(self, node):
        """Replays all of `node` and checks it against the ledger."""
        result = collections.Counter()
        conn = await Conn.open(node.port)
        try:
            info = await conn.info()
            first, last = info["first_lsn"], info["last_lsn"]
            if first > node.max_truncate:
                result["first_lsn_beyond_truncation"] += 1
            await conn.send(frame(OP_REPLAY, replay_body(0, 0)))
            expected = first
            seen_digests = set()
            while True:
                op, body = await asyncio.wait_for(conn.read_frame(), 60.0)
                if op == R_END:
                    break
                if op == R_ERROR:
                    (code,) = struct.unpack(">H", body[:2])
                    raise ServerError(code, body[2:].decode("utf-8", "replace"))
                if op != R_RECORD:
                    raise ProtocolViolation(f"unexpected opcode {op:#x} in verification replay")
                (lsn,) = struct.unpack(">Q", body[:8])
                payload = body[8:]
                d = digest(payload)
                if lsn < expected:
                    result["duplicates"] += 1
                    continue
                if lsn > expected:
                    result["gaps"] += 1
                    for missing in range(expected, lsn):
                        if self.ledger.get(missing) is not None:
                            result["lost"] += 1
                if len(payload) >= 8:
                    if d in seen_digests:
                        result["duplicates"] += 1  # the same payload at two LSNs
                    seen_digests.add(d)
                acked = self.ledger.get(lsn)
                if acked is not None:
                    if acked == d:
                        result["verified"] += 1
                    else:
                        result["lost"] += 1  # an acknowledged LSN holds another payload
                elif d not in self.ledger.uncertain:
                    result["foreign"] += 1  # a record no client ever sent
                else:
                    result["unacked_present"] += 1
                expected = lsn + 1
            # Acknowledged records after the last one the node returned are lost.
            for lsn in range(expected, self.ledger.max_lsn() + 1):
                if self.ledger.get(lsn) is not None:
                    result["lost"] += 1
            # Acknowledged records below the first LSN are excused when we truncated them; below
            # a first LSN beyond every TRUNCATE we sent, they are lost.
            acked = self.ledger.acked
            cut = min(first, node.max_truncate)
            result["excused"] = acked.count(1, 1, cut)
            if first > cut:
                result["lost"] += acked.count(1, cut, first)
            result["first_lsn"] = first
            result["last_lsn"] = last
        finally:
            conn.close()
        return result


# ---------------------------------------------------------------------------------------------
# disk full


def mount_small_fs(mnt, size_mib, work):
    """tmpfs first; a loop-mounted ext4 image when tmpfs cannot be mounted. Returns the method."""
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return "tmpfs", None
    image = os.path.join(work, "diskfull.img")
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
    r2 = subprocess.run(["mount", "-o", "loop", image, mnt], capture_output=True, text=True)
    if r2.returncode == 0:
        return "ext4 loop image", image
    raise RuntimeError(f"cannot mount a small filesystem: tmpfs: {r.stderr.strip()}; loop: {r2.stderr.strip()}")


async def replay_all(port, ledger_map):
    """Replays everything; returns (verified, lost, gaps, duplicates, first, last)."""
    conn = await Conn.open(port)
    try:
        info = await conn.info()
        first = info["first_lsn"]
        await conn.send(frame(OP_REPLAY, replay_body(0, 0)))
        expected, verified, gaps, dups = first, 0, 0, 0
        present = {}
        while True:
            op, body = await asyncio.wait_for(conn.read_frame(), 60.0)
            if op == R_END:
                break
            if op != R_RECORD:
                raise ProtocolViolation(f"unexpected opcode {op:#x}")
            (lsn,) = struct.unpack(">Q", body[:8])
            if lsn < expected:
                dups += 1
            elif lsn > expected:
                gaps += 1
            present[lsn] = digest(body[8:])
            expected = lsn + 1
        lost = 0
        for lsn, d in ledger_map.items():
            if lsn < first:
                continue
            if present.get(lsn) == d:
                verified += 1
            else:
                lost += 1
        return verified, lost, gaps, dups, first, info["last_lsn"]
    finally:
        conn.close()


async def disk_full_phase(args, work, lines):
    """A separate wald on a 64 MiB filesystem: fill it until NO_SPACE, check nothing acked is
    lost (also across a SIGKILL on the full disk), TRUNCATE, append again. Returns failures."""
    mnt = os.path.join(work, "diskfull-mnt")
    try:
        method, image = mount_small_fs(mnt, args.disk_full_mib, work)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        # Mounting needs root (CAP_SYS_ADMIN); say so in the summary rather than crash the soak.
        lines.append(f"disk-full: SKIPPED: {exc}")
        return 0
    failures = 0
    node = Node("diskfull", args.wald, os.path.join(mnt, "data"), os.path.join(work, "diskfull.log"),
                ["--max-segment-bytes", "1MiB", "--log-level", "notice"])
    started = time.monotonic()
    try:
        node.start()
        ledger = {}
        errors = collections.Counter()
        rng = random.Random(args.seed ^ 0xD15C)

        async def fill(conns, until_no_space):
            """Appends from several connections until each has seen `until_no_space` NO_SPACE."""
            async def one(conn):
                no_space = 0
                while no_space < until_no_space:
                    records = [rng.randbytes(rng.randint(1024, 4096)) for _ in range(rng.randint(1, 4))]
                    try:
                        op, body = await conn.request(OP_APPEND, append_body(records), timeout=30.0)
                        first, n = struct.unpack(">QI", body)
                        for i, r in enumerate(records):
                            ledger[first + i] = digest(r)
                    except ServerError as exc:
                        errors[exc.name] += 1
                        if exc.code == NO_SPACE:
                            no_space += 1
                            await asyncio.sleep(0.01)
                        else:
                            await asyncio.sleep(0.05)
            await asyncio.gather(*(one(c) for c in conns))

        conns = [await Conn.open(node.port) for _ in range(4)]
        await asyncio.wait_for(fill(conns, 5), 300.0)
        for c in conns:
            c.close()
        df = shutil.disk_usage(mnt)
        acked_full = len(ledger)
        v1, lost1, gaps1, dups1, first1, last1 = await replay_all(node.port, ledger)
        # SIGKILL while the disk is full, restart: recovery must keep every acked record.
        node.kill9()
        await asyncio.to_thread(node.start)
        v2, lost2, gaps2, dups2, _, last2 = await replay_all(node.port, ledger)
        # Free space with TRUNCATE, then appends must succeed again.
        conn = await Conn.open(node.port)
        op, body = await conn.request(OP_TRUNCATE, struct.pack(">Q", last2 + 1))
        (first_after,) = struct.unpack(">Q", body)
        ok_after, nospace_after = 0, 0
        deadline = time.monotonic() + 30.0
        while ok_after < 200 and time.monotonic() < deadline:
            records = [rng.randbytes(rng.randint(1024, 4096))]
            try:
                op, body = await conn.request(OP_APPEND, append_body(records))
                first, n = struct.unpack(">QI", body)
                ledger[first] = digest(records[0])
                ok_after += 1
            except ServerError as exc:
                errors[exc.name] += 1
                nospace_after += 1
                await asyncio.sleep(0.05)
        conn.close()
        v3, lost3, gaps3, dups3, first3, last3 = await replay_all(node.port, ledger)
        status = node.terminate()
        failures = lost1 + lost2 + lost3 + gaps1 + gaps2 + gaps3 + dups1 + dups2 + dups3
        if errors["NO_SPACE"] == 0 or ok_after < 200 or status != 0:
            failures += 1
        lines.append(f"disk-full: method={method} size={args.disk_full_mib}MiB max_segment_bytes=1MiB "
                     f"acked_until_full={acked_full} used_at_full={df.used >> 10}KiB/{df.total >> 10}KiB "
                     f"errors={dict(errors)}")
        lines.append(f"disk-full: at full: verified={v1} lost={lost1} gaps={gaps1} duplicates={dups1}; "
                     f"after SIGKILL+restart on the full disk: verified={v2} lost={lost2} gaps={gaps2} "
                     f"duplicates={dups2}")
        lines.append(f"disk-full: TRUNCATE before {last2 + 1} -> first_lsn={first_after}; appends after: "
                     f"ok={ok_after} failed={nospace_after}; final replay verified={v3} lost={lost3} "
                     f"gaps={gaps3} duplicates={dups3} (first_lsn={first3} last_lsn={last3}); "
                     f"SIGTERM exit={status}; {time.monotonic() - started:.1f}s -> "
                     f"{'PASS' if failures == 0 else 'FAIL'}")
    except Exception as exc:
        failures += 1
        lines.append(f"disk-full: method={method} FAILED: {exc!r}")
    finally:
        if node.proc:
            kill_and_reap(node.proc)
        r = subprocess.run(["umount", mnt], capture_output=True, text=True)
        if r.returncode != 0:
            time.sleep(1)
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        if image:
            os.remove(image)
    return failures


# ---------------------------------------------------------------------------------------------


def kib_line(samples):
    return f"{samples[0][2]}->{samples[-1][2]} (max {max(s[2] for s in samples)})"


async def main_async(args, work):
    soak = Soak(args, work)
    lines = []
    failed = False
    try:
        await asyncio.to_thread(soak.start_nodes)
        print(f"soak: primary pid={soak.primary.pid} port={soak.primary.port}, follower1 pid={soak.followers[0].pid} "
              f"port={soak.followers[0].port}, follower2 pid={soak.followers[1].pid} port={soak.followers[1].port}; "
              f"{args.clients} clients for {args.duration}s, seed {args.seed}, work dir {work}", flush=True)
        load_started = time.monotonic()
        await soak.run_load()
        load_seconds = time.monotonic() - load_started
        caught_up, catch_seconds, target = await soak.catch_up(args.catch_up_timeout)
        if not caught_up:
            lines.extend(await soak.stall_report())
        rss_end = soak.primary.rss_kib() or 0
        results = {}
        for node in soak.nodes:
            try:
                results[node.name] = await soak.verify(node)
            except Exception as exc:
                results[node.name] = collections.Counter({"lost": soak.ledger.count, "error": 1})
                lines.append(f"verify {node.name}: FAILED {exc!r}")
        exits = {node.name: node.terminate() for node in reversed(soak.nodes)}
        offline = {}
        if args.walctl:
            for node in soak.nodes:
                r = subprocess.run([args.walctl, "verify", node.data_dir], capture_output=True, text=True)
                offline[node.name] = "clean" if r.returncode == 0 else f"FAILED: {(r.stdout + r.stderr).strip()[:200]}"

        st = soak.stats
        warm = [s for s in st.rss if s[0] >= args.warmup] or st.rss or [(0, 0, 0)]
        rss_start = warm[0][2]
        by_incarnation = collections.OrderedDict()
        for s in warm:
            by_incarnation.setdefault(s[1], []).append(s)
        longest = max(by_incarnation.values(), key=len) if by_incarnation else [(0, 0, 0)]

        lost = sum(r["lost"] for r in results.values()) + soak.ledger.conflicts
        dups = sum(r["duplicates"] for r in results.values())
        gaps = sum(r["gaps"] for r in results.values()) + st.read_gaps
        foreign = sum(r["foreign"] for r in results.values())
        verified = sum(r["verified"] for r in results.values())
        faults = sum(st.faults.values())
        failed = (lost or dups or gaps or foreign or st.read_mismatches or not caught_up
                  or any(v != 0 for v in exits.values())
                  or any(v != "clean" for v in offline.values()))

        lines.append(f"load: {load_seconds:.0f}s, {args.clients} clients, acked={soak.ledger.count} records in "
                     f"{st.appended_batches} batches ({soak.ledger.count / max(load_seconds, 1):.0f} records/s), "
                     f"truncations={st.truncations}, reader records checked={st.read_records} "
                     f"(mismatches={st.read_mismatches}, reader gaps={st.read_gaps}), "
                     f"ack conflicts={soak.ledger.conflicts}, unacked outcomes={len(soak.ledger.uncertain)}")
        lines.append("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(st.faults.items())) + f" (total {faults})")
        lines.append(f"followers caught up to LSN {target}: {'yes' if caught_up else 'NO'} in {catch_seconds:.1f}s")
        for name, r in results.items():
            lines.append(f"verify {name}: first_lsn={r['first_lsn']} last_lsn={r['last_lsn']} verified={r['verified']} "
                         f"excused(truncated)={r['excused']} unacked_present={r['unacked_present']} lost={r['lost']} "
                         f"duplicates={r['duplicates']} gaps={r['gaps']} foreign={r['foreign']}"
                         + (" FIRST_LSN_BEYOND_TRUNCATION" if r["first_lsn_beyond_truncation"] else ""))
        lines.append("shutdown (SIGTERM) exit codes: " + ", ".join(f"{k}={v}" for k, v in exits.items()))
        if offline:
            lines.append("walctl verify: " + ", ".join(f"{k}={v}" for k, v in offline.items()))
        lines.append("errors by code: " + (", ".join(f"{k}={v}" for k, v in sorted(st.errors.items())) or "none"))
        # Flat: the longest-lived primary process grew by less than a quarter (+16 MiB of slack)
        # between its first sample after warm-up and its last. Reported, not enforced.
        grew = longest[-1][2] - longest[0][2]
        verdict = "flat" if grew <= longest[0][2] // 4 + 16 * 1024 else "GREW"
        lines.append(f"primary rss (KiB) after {args.warmup:.0f}s warm-up: start={rss_start} end={rss_end}; "
                     f"incarnations={soak.primary.incarnation}; longest-lived after warm-up "
                     f"({len(longest)} samples): {kib_line(longest)} -> memory {verdict}")
    finally:
        for node in soak.nodes:
            if node.proc:
                try:
                    node.sigcont()
                except Exception:
                    pass
                kill_and_reap(node.proc)

    if not args.skip_disk_full:
        if await disk_full_phase(args, work, lines):
            failed = True
    for line in lines:
        print(line)
    print(f"soak: acked={soak.ledger.count} verified={verified} lost={lost} duplicates={dups} gaps={gaps} "
          f"faults={faults} rss_start_kib={rss_start} rss_end_kib={rss_end}", flush=True)
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=300, help="seconds of load and faults")
    p.add_argument("--wald", default=".build-soak/release/wald")
    p.add_argument("--walctl", default=None, help="walctl binary: also verify every data dir offline")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--replay-readers", type=int, default=2)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--catch-up-timeout", type=float, default=180.0,
                   help="seconds the followers get to reach the primary's last LSN after the load")
    p.add_argument("--warmup", type=float, default=None, help="seconds before faults and the RSS baseline")
    p.add_argument("--faults", default="kill_primary,kill_follower,sigstop,slow_reader,cut_mid_frame",
                   help="comma-separated fault kinds to choose from")
    p.add_argument("--fault-min", type=float, default=2.0)
    p.add_argument("--fault-max", type=float, default=5.0)
    p.add_argument("--segment-bytes", default="4MiB")
    p.add_argument("--truncate-margin", type=int, default=5000, help="records kept behind every node's tail")
    p.add_argument("--min-sync-replicas", type=int, default=0)
    p.add_argument("--disk-full-mib", type=int, default=64)
    p.add_argument("--skip-disk-full", action="store_true")
    p.add_argument("--work-dir", default=None, help="parent of the temporary work directory")
    p.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    p.add_argument("--progress", type=int, default=0, help="print progress every N seconds")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(32)
    if args.warmup is None:
        args.warmup = min(30.0, max(5.0, args.duration / 10))
    args.wald = os.path.abspath(args.wald)
    if args.walctl:
        args.walctl = os.path.abspath(args.walctl)
    work = tempfile.mkdtemp(prefix="wald-soak-", dir=args.work_dir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    code = 1
    try:
        code = asyncio.run(main_async(args, work))
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        code = 130
    finally:
        if args.keep or code != 0:
            print(f"soak: work dir kept at {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
