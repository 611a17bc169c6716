# The two commands of the README: `make run` (the TS1 scenarios) and `make test` (the whole test suite).
# Both install missing Debian packages and build first.
BUILD ?= build
JOBS ?= $(shell nproc)
TS1 := configs/test_scenarios/TS1
CMAKE_ARGS ?=

.PHONY: all deps build test run docs clean
all: build

deps:
	scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

run: build
	$(BUILD)/expctl run $(TS1)/finetune.yaml $(TS1)/nc.yaml $(TS1)/wanda.yaml

# Regenerates the YAML reference from the parameter tables (a test fails when it is stale).
docs: build
	{ cat docs/config-reference.head.md; $(BUILD)/expctl describe --all --markdown; } > docs/config-reference.md

clean:
	rm -rf $(BUILD)
