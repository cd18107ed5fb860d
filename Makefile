# wald: build, test, benchmark, run and install. Targets install the system packages they need.
SWIFT ?= swift
PREFIX ?= /usr/local
DESTDIR ?=
DATA_DIR ?= data
LISTEN ?= 127.0.0.1:7070
APT_PACKAGES := libsystemd-dev systemd libssl-dev
BENCH_PACKAGES := redis-server redis-tools openssl
# The RESP tests drive wald with Redis's own clients: redis-cli and redis-benchmark (redis-tools) and
# redis-py, installed from PyPI into a virtualenv under the build directory (.build-venv, never committed).
# WALEtcdTests and FailoverTests start a real etcd: Debian's etcd-server (3.4). The TLS tests make their
# certificates with the openssl command (libssl-dev, for the build, is in APT_PACKAGES).
TEST_PACKAGES := redis-tools python3 python3-venv etcd-server openssl
# What the README's quick start types next to `make run`: nc (the text protocol) and redis-cli (RESP).
RUN_PACKAGES := netcat-openbsd redis-tools
VENV := .build-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build release test bench bench-compare run clean deps bench-deps test-deps docs

all: build

# Installs missing Debian packages: $(1) is the package list.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call apt_install,$(APT_PACKAGES))

# Writes docs/config-table.md and config/wald.yaml from the option catalogue
# (Sources/WALConfig/Config/WaldOption.swift); OptionDocsTests, in `make test`, fails until they match it.
docs: deps
	WALD_WRITE_DOCS=1 $(SWIFT) test --filter OptionDocsTests

bench-deps: deps
	$(call apt_install,$(BENCH_PACKAGES))

test-deps: deps
	$(call apt_install,$(TEST_PACKAGES))
	@$(VENV)/bin/python3 -c 'import redis' 2>/dev/null || { \
		echo "creating $(VENV) with redis-py"; \
		python3 -m venv $(VENV) && $(VENV)/bin/pip install -q --disable-pip-version-check 'redis>=5'; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Builds everything (the tests start the built executables) and runs every test, in three groups one
# after another: the in-process suites, then the ones that drive real wald processes, then systemd. In one
# run, CPU-bound power-cut trials and tests that block on processes and sockets held the 2 cooperative-pool
# threads for tens of seconds, and timing-sensitive end-to-end tests starved (a writer got 3 acks in 30 s).
# WALEtcdTests (a real etcd per test, lease TTLs of 2 s) have their own group: inside the first one, the
# power-cut trials stalled them for over 2 s between a lease grant and its renewal (4 of 25 failed in one run).
# Every group runs even if an earlier one failed; the target fails if any did.
TEST_GROUPS := 'WALCoreTests|WALProtocolTests|WALServerTests|WALConfigTests' WALEtcdTests WaldEndToEndTests FailoverTests SystemdUnitTests
test: test-deps
	$(SWIFT) build --build-tests
	@status=0; for group in $(TEST_GROUPS); do \
		echo "== make test: $$group"; \
		$(SWIFT) test --skip-build --filter "$$group" || status=1; \
	done; exit $$status

# Storage-engine benchmarks in release mode: one table, ratios measured in the same run.
bench: release
	.build/release/wal-bench

# wald vs Redis (appendfsync always / everysec) and a raw fdatasync loop, same machine and disk.
bench-compare: release bench-deps
	.build/release/wal-bench-compare

# Automatic failover under load (Sources/wal-bench-failover): etcd and three walds, 16 writers, the leader
# SIGKILLed FAILOVER_KILLS times with min_sync_replicas 1 and again with asynchronous buffered appends; prints
# kill → first acknowledgement on the new leader (p50, p99, max) and acknowledged records lost.
FAILOVER_KILLS ?= 20
FAILOVER_TTL ?= 3s
.PHONY: bench-failover
bench-failover: release test-deps
	.build/release/wal-bench-failover $(FAILOVER_KILLS) $(FAILOVER_TTL)

# Chaos soak (Tests/Soak/soak.py, Python 3 stdlib): a primary and two followers under 64 clients while processes
# are killed, stalled and cut off, every acknowledged record verified on every node; then a disk-full phase on a
# 64 MiB tmpfs (needs root to mount). DURATION is the seconds of load; SOAK_ARGS passes more options.
# Release binaries in their own scratch path, so a soak never races another build. CI soaks the debug
# binaries `make test` already built (SOAK_CONFIG=debug SOAK_SCRATCH=.build): a cold release build costs minutes.
DURATION ?= 300
SOAK_SCRATCH ?= .build-soak
SOAK_CONFIG ?= release
SOAK_ARGS ?=

.PHONY: soak
soak: deps
	$(SWIFT) build -c $(SOAK_CONFIG) --scratch-path $(SOAK_SCRATCH) --product wald
	$(SWIFT) build -c $(SOAK_CONFIG) --scratch-path $(SOAK_SCRATCH) --product walctl
	python3 Tests/Soak/soak.py --duration $(DURATION) --wald $(SOAK_SCRATCH)/$(SOAK_CONFIG)/wald \
		--walctl $(SOAK_SCRATCH)/$(SOAK_CONFIG)/walctl $(SOAK_ARGS)

# Builds and starts wald on $(LISTEN) with data in $(DATA_DIR) (Ctrl-C stops it cleanly).
run: build
	$(call apt_install,$(RUN_PACKAGES))
	.build/debug/wald --listen $(LISTEN) --data-dir $(DATA_DIR)

clean:
	rm -rf .build .build-* data

# --- install / uninstall -----------------------------------------------------------------------------------
# Binaries, units and docs go under $(PREFIX); the config always goes to $(SYSCONFDIR)/wald (default /etc/wald,
# whatever PREFIX is: host configuration belongs in /etc). systemd/*.{service,socket} are written for
# PREFIX=/usr/local and SYSCONFDIR=/etc; install rewrites those paths with sed. An existing wald.yaml is never
# overwritten: the new sample is installed next to it as wald.yaml.new. BINDIR_SRC names prebuilt binaries;
# only when it is left at .build/release does install build them first.
SYSCONFDIR ?= /etc
BINDIR_SRC ?= .build/release
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/wald
INSTALL ?= install
UNITS := wald.service wald.socket
DOCS = $(wildcard README.md docs/*.md)

.PHONY: install uninstall

install: $(if $(filter .build/release,$(BINDIR_SRC)),release)
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/wald
	$(INSTALL) -m 755 -s $(BINDIR_SRC)/wald $(BINDIR_SRC)/walctl $(DESTDIR)$(PREFIX)/bin/
	for u in $(UNITS); do \
		sed -e 's|/usr/local/|$(PREFIX)/|g' -e 's|/etc/wald/|$(SYSCONFDIR)/wald/|g' systemd/$$u \
			> $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		chmod 644 $(DESTDIR)$(UNITDIR)/$$u.tmp && mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/wald/wald.yaml ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/wald/wald.yaml; new sample: $(DESTDIR)$(SYSCONFDIR)/wald/wald.yaml.new"; \
		$(INSTALL) -m 644 config/wald.yaml $(DESTDIR)$(SYSCONFDIR)/wald/wald.yaml.new; \
	else \
		$(INSTALL) -m 644 config/wald.yaml $(DESTDIR)$(SYSCONFDIR)/wald/wald.yaml; \
	fi
	$(INSTALL) -m 644 $(DOCS) $(DESTDIR)$(DOCDIR)/

# Removes what install put under $(PREFIX); keeps $(SYSCONFDIR)/wald and the data in /var/lib/wald.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/wald $(DESTDIR)$(PREFIX)/bin/walctl
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS))
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOCS)))
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true

# --- fuzzing and sanitizers -----------------------------------------------------------------------------
# `make fuzz FUZZ_SECONDS=N` runs each libFuzzer target (Sources/wald-fuzz: binary, text, resp, recovery, session)
# for N seconds, nice'd, starting from the committed seeds in Tests/Fuzz/corpus/<target> plus what earlier
# runs found (kept in .build-fuzz/corpus, never committed). Crash inputs land in .build-fuzz/artifacts; turn
# each into a regression test. -malloc_limit_mb makes any single allocation over 256 MiB a crash: no length
# field may make the decoders allocate more than their configured maximum. Leak checks are off: every input
# of recovery/session starts threads and tasks that outlive it by design. Swift's backtracer is off: after
# a trap it reads process memory in a way ASan reports as a heap overflow, burying the real failure.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= binary text resp recovery session
FUZZ_BUILD := .build-fuzz
FUZZ_FLAGS ?= -malloc_limit_mb=256 -rss_limit_mb=2048 -timeout=30 -detect_leaks=0 -max_len=8192

.PHONY: fuzz fuzz-build test-asan test-tsan

# Release (-O) with ASan: 2-3x the executions per second of a debug build, same checks.
fuzz-build: deps
	nice -n 19 $(SWIFT) build -c release --scratch-path $(FUZZ_BUILD) --product wald-fuzz \
		-Xswiftc -sanitize=fuzzer,address -Xlinker --export-dynamic-symbol=LLVMFuzzerRunDriver 2>&1 \
		| grep -v "Cannot export local symbol"; test -x $(FUZZ_BUILD)/release/wald-fuzz

fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/artifacts
	@status=0; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		SWIFT_BACKTRACE=enable=no nice -n 19 $(FUZZ_BUILD)/release/wald-fuzz $$t $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- \
			$(FUZZ_BUILD)/corpus/$$t Tests/Fuzz/corpus/$$t > $(FUZZ_BUILD)/$$t.log 2>&1 || status=1; \
		grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" $(FUZZ_BUILD)/$$t.log \
			| sed "s/^/  $$t /"; \
		grep -E "invariant failed|ERROR: |SUMMARY: |Test unit written" $(FUZZ_BUILD)/$$t.log | sed "s/^/  $$t /"; \
	done; exit $$status

# Tests under AddressSanitizer / ThreadSanitizer, each in its own scratch path. TEST_FILTER picks other
# suites (e.g. TEST_FILTER=WALCoreTests); the end-to-end tests start the sanitized wald binary as well.
# TSan builds with -DWALD_TSAN: on Linux, Synchronization.Mutex is invisible to TSan
# (Tests/Sanitizers/tsan-mutex-repro.swift shows a false report on a correct program), so under that flag
# every module's Mutex is the pthread-backed Sources/WALSync/TSanVisibleMutex.swift, which TSan sees.
# Both run the concurrency-heavy suites (SANITIZER_TESTS): the engine, the server in process and under
# concurrent and pipelined clients, replication, Redis clients over RESP. The rest assume debug-build speed (time limits, acks per
# second) or set address-space limits a sanitizer cannot run under. Reports from the test process and from
# every wald it starts go to $(ASAN_REPORTS) / $(TSAN_REPORTS); any report fails the target.
TEST_FILTER ?=
SANITIZER_TESTS ?= WALCoreTests|WALServerTests|ConcurrencyTests|BinaryProtocolTests|TextProtocolTests|ReplicationTests|RESPClientTests
TSAN_REPORTS := .build-tsan/reports
ASAN_REPORTS := .build-asan/reports
test-asan: test-deps
	nice -n 19 $(SWIFT) build --build-tests --scratch-path .build-asan -Xswiftc -sanitize=address
	@rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS)
	SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="log_path=$(CURDIR)/$(ASAN_REPORTS)/asan $(ASAN_OPTIONS)" \
		LSAN_OPTIONS="suppressions=$(CURDIR)/Tests/Sanitizers/lsan.supp $(LSAN_OPTIONS)" \
		nice -n 19 $(SWIFT) test --skip-build --scratch-path .build-asan --filter '$(or $(TEST_FILTER),$(SANITIZER_TESTS))'
	@if grep -l "ERROR: \(Address\|Leak\)Sanitizer" $(ASAN_REPORTS)/* 2>/dev/null; then \
		cat $(ASAN_REPORTS)/*; echo "test-asan: AddressSanitizer reports above"; exit 1; fi
	@echo "test-asan: no AddressSanitizer or LeakSanitizer reports (tests and every wald they started)"

test-tsan: test-deps
	nice -n 19 $(SWIFT) build --build-tests --scratch-path .build-tsan -Xswiftc -sanitize=thread -Xswiftc -DWALD_TSAN
	@rm -rf $(TSAN_REPORTS) && mkdir -p $(TSAN_REPORTS)
	SWIFT_BACKTRACE=enable=no TSAN_OPTIONS="log_path=$(CURDIR)/$(TSAN_REPORTS)/tsan second_deadlock_stack=1 $(TSAN_OPTIONS)" \
		$(SWIFT) test --skip-build --scratch-path .build-tsan --filter '$(or $(TEST_FILTER),$(SANITIZER_TESTS))'
	@if grep -l "WARNING: ThreadSanitizer" $(TSAN_REPORTS)/* 2>/dev/null; then \
		cat $(TSAN_REPORTS)/*; echo "test-tsan: ThreadSanitizer reports above"; exit 1; fi
	@echo "test-tsan: no ThreadSanitizer reports (tests and every wald they started)"
