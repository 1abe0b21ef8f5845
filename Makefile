# qmpsim — every step a user or CI needs lives here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
SCENARIO ?= scenarios/tour.yaml

.PHONY: run test lint typecheck bench clean qemu qemu-10.0 libvirt

# Two stamps: running needs only the package and its runtime dependencies; the
# tests, lint and typecheck add the test tools on top.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

## run: serve the default scenario and show a client receiving it
run: $(RUN_STAMP)
	$(PY) -m qmpsim demo $(SCENARIO)

## qemu: install what the tests talk to: a real QEMU (the referee of the differential
## tests), qemu-img (the images it attaches) and socat (the control channel's documented
## client), with apt, when missing
qemu:
	@missing=""; \
	command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$$missing qemu-system-x86"; \
	command -v qemu-img >/dev/null 2>&1 || missing="$$missing qemu-utils"; \
	command -v socat >/dev/null 2>&1 || missing="$$missing socat"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing$$missing with apt"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## qemu-10.0: the second referee, Debian's QEMU 10.0.2 from bookworm-backports, unpacked
## into build/ beside the system's 7.2 (neither the system QEMU nor apt's sources change)
QEMU_10_0 := build/qemu-10.0.2
qemu-10.0: $(QEMU_10_0)/.installed
$(QEMU_10_0)/.installed: tools/install-debian-qemu | qemu
	tools/install-debian-qemu 10.0.2 bookworm-backports $(QEMU_10_0)

## record-libvirt-probe: re-record libvirt 9.0's capability probe of the system's QEMU 7.2
## (as root, with libvirtd privately in a mount namespace; see tests/data/README.md)
.PHONY: record-libvirt-probe
record-libvirt-probe:
	$(PYTHON) tools/record_libvirt_probe.py tests/data/libvirt-probe-qemu-7.2.jsonl

## libvirt: what the libvirt end-to-end tests drive: Debian's libvirt daemon, its QEMU
## driver and virsh, with apt, when missing; and the libvirt-qemu user and group, which the
## QEMU driver refuses to load without (libvirt-daemon-system would make them, and much more)
libvirt:
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	missing=""; \
	command -v libvirtd >/dev/null 2>&1 || missing="$$missing libvirt-daemon"; \
	[ -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ] || \
	  missing="$$missing libvirt-daemon-driver-qemu"; \
	command -v virsh >/dev/null 2>&1 || missing="$$missing libvirt-clients"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi; \
	getent group libvirt-qemu >/dev/null || $$SUDO groupadd --system libvirt-qemu; \
	getent passwd libvirt-qemu >/dev/null || $$SUDO useradd --system --gid libvirt-qemu \
	  --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu

## test: lint, typecheck and the whole suite (both real QEMUs and libvirt included)
test: $(STAMP) qemu qemu-10.0 libvirt lint typecheck
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check qmpsim tests bench fuzz tools
	$(VENV)/bin/ruff format --check qmpsim tests bench fuzz tools

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP) qemu
	$(PY) bench/run.py

## profiles: recompile qmpsim/profiles/ from recorded QEMU conversations (QEMU_QMP, default
## ../shared/qemu-qmp, and recordings/); the output is committed, so this runs only when
## the recordings change
QEMU_QMP ?= ../shared/qemu-qmp
.PHONY: profiles recordings
profiles: $(STAMP)
	$(PY) tools/compile_profiles.py $(QEMU_QMP)

## recordings: record every argument-less query of both referee QEMUs into recordings/
recordings: $(STAMP) qemu qemu-10.0
	$(PY) tools/record_qmp.py qemu-system-x86_64 recordings
	$(PY) tools/record_qmp.py $(QEMU_10_0)/qemu-system-x86_64 recordings

## fuzz: the atheris target on the wire and protocol, time-bounded (FUZZ_SECONDS, default 60)
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[fuzz]'
	mkdir -p build/fuzz-corpus
	$(PY) fuzz/fuzz_protocol.py -max_total_time=$(FUZZ_SECONDS) build/fuzz-corpus fuzz/seeds

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
