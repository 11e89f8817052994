#!/usr/bin/env bash
# Emulated build of the CUDA module: csrc/cuda/*.cu (hipified, unmodified) + the real pybind11
# bindings (csrc/bind_cuda.cpp, csrc/cuda/*_bind.cpp) compiled with the host compiler against
# HIP-CPU into mclner._cuda_emu, whose kernels run on the CPU and take CPU tensors' pointers.
# With MCLNER_CUDA_EMULATE=<that file>, impl="cuda" runs through it on CPU tensors (docs/DESIGN.md).
#
# usage: scripts/cuda_emulate.sh [--inplace]   build (or reuse) it and print the module's path on
#        stdout; --inplace also copies it into mclner/ (then MCLNER_CUDA_EMULATE=1 finds it).
# Exit 0: built; 3: cannot be built here (no kit, compiler, perl, pybind11: the reason on stdout and
# stderr); anything else: the build failed (a compiler error in CUDA code is a test failure).
#
# Environment:
#   MCLNER_HIPCPU_KIT   the HIP-CPU kit folder (default: where CI lays its shared tools beside the
#                       checkout); it is copied into the build folder, never written to.
#   MCLNER_CUDA_EMULATE_FLAVOUR   release (default) or asan (AddressSanitizer, -O1 -g, 256 KiB fiber
#                       stacks; load it with libasan preloaded: scripts/cuda_emulate_asan.sh).
#   MCLNER_CUDA_EMULATE_SERIAL=1  blocks one after another (default when TBB's headers are missing
#                       and always for asan); =0 runs blocks in parallel through libstdc++/TBB.
#   CXX (g++), PYTHON (python), MCLNER_BUILD_DIR (build/cuda-emu).
# The build is cached under MCLNER_BUILD_DIR, keyed by a hash of every input (sources, kit, flags,
# compiler, Python): a rerun with nothing changed only prints the path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kit=${MCLNER_HIPCPU_KIT:-$root/../shared/tools/hipcpu}
flavour=${MCLNER_CUDA_EMULATE_FLAVOUR:-release}
CXX=${CXX:-g++}
PYTHON=${PYTHON:-python}
cache=${MCLNER_BUILD_DIR:-$root/build/cuda-emu}

skip() {  # the reason goes to stdout too (in place of the path) for the caller to pass on
  echo "cuda_emulate: cannot build the emulated CUDA module: $*" >&2
  echo "cannot build the emulated CUDA module: $*"
  exit 3
}
[ -f "$kit/HIP-CPU/include/hip/hip_runtime.h" ] || skip "no HIP-CPU kit at $kit (set MCLNER_HIPCPU_KIT)"
for f in tools/hipify-perl patches/hipcpu-exited-threads.patch compat/hipcpu_compat.h compat/cuda_bf16.h; do
  [ -f "$kit/$f" ] || skip "the kit at $kit lacks $f"
done
command -v "$CXX" >/dev/null || skip "no C++ compiler ($CXX)"
command -v perl >/dev/null || skip "no perl (hipify-perl needs it)"
command -v patch >/dev/null || skip "no patch"
"$CXX" -std=c++17 -x c++ -fsyntax-only - <<<'#include <execution>' 2>/dev/null || skip "$CXX lacks C++17 <execution>"
pyinc=$("$PYTHON" -m pybind11 --includes 2>/dev/null) || skip "pybind11 is not installed for $PYTHON (pip install pybind11)"
suffix=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

case $flavour in
  release) opt="-O2 -DNDEBUG"; serial=${MCLNER_CUDA_EMULATE_SERIAL:-} ;;
  asan) opt="-O1 -g -fno-omit-frame-pointer -fsanitize=address -DHIPCPU_FIBER_STACK_BYTES=262144"
        serial=1 ;;  # the kit found ASan with parallel blocks unreliable (wrong values): serial only
  *) echo "cuda_emulate: MCLNER_CUDA_EMULATE_FLAVOUR must be release or asan, got '$flavour'" >&2; exit 2 ;;
esac
if [ -z "$serial" ]; then
  if "$CXX" -std=c++17 -x c++ -fsyntax-only - <<<'#include <tbb/tbb.h>' 2>/dev/null; then serial=0; else serial=1; fi
fi
if [ "$serial" = 1 ]; then opt="$opt -D_GLIBCXX_USE_TBB_PAR_BACKEND=0"; libs="-pthread"; else libs="-ltbb -pthread"; fi
case $flavour in asan) libs="$libs -fsanitize=address" ;; esac

cd "$root"
shopt -s nullglob
kernels=(csrc/cuda/*.cu)
bindings=(csrc/bind_cuda.cpp csrc/cuda/*_bind.cpp)
headers=(csrc/include/mclner/*)
[ ${#kernels[@]} -gt 0 ] || skip "no csrc/cuda/*.cu"

key=$( {
  printf '%s\n' "$flavour" "$serial" "$opt" "$libs" "$suffix" "$pyinc"
  "$CXX" --version | head -1
  sha256sum "${kernels[@]}" "${bindings[@]}" "${headers[@]}" scripts/cuda_emu/* scripts/cuda_emulate.sh
  (cd "$kit" && find HIP-CPU compat patches tools -type f | LC_ALL=C sort | xargs sha256sum)
} | sha256sum | cut -c1-16)
out=$cache/$flavour-$key
module=$out/_cuda_emu$suffix
inplace() { if [ "${1:-}" = --inplace ]; then cp "$module" "$root/mclner/"; fi; }
if [ -f "$module" ]; then inplace "${1:-}"; echo "$module"; exit 0; fi

start=$(date +%s)
tmp=$cache/.tmp-$flavour-$key-$$
rm -rf "$tmp"
mkdir -p "$tmp/kit" "$tmp/gen/include/mclner" "$tmp/obj"
trap 'rm -rf "$tmp"' EXIT
# The kit's HIP-CPU plus its barrier fix and our idle-sleep fix (scripts/cuda_emu/hipcpu-idle.patch).
cp -r "$kit/HIP-CPU" "$kit/compat" "$kit/patches" "$kit/tools" "$tmp/kit/"
chmod -R u+w "$tmp/kit"
patch -s -p1 -d "$tmp/kit/HIP-CPU" < "$kit/patches/hipcpu-exited-threads.patch"
patch -s -p1 -d "$tmp/kit/HIP-CPU" < scripts/cuda_emu/hipcpu-idle.patch

# hipify-perl is the only conversion of the CUDA sources (no edit): the .cu files and the CUDA-only
# headers (*.cuh), which shadow the originals through the include order. #line keeps the .cu lines
# in compiler messages and sanitizer reports.
hipify() {  # src dst
  perl "$tmp/kit/tools/hipify-perl" -hip-kernel-execution-syntax -quiet-warnings "$1" -o="$2"
  sed -i "1a #line 1 \"$1\"" "$2"
}
for h in csrc/include/mclner/*.cuh; do hipify "$h" "$tmp/gen/include/mclner/$(basename "$h")"; done

base=(-std=c++17 $opt -fPIC -pthread -fvisibility=hidden)
kflags=("${base[@]}" -w -I"$tmp/gen/include" -I"$tmp/kit/HIP-CPU/include" -I"$tmp/kit/compat"
  -I"$root/scripts/cuda_emu" -Icsrc/include -include emu_compat.h)
# shellcheck disable=SC2206
bflags=("${base[@]}" -Icsrc/include $pyinc -DMCLNER_CUDA_MODULE=_cuda_emu '-DMCLNER_CUDA_ARCHS="emulated"'
  '-DMCLNER_CUDA_EMULATOR="HIP-CPU"')
# Two compilers at a time (CI has 2 cores); any failure stops the build after its messages.
pids=()
run() { "$@" >&2 & pids+=($!); if [ ${#pids[@]} -ge "${MCLNER_CUDA_EMULATE_JOBS:-2}" ]; then wait -n || fail=1; fi; }
fail=0
for k in "${kernels[@]}"; do
  name=$(basename "$k" .cu)
  hipify "$k" "$tmp/gen/$name.hip.cpp"
  run "$CXX" "${kflags[@]}" -c "$tmp/gen/$name.hip.cpp" -o "$tmp/obj/k_$name.o"
done
for b in "${bindings[@]}"; do run "$CXX" "${bflags[@]}" -c "$b" -o "$tmp/obj/b_$(basename "$b" .cpp).o"; done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || fail=1; done
[ "$fail" = 0 ] || { echo "cuda_emulate: compilation failed" >&2; exit 1; }
# shellcheck disable=SC2086
"$CXX" -shared -o "$tmp/_cuda_emu$suffix" "$tmp"/obj/*.o $libs >&2
# Keep the generated sources beside the module (to read what was compiled); drop older builds.
rm -rf "$tmp/kit/HIP-CPU/external/libco/doc"
find "$cache" -maxdepth 1 -name "$flavour-*" -type d -exec rm -rf {} + 2>/dev/null || true
mv "$tmp" "$out"
trap - EXIT
inplace "${1:-}"
echo "cuda_emulate: built $module in $(( $(date +%s) - start )) s ($flavour, serial=$serial)" >&2
echo "$module"
