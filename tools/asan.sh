#!/usr/bin/env bash
# The kernel crate's tests under AddressSanitizer (heap/stack out-of-bounds reads and
# writes, use after free in the unsafe kernels), with the AVX-512 level emulated so its
# kernels run too. Needs a nightly toolchain with the ASan runtime (`-Zsanitizer` is
# nightly-only); without one it says so and exits 0. Inline-assembly loads (the AVX2
# tiles' reduction steps) are not instrumented; the generic kernels that share their
# tiling are.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
if ! sysroot=$(rustc +nightly --print sysroot 2>/dev/null) || ! ls "$sysroot/lib/rustlib/$host/lib/"*rt.asan* >/dev/null 2>&1; then
  echo "test:asan skipped: no nightly toolchain with the AddressSanitizer runtime for $host"
  exit 0
fi
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/asan}" RUSTFLAGS="-Zsanitizer=address" \
  cargo +nightly test -p senet-kernels --target "$host" --features emulate-avx512 --tests
