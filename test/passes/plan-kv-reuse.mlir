// RUN: split-file %s %t

// loom-plan-kv-reuse: the physical KV caches each policy needs for a looped
// model, as the runtime counts them (runtime/src/session.cpp slotsPerToken;
// docs/looped-blocks.md): at r iterations with C core layers,
//   caches = fixed + min(ceil(C r / divisor), cap or unbounded)
// where fixed counts the attention layers outside the loop, and
//   full, skip, latest-m4, available-m4, always-last-m4: divisor 1, no cap
//   compress-sN: cap N;  compress-rN: divisor N;  compress-anchor: cap 9 C.
// They come as remarks on the loom.loop and as the module's loom.kv_plans
// (policy, fixed_slots, core_divisor, core_slot_cap; a cap of 0 is none).
// One position of one cache here is 2 (K, V) * 2 kv heads * 8 * 4 bytes =
// 128 bytes; the caches hold max_seq = 64 positions. P / C / A = attention
// layers before, inside and after the loop.

// core2.mlir: P = 1, C = 2, A = 1 (fixed 2), default 6 iterations (max 8,
// run-time count); the model of plan-memory-loop.mlir and
// lower-to-dispatch-loop.mlir.
//   full:        2 + 2 r          -> r = 6: 14 caches, r = 4: 10
//   compress-s2: 2 + min(2 r, 2)  -> 4 caches at any r
// RUN: loom-opt %t/core2.mlir --loom-plan-kv-reuse=policies=full,compress-s2 --mlir-print-op-on-diagnostic=false -o %t/core2.out 2>&1 | FileCheck %s --check-prefix=S2
// RUN: FileCheck %s --check-prefix=S2-PLANS < %t/core2.out
// S2:      core2.mlir:{{[0-9]+}}:{{[0-9]+}}: remark: kv policy 'full': 14 caches at r = 6 (2 outside the loop + 12 core), 1792 bytes per token, 114688 bytes for 64 positions
// S2-NEXT: loom.loop
// S2:      remark: kv policy 'compress-s2': 4 caches at r = 6 (2 outside the loop + 2 core), 512 bytes per token, 32768 bytes for 64 positions
// S2-NOT:  kv policy
// S2-PLANS: module @core2 attributes {loom.kv_plans = [{core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "full"}, {core_divisor = 1 : i64, core_slot_cap = 2 : i64, fixed_slots = 2 : i64, policy = "compress-s2"}], loom.model =

// The report's r: iterations=4 instead of the loop's default; the plan
// itself does not depend on r.
// RUN: loom-opt %t/core2.mlir --loom-plan-kv-reuse="policies=full,compress-s2 iterations=4" --mlir-print-op-on-diagnostic=false -o %t/core2-r4.out 2>&1 | FileCheck %s --check-prefix=S2-R4
// RUN: FileCheck %s --check-prefix=S2-PLANS < %t/core2-r4.out
// S2-R4: remark: kv policy 'full': 10 caches at r = 4 (2 outside the loop + 8 core), 1280 bytes per token, 81920 bytes for 64 positions
// S2-R4: remark: kv policy 'compress-s2': 4 caches at r = 4 (2 outside the loop + 2 core), 512 bytes per token, 32768 bytes for 64 positions

// The other names at r = 16 (C r = 32): skip and available-m4 store like
// full; compress-rN shares one cache among N consecutive steps,
// ceil(32 / N); compress-anchor keeps the first 8 iterations' caches plus
// one more iteration's that later ones reuse, min(32, 9 * 2) = 18.
// RUN: loom-opt %t/core2.mlir --loom-plan-kv-reuse="policies=skip,available-m4,compress-r1,compress-r2,compress-anchor iterations=16" --mlir-print-op-on-diagnostic=false -o %t/core2-more.out 2>&1 | FileCheck %s --check-prefix=MORE
// RUN: FileCheck %s --check-prefix=MORE-PLANS < %t/core2-more.out
// MORE: remark: kv policy 'skip': 34 caches at r = 16 (2 outside the loop + 32 core), 4352 bytes per token, 278528 bytes for 64 positions
// MORE: remark: kv policy 'available-m4': 34 caches at r = 16 (2 outside the loop + 32 core), 4352 bytes per token, 278528 bytes for 64 positions
// MORE: remark: kv policy 'compress-r1': 34 caches at r = 16 (2 outside the loop + 32 core), 4352 bytes per token, 278528 bytes for 64 positions
// MORE: remark: kv policy 'compress-r2': 18 caches at r = 16 (2 outside the loop + 16 core), 2304 bytes per token, 147456 bytes for 64 positions
// MORE: remark: kv policy 'compress-anchor': 20 caches at r = 16 (2 outside the loop + 18 core), 2560 bytes per token, 163840 bytes for 64 positions
// MORE-NOT: kv policy
// MORE-PLANS: {core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "skip"}
// MORE-PLANS-SAME: {core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "available-m4"}
// MORE-PLANS-SAME: {core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "compress-r1"}
// MORE-PLANS-SAME: {core_divisor = 2 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "compress-r2"}
// MORE-PLANS-SAME: {core_divisor = 1 : i64, core_slot_cap = 18 : i64, fixed_slots = 2 : i64, policy = "compress-anchor"}

// compress-rN for any N in 1..65536, whether or not it divides C: the
// last, partly filled cache rounds up. At r = 5 (C r = 10): compress-r3
// ceil(10 / 3) = 4, compress-r4 ceil(10 / 4) = 3, compress-r5 2,
// compress-r65536 1; compress-s16 caps above C r, so it stores like full.
// RUN: loom-opt %t/core2.mlir --loom-plan-kv-reuse="policies=compress-r3,compress-r4,compress-r5,compress-r65536,compress-s16 iterations=5" --mlir-print-op-on-diagnostic=false -o %t/core2-rn.out 2>&1 | FileCheck %s --check-prefix=RN
// RUN: FileCheck %s --check-prefix=RN-PLANS < %t/core2-rn.out
// RN: remark: kv policy 'compress-r3': 6 caches at r = 5 (2 outside the loop + 4 core), 768 bytes per token, 49152 bytes for 64 positions
// RN: remark: kv policy 'compress-r4': 5 caches at r = 5 (2 outside the loop + 3 core), 640 bytes per token, 40960 bytes for 64 positions
// RN: remark: kv policy 'compress-r5': 4 caches at r = 5 (2 outside the loop + 2 core), 512 bytes per token, 32768 bytes for 64 positions
// RN: remark: kv policy 'compress-r65536': 3 caches at r = 5 (2 outside the loop + 1 core), 384 bytes per token, 24576 bytes for 64 positions
// RN: remark: kv policy 'compress-s16': 12 caches at r = 5 (2 outside the loop + 10 core), 1536 bytes per token, 98304 bytes for 64 positions
// RN-NOT: kv policy
// RN-PLANS: {core_divisor = 3 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "compress-r3"}
// RN-PLANS-SAME: {core_divisor = 65536 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "compress-r65536"}
// RN-PLANS-SAME: {core_divisor = 1 : i64, core_slot_cap = 16 : i64, fixed_slots = 2 : i64, policy = "compress-s16"}

// Errors: an unknown name (the message lists the known ones); N outside
// 1..65536 for compress-sN and compress-rN. The module gets no plan.
// RUN: not loom-opt %t/core2.mlir --loom-plan-kv-reuse=policies=full,lru --mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// UNKNOWN: core2.mlir:1:1: error: unknown KV policy 'lru' (known: full, latest-m4, always-last-m4, compress-s4, compress-s8, compress-r4, compress-anchor, skip, available-m4; compress-sN and compress-rN take 1 <= N <= 65536)
// UNKNOWN-NOT: loom.kv_plans
// RUN: not loom-opt %t/core2.mlir --loom-plan-kv-reuse=policies=compress-s0 --mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s --check-prefix=S0
// S0: error: unknown KV policy 'compress-s0' (known:
// RUN: not loom-opt %t/core2.mlir --loom-plan-kv-reuse=policies=compress-r0 --mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s --check-prefix=R0
// R0: error: unknown KV policy 'compress-r0' (known:
// RUN: not loom-opt %t/core2.mlir --loom-plan-kv-reuse=policies=compress-r65537 --mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s --check-prefix=R65537
// R65537: error: unknown KV policy 'compress-r65537' (known:
// RUN: not loom-opt %t/core2.mlir --loom-plan-kv-reuse=policies=compress-r --mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s --check-prefix=RNONE
// RNONE: error: unknown KV policy 'compress-r' (known:

// core4.mlir: P = 1, C = 4, A = 1 (fixed 2; Huginn's core width), default
// 8: every default policy, at the loop's default, at iterations=4 and at
// iterations=12.
//   full, latest-m4, always-last-m4: 2 + 4 r
//   compress-s4: 2 + min(4 r, 4); compress-s8: 2 + min(4 r, 8)
//   compress-r4: 2 + ceil(4 r / 4) = 2 + r
//   compress-anchor: 2 + min(4 r, 36)
// RUN: loom-opt %t/core4.mlir --loom-plan-kv-reuse --mlir-print-op-on-diagnostic=false -o %t/core4.out 2>&1 | FileCheck %s --check-prefix=R8
// RUN: FileCheck %s --check-prefix=PLANS4 < %t/core4.out
// R8: remark: kv policy 'full': 34 caches at r = 8 (2 outside the loop + 32 core), 4352 bytes per token, 278528 bytes for 64 positions
// R8: remark: kv policy 'latest-m4': 34 caches at r = 8 (2 outside the loop + 32 core), 4352 bytes per token, 278528 bytes for 64 positions
// R8: remark: kv policy 'always-last-m4': 34 caches at r = 8 (2 outside the loop + 32 core), 4352 bytes per token, 278528 bytes for 64 positions
// R8: remark: kv policy 'compress-s4': 6 caches at r = 8 (2 outside the loop + 4 core), 768 bytes per token, 49152 bytes for 64 positions
// R8: remark: kv policy 'compress-s8': 10 caches at r = 8 (2 outside the loop + 8 core), 1280 bytes per token, 81920 bytes for 64 positions
// R8: remark: kv policy 'compress-r4': 10 caches at r = 8 (2 outside the loop + 8 core), 1280 bytes per token, 81920 bytes for 64 positions
// R8: remark: kv policy 'compress-anchor': 34 caches at r = 8 (2 outside the loop + 32 core), 4352 bytes per token, 278528 bytes for 64 positions
// R8-NOT: kv policy
// PLANS4: module @core4 attributes {loom.kv_plans = [
// PLANS4-SAME: {core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "full"},
// PLANS4-SAME: {core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "latest-m4"},
// PLANS4-SAME: {core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "always-last-m4"},
// PLANS4-SAME: {core_divisor = 1 : i64, core_slot_cap = 4 : i64, fixed_slots = 2 : i64, policy = "compress-s4"},
// PLANS4-SAME: {core_divisor = 1 : i64, core_slot_cap = 8 : i64, fixed_slots = 2 : i64, policy = "compress-s8"},
// PLANS4-SAME: {core_divisor = 4 : i64, core_slot_cap = 0 : i64, fixed_slots = 2 : i64, policy = "compress-r4"},
// PLANS4-SAME: {core_divisor = 1 : i64, core_slot_cap = 36 : i64, fixed_slots = 2 : i64, policy = "compress-anchor"}]}

// RUN: loom-opt %t/core4.mlir --loom-plan-kv-reuse=iterations=4 --mlir-print-op-on-diagnostic=false -o /dev/null 2>&1 | FileCheck %s --check-prefix=R4
// R4: remark: kv policy 'full': 18 caches at r = 4 (2 outside the loop + 16 core), 2304 bytes per token, 147456 bytes for 64 positions
// R4: remark: kv policy 'latest-m4': 18 caches at r = 4
// R4: remark: kv policy 'always-last-m4': 18 caches at r = 4
// R4: remark: kv policy 'compress-s4': 6 caches at r = 4 (2 outside the loop + 4 core), 768 bytes per token, 49152 bytes for 64 positions
// R4: remark: kv policy 'compress-s8': 10 caches at r = 4 (2 outside the loop + 8 core), 1280 bytes per token, 81920 bytes for 64 positions
// R4: remark: kv policy 'compress-r4': 6 caches at r = 4 (2 outside the loop + 4 core), 768 bytes per token, 49152 bytes for 64 positions
// R4: remark: kv policy 'compress-anchor': 18 caches at r = 4 (2 outside the loop + 16 core), 2304 bytes per token, 147456 bytes for 64 positions

// r = 12 (C r = 48): compress-anchor reaches its cap of 9 C = 36.
// RUN: loom-opt %t/core4.mlir --loom-plan-kv-reuse="policies=full,compress-r4,compress-anchor iterations=12" --mlir-print-op-on-diagnostic=false -o /dev/null 2>&1 | FileCheck %s --check-prefix=R12
// R12: remark: kv policy 'full': 50 caches at r = 12 (2 outside the loop + 48 core), 6400 bytes per token, 409600 bytes for 64 positions
// R12: remark: kv policy 'compress-r4': 14 caches at r = 12 (2 outside the loop + 12 core), 1792 bytes per token, 114688 bytes for 64 positions
// R12: remark: kv policy 'compress-anchor': 38 caches at r = 12 (2 outside the loop + 36 core), 4864 bytes per token, 311296 bytes for 64 positions

// plain.mlir: no loop, one attention layer: the single plan `full`, one
// cache per layer, whatever policies are asked for.
// RUN: loom-opt %t/plain.mlir --loom-plan-kv-reuse --mlir-print-op-on-diagnostic=false -o %t/plain.out 2>&1 | FileCheck %s --check-prefix=PLAIN
// RUN: loom-opt %t/plain.mlir --loom-plan-kv-reuse=policies=compress-s4 --mlir-print-op-on-diagnostic=false -o %t/plain-s4.out 2>&1 | FileCheck %s --check-prefix=PLAIN
// RUN: FileCheck %s --check-prefix=PLAIN-PLANS < %t/plain.out
// RUN: FileCheck %s --check-prefix=PLAIN-PLANS < %t/plain-s4.out
// PLAIN: plain.mlir:{{[0-9]+}}:3: remark: kv policy 'full': 1 caches at r = 1 (1 outside the loop + 0 core), 128 bytes per token, 8192 bytes for 64 positions
// PLAIN-NEXT: func.func @forward
// PLAIN-NOT: kv policy
// PLAIN-PLANS: module @plain attributes {loom.kv_plans = [{core_divisor = 1 : i64, core_slot_cap = 0 : i64, fixed_slots = 1 : i64, policy = "full"}]}

// nokv.mlir: no attention layer at all: an empty plan list and no remark.
// RUN: loom-opt %t/nokv.mlir --loom-plan-kv-reuse -o %t/nokv.out 2>&1 | count 0
// RUN: FileCheck %s --check-prefix=NOKV < %t/nokv.out
// NOKV: module @nokv attributes {loom.kv_plans = []}

// RUN: not loom-opt %t/empty.mlir --loom-plan-kv-reuse 2>&1 | FileCheck %s --check-prefix=NOFWD
// NOFWD: error: loom-plan-kv-reuse needs a func.func @forward with a body

//--- core2.mlir
module @core2 attributes {loom.model = {dim = 16 : i64, n_layers = 4 : i64, n_heads = 2 : i64, n_kv_heads = 2 : i64, vocab_size = 32 : i64, max_seq = 64 : i64, max_tokens = 4 : i64}} {
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @adapter : tensor<16x32xf32>
  loom.weight @ln_f : tensor<16xf32>
  loom.weight @p0.norm : tensor<16xf32>
  loom.weight @p0.wqkv : tensor<48x16xf32>
  loom.weight @p0.wo : tensor<16x16xf32>
  loom.weight @c0.norm : tensor<16xf32>
  loom.weight @c0.wqkv : tensor<48x16xf32>
  loom.weight @c0.wo : tensor<16x16xf32>
  loom.weight @c0.qk_bias : tensor<32xf32>
  loom.weight @c1.norm : tensor<16xf32>
  loom.weight @c1.wqkv : tensor<48x16xf32>
  loom.weight @c1.wo : tensor<16x16xf32>
  loom.weight @d0.norm : tensor<16xf32>
  loom.weight @d0.wqkv : tensor<48x16xf32>
  loom.weight @d0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %r: i32) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @wte {scale = 4.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    %h0 = loom.rms_norm %x, @p0.norm eps 1.0e-06 : tensor<?x16xf32>
    %k0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %a0 = loom.fused_qkv_attention %h0, %pos, %k0, @p0.wqkv, @p0.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %e = loom.add %x, %a0 : tensor<?x16xf32>
    %s0 = loom.init_state %pos std 0.158113882 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
    %f = loom.loop %s0 count(%r) default 6 max 8 exit "none" threshold 0.0 : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %cat = loom.concat %s, %e : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
      %u = loom.linear %cat, @adapter : tensor<?x32xf32> -> tensor<?x16xf32>
      %h1 = loom.rms_norm %u, @c0.norm eps 1.0e-06 : tensor<?x16xf32>
      %k1 = loom.kv_cache layer 1 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a1 = loom.fused_qkv_attention %h1, %pos, %k1, @c0.wqkv, @c0.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 qk_bias @c0.qk_bias
          : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %u1 = loom.add %u, %a1 : tensor<?x16xf32>
      %h2 = loom.rms_norm %u1, @c1.norm eps 1.0e-06 : tensor<?x16xf32>
      %k2 = loom.kv_cache layer 2 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a2 = loom.fused_qkv_attention %h2, %pos, %k2, @c1.wqkv, @c1.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04
          : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %u2 = loom.add %u1, %a2 : tensor<?x16xf32>
      loom.yield %u2 : tensor<?x16xf32>
    }
    %lat = loom.rms_norm %f, @ln_f eps 1.0e-06 : tensor<?x16xf32>
    %h3 = loom.rms_norm %lat, @d0.norm eps 1.0e-06 : tensor<?x16xf32>
    %k3 = loom.kv_cache layer 3 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %a3 = loom.fused_qkv_attention %h3, %pos, %k3, @d0.wqkv, @d0.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %y = loom.add %lat, %a3 : tensor<?x16xf32>
    %z = loom.rms_norm %y, @ln_f eps 1.0e-06 : tensor<?x16xf32>
    %l = loom.logits %z, @wte : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

//--- core4.mlir
module @core4 {
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @adapter : tensor<16x32xf32>
  loom.weight @wqkv : tensor<48x16xf32>
  loom.weight @wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @wte {scale = 4.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    %k0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %e = loom.fused_qkv_attention %x, %pos, %k0, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %s0 = loom.init_state %pos std 0.158113882 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
    %f = loom.loop %s0 default 8 max 16 exit "none" threshold 0.0 : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %cat = loom.concat %s, %e : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
      %u = loom.linear %cat, @adapter : tensor<?x32xf32> -> tensor<?x16xf32>
      %k1 = loom.kv_cache layer 1 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a1 = loom.fused_qkv_attention %u, %pos, %k1, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %k2 = loom.kv_cache layer 2 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a2 = loom.fused_qkv_attention %a1, %pos, %k2, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %k3 = loom.kv_cache layer 3 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a3 = loom.fused_qkv_attention %a2, %pos, %k3, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %k4 = loom.kv_cache layer 4 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a4 = loom.fused_qkv_attention %a3, %pos, %k4, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      loom.yield %a4 : tensor<?x16xf32>
    }
    %k5 = loom.kv_cache layer 5 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %y = loom.fused_qkv_attention %f, %pos, %k5, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %l = loom.logits %y, @wte : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

//--- plain.mlir
module @plain {
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @wqkv : tensor<48x16xf32>
  loom.weight @wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @wte : tensor<?xi32> -> tensor<?x16xf32>
    %k0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %y = loom.fused_qkv_attention %x, %pos, %k0, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %l = loom.logits %y, @wte : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

//--- nokv.mlir
module @nokv {
  loom.weight @wte : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @wte : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @wte : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

//--- empty.mlir
module @empty {
  func.func private @forward(tensor<?xi32>, tensor<?xi32>) -> tensor<?x32xf32>
}
