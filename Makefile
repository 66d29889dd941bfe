# The README's commands. Everything else is CMake + Ninja underneath.
#   make run    set up, build, and start cairn on ./cairn-data/demo.cairn
#   make test   set up, build, and run the whole test suite with ctest
# Also: make sanitize (ASan+UBSan unit tests), make fuzz (libFuzzer, FUZZ_SECONDS each),
#       make format, make format-check, make clean.

BUILD        ?= build
JOBS         ?= 2
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := codec_fuzz dump_fuzz json_fuzz log_fuzz protocol_fuzz redis_hash_fuzz
CMAKE_FLAGS  ?=
export CTEST_OUTPUT_ON_FAILURE = 1

.PHONY: all setup build run test torture sanitize tsan fuzz format format-check clean

all: build

setup:
	@bash scripts/setup

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@mkdir -p cairn-data
	@bash scripts/run-demo $(BUILD)/cairn cairn-data/demo.cairn

test: build
	ctest --test-dir $(BUILD) -j $(JOBS) --timeout 600

# The crash tests with 100 kill -9 rounds each (make test runs 10).
torture: build
	CAIRN_TORTURE_ROUNDS=$(or $(ROUNDS),100) $(BUILD)/tests/cairn_crash_tests

# Unit tests under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize: setup
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCAIRN_SANITIZE=address,undefined
	cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan -j $(JOBS) -L "unit|crash" --timeout 900

# Unit and crash tests under ThreadSanitizer (data races, lock-order inversions).
tsan: setup
	cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_SANITIZE=thread
	cmake --build build-tsan -j $(JOBS) --target cairn_unit_tests cairn_crash_tests
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  ctest --test-dir build-tsan -j $(JOBS) -L "unit|crash" -E "_corpus$$" --timeout 900

# Each libFuzzer target for FUZZ_SECONDS, seeded from tests/fuzz/corpus/TARGET; new inputs go to
# build-fuzz/corpus-TARGET (fold the useful ones back with TARGET -merge=1 SEED_DIR NEW_DIR).
fuzz: setup
	cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_FUZZ=ON \
	  -DCMAKE_CXX_COMPILER=clang++
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS)s"; \
	  mkdir -p build-fuzz/corpus-$$t; \
	  build-fuzz/tests/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
	    build-fuzz/corpus-$$t tests/fuzz/corpus/$$t || exit 1; \
	done

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
