# Fjord's two quickstart commands, `make demo` and `make test`, work on a fresh machine: both
# first install the system packages the build needs.

CARGO ?= cargo
# Debian packages: a C/C++ toolchain and libclang for the RocksDB bindings, cmake for
# librdkafka.
APT_PACKAGES := build-essential clang libclang-dev cmake pkg-config

.PHONY: deps demo test lint bench

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v cargo-nextest >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest

demo: deps
	$(CARGO) run -p fjord-cli -- demo

test: deps
	$(CARGO) nextest run --workspace --no-fail-fast
	$(CARGO) test --workspace --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) bench --bench log
