#!/usr/bin/env bash
# The objects compiled for AVX2 or AVX-512 (kernels_avx2.cpp,
# kernels_avx512*.cpp) must define no symbol the linker may merge with
# another object's copy: no weak or unique symbols, no COMDAT groups. Such a
# copy of an inline function (a standard-library template, a header's
# helper) would hold AVX instructions, and the linker may keep it for every
# caller, the portable path included (docs/architecture.md, "Kernels and
# ISA dispatch"). Checked in every build type.
#   isa_objects.sh "OBJ1;OBJ2;..."   (CMake's $<TARGET_OBJECTS:loomrt>)
set -euo pipefail
IFS=';' read -ra objects <<< "$1"
checked=0
for o in "${objects[@]}"; do
  case "$o" in
    *kernels_avx2.cpp.o | *kernels_avx512.cpp.o | *kernels_avx512bf16.cpp.o) ;;
    *) continue ;;
  esac
  shared=$(nm --defined-only "$o" | awk '$2 ~ /^[WVu]$/ {print $3}')
  groups=$(readelf -g "$o" | grep -c COMDAT || true)
  if [ -n "$shared" ] || [ "$groups" != 0 ]; then
    echo "FAIL: $o defines symbols another object may share ($groups COMDAT groups):"
    echo "$shared" | c++filt | head -20
    exit 1
  fi
  checked=$((checked + 1))
done
if [ "$checked" != 3 ]; then
  echo "FAIL: found $checked of the 3 ISA kernel objects among: $1"
  exit 1
fi
echo "the 3 ISA kernel objects define no weak symbols and no COMDAT groups"
