# wald: build, test, benchmark and run. Every target installs the system packages it needs.
SWIFT ?= swift
PREFIX ?= /usr/local
DATA_DIR ?= data
APT_PACKAGES := libsystemd-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build release test bench run clean deps

all: build

# Installs missing Debian packages (libsystemd-dev and what tests use).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Builds everything (the tests start the built executables) and runs every test.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# Benchmarks in release mode; prints a table with ratios measured in the same run.
bench: release
	.build/release/wal-bench

run: build
	.build/debug/wal-example-basic $(DATA_DIR)

clean:
	rm -rf .build .build-* data
