# PING round trips, one request at a time on one connection per server, servers interleaved in blocks
# of 500; prints p50 and p99 in µs per port (the first block is warm-up). A reply ends at its "\n", so
# it works for Redis ("+PONG\r\n"), wald's text protocol ("PONG\n") and Tests/Bench/dispatch-floor.swift.
# Usage: python3 Tests/Bench/ping-rtt.py PORT [PORT ...]
import socket, sys, time
ports = [int(p) for p in sys.argv[1:]]
conns = {}
for p in ports:
    s = socket.create_connection(("127.0.0.1", p)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); conns[p] = s
samples = {p: [] for p in ports}
msg = b"PING\r\n"
for block in range(20):
    for p in ports:
        s = conns[p]
        for i in range(500):
            t = time.perf_counter_ns(); s.sendall(msg); d = s.recv(64)
            while not d.endswith(b"\n"): d += s.recv(64)
            samples[p].append((time.perf_counter_ns() - t) / 1000)
for p in ports:
    v = sorted(samples[p][500:]); print(p, "p50 %.1f µs p99 %.1f µs n=%d" % (v[len(v)//2], v[int(len(v)*0.99)], len(v)))
