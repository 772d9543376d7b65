# kiln: thin wrapper over CMake. `make` builds, `make test` installs deps, builds and runs every
# test (plus an ASan+UBSan build unless SANITIZE=0), `make demo` runs the main example (LeNet
# eager, then as a compiled graph, the speedup, the saved graph through the kiln CLI, and the
# same graph exported to ONNX, checked and run back),
# `make bench B=<name>` runs one benchmark (all when B is empty), `make fuzz` builds the
# libFuzzer targets with clang in build-fuzz (run: ./build-fuzz/fuzz_pb -max_total_time=20),
# `make onnx-conformance` runs ONNX's backend tests and rewrites docs/onnx-conformance.md.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc)
SANITIZE ?= 1
B ?=

.PHONY: all deps build test test-fast test-asan demo bench docs onnx-conformance format fuzz clean

all: build

deps:
	@bash scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
ifeq ($(SANITIZE),1)
	$(MAKE) test-asan
endif

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON \
	      -DKILN_BUILD_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 KILN_TEST_QUICK=1 \
	      ctest --output-on-failure -j $(JOBS)

demo: deps build
	./$(BUILD)/autograd_basics
	./$(BUILD)/fashion_mnist --model lenet --epochs 2 --mode eager | tee $(BUILD)/demo-eager.log
	./$(BUILD)/fashion_mnist --model lenet --epochs 2 --mode graph --save $(BUILD)/lenet.kiln \
	    | tee $(BUILD)/demo-graph.log
	@bash scripts/demo_summary.sh $(BUILD)/demo-eager.log $(BUILD)/demo-graph.log
	./$(BUILD)/kiln info $(BUILD)/lenet.graph.kiln
	./$(BUILD)/kiln bench $(BUILD)/lenet.graph.kiln --batch 1 --iters 2000
	./$(BUILD)/kiln export $(BUILD)/lenet.graph.kiln -o $(BUILD)/lenet.onnx
	./$(BUILD)/kiln check $(BUILD)/lenet.onnx
	./$(BUILD)/kiln bench $(BUILD)/lenet.onnx --batch 64 --iters 200

bench: build
	@KILN_DEPS_BENCH=1 bash scripts/deps.sh
	@bash bench/run.sh "$(B)"

docs: build onnx-conformance
	/usr/bin/python3 tools/gen_ops_doc.py $(BUILD) > docs/ops.md

# ONNX's backend tests through kiln: prints the table and rewrites docs/onnx-conformance.md
onnx-conformance: build
	./$(BUILD)/onnx_conformance --doc docs/onnx-conformance.md

fuzz:
	@printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' | \
	    clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1 || \
	    { echo "make fuzz: clang with libFuzzer (clang -fsanitize=fuzzer) is not available" >&2; \
	      exit 1; }
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DKILN_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_pb fuzz_onnx_model fuzz_onnx_import

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
