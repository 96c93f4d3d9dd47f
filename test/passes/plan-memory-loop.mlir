// RUN: loom-opt %s --loom-plan-memory=max-tokens=4 -split-input-file -verify-diagnostics | FileCheck %s

// loom-plan-memory on models with a loom.loop, at 4 rows: 16 cols = 256 B,
// 32 cols = 512 B; fused attention's scratch is 48 cols = 768 B (QKV rows of
// 2 + 2 * 2 heads of 8) and 16 cols = 256 B. Ops are planned in execution
// order with the body right after the loop op, first fit, as in
// plan-memory.mlir, plus the loop rules:
//  * the loop's state (its init, the body argument and the loop result)
//    is one slice, live to the end of @forward: the loop op gets the
//    init's offset and allocates nothing;
//  * a value the body reads from above (the injection %e) is live to the
//    end too: an adaptive exit runs the ops after the loop between
//    iterations, so they must not reuse it;
//  * the result of the loop's first reader (ln_f: the latent the runtime
//    keeps for warm starts) is live to the end.
// The offsets below are worked out by hand from those rules.

// P = 1, C = 2, A = 1 attention layers (fused, the form the pipeline plans).
//   %x 0, %h0 256, %a0 512 (scratch 768 / 1536, the peak so far 1792);
//   %e = %x + %a0 takes 256 (%h0 died at %a0); %x and %a0 die at %e.
//   %s0 takes the free 0 and keeps it: the loop op says 0.
//   Body: %cat 512 (32 cols), %u 1024, %h1 512 (%cat died at %u), %a1 768,
//   scratch 1280 / 2048 (peak 2304), %u1 512, %h2 768, %a2 1024,
//   %u2 (the next state) 768.
//   After: the latent %lat 512 (never 0 or 256: state and %e are live), then
//   %h3 768, %a3 1024, %y 768, %z 1024, logits 1280; nothing after %lat
//   takes 512.
// CHECK-LABEL: module @core2
// CHECK:         func.func @forward
// CHECK-SAME:    attributes {loom.arena_bytes = 2304 : i64, loom.max_tokens = 4 : i64}
// CHECK-NEXT:    %[[X:.*]] = loom.embed {{.*}} {loom.offset = 0 : i64, scale = 4.000000e+00 : f32}
// CHECK-NEXT:    %[[H0:.*]] = loom.rms_norm %[[X]], @p0.norm {{.*}} {loom.offset = 256 : i64}
// CHECK-NEXT:    loom.kv_cache layer 0
// CHECK-NEXT:    %[[A0:.*]] = loom.fused_qkv_attention %[[H0]], {{.*}} {loom.offset = 512 : i64, loom.scratch_offsets = array<i64: 768, 1536>}
// CHECK-NEXT:    %[[E:.*]] = loom.add %[[X]], %[[A0]] {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[S0:.*]] = loom.init_state {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[F:.*]] = loom.loop %[[S0]] count(%{{.*}}) default 6 max 8 exit "none" threshold 0.000000e+00 attributes {loom.offset = 0 : i64}
// CHECK-NEXT:    ^bb0(%[[S:.*]]: tensor<?x16xf32>):
// CHECK-NEXT:      %[[CAT:.*]] = loom.concat %[[S]], %[[E]] {loom.offset = 512 : i64}
// CHECK-NEXT:      %[[U:.*]] = loom.linear %[[CAT]], @adapter {loom.offset = 1024 : i64}
// CHECK-NEXT:      %[[H1:.*]] = loom.rms_norm %[[U]], @c0.norm {{.*}} {loom.offset = 512 : i64}
// CHECK-NEXT:      loom.kv_cache layer 1
// CHECK-NEXT:      %[[A1:.*]] = loom.fused_qkv_attention %[[H1]], {{.*}} qk_bias @c0.qk_bias {loom.offset = 768 : i64, loom.scratch_offsets = array<i64: 1280, 2048>}
// CHECK-NEXT:      %[[U1:.*]] = loom.add %[[U]], %[[A1]] {loom.offset = 512 : i64}
// CHECK-NEXT:      %[[H2:.*]] = loom.rms_norm %[[U1]], @c1.norm {{.*}} {loom.offset = 768 : i64}
// CHECK-NEXT:      loom.kv_cache layer 2
// CHECK-NEXT:      %[[A2:.*]] = loom.fused_qkv_attention %[[H2]], {{.*}} {loom.offset = 1024 : i64, loom.scratch_offsets = array<i64: 1280, 2048>}
// CHECK-NEXT:      %[[U2:.*]] = loom.add %[[U1]], %[[A2]] {loom.offset = 768 : i64}
// CHECK-NEXT:      loom.yield %[[U2]]
// CHECK-NEXT:    }
// CHECK-NEXT:    %[[LAT:.*]] = loom.rms_norm %[[F]], @ln_f {{.*}} {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[H3:.*]] = loom.rms_norm %[[LAT]], @d0.norm {{.*}} {loom.offset = 768 : i64}
// CHECK-NEXT:    loom.kv_cache layer 3
// CHECK-NEXT:    %[[A3:.*]] = loom.fused_qkv_attention %[[H3]], {{.*}} {loom.offset = 1024 : i64, loom.scratch_offsets = array<i64: 1280, 2048>}
// CHECK-NEXT:    %[[Y:.*]] = loom.add %[[LAT]], %[[A3]] {loom.offset = 768 : i64}
// CHECK-NEXT:    %[[Z:.*]] = loom.rms_norm %[[Y]], @ln_f {{.*}} {loom.offset = 1024 : i64}
// CHECK-NEXT:    %[[L:.*]] = loom.logits %[[Z]], @wte {loom.offset = 1280 : i64}
// CHECK-NEXT:    return %[[L]]

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
  // expected-remark @+1 {{arena peak 2304 bytes for 19 values at 4 rows (without reuse: 9472 bytes)}}
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

// -----

// loom.rope rotates a dying input in place, but neither the injection %e
// nor the state dies inside the body (both are live to the end), so their
// rotations get fresh slices (512, 768); the body's own %u does die at its
// rope, which reuses its slice (512). An adaptive exit ("latent-diff")
// plans the same way.
//   %e 0, %s0 256 (loop 256), %er 512, %sr 768, %cat 1024, %u 512, %ur 512;
//   after: %lat 512 (the next state's slice is free), logits 768.
// CHECK-LABEL: module @rope
// CHECK:         func.func @forward
// CHECK-SAME:    attributes {loom.arena_bytes = 1536 : i64, loom.max_tokens = 4 : i64}
// CHECK-NEXT:    %[[E:.*]] = loom.embed {{.*}} {loom.offset = 0 : i64, scale = 4.000000e+00 : f32}
// CHECK-NEXT:    %[[S0:.*]] = loom.init_state {{.*}} {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[F:.*]] = loom.loop %[[S0]] default 4 max 32 exit "latent-diff" threshold 3.000000e-02 attributes {loom.offset = 256 : i64}
// CHECK-NEXT:    ^bb0(%[[S:.*]]: tensor<?x16xf32>):
// CHECK-NEXT:      %[[ER:.*]] = loom.rope %[[E]], {{.*}} {loom.offset = 512 : i64}
// CHECK-NEXT:      %[[SR:.*]] = loom.rope %[[S]], {{.*}} {loom.offset = 768 : i64}
// CHECK-NEXT:      %[[CAT:.*]] = loom.concat %[[SR]], %[[ER]] {loom.offset = 1024 : i64}
// CHECK-NEXT:      %[[U:.*]] = loom.linear %[[CAT]], @adapter {loom.offset = 512 : i64}
// CHECK-NEXT:      %[[UR:.*]] = loom.rope %[[U]], {{.*}} {loom.offset = 512 : i64}
// CHECK-NEXT:      loom.yield %[[UR]]
// CHECK-NEXT:    }
// CHECK-NEXT:    %[[LAT:.*]] = loom.rms_norm %[[F]], @ln_f {{.*}} {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[L:.*]] = loom.logits %[[LAT]], @wte {loom.offset = 768 : i64}
// CHECK-NEXT:    return %[[L]]
module @rope {
  loom.weight @adapter : tensor<16x32xf32>
  loom.weight @ln_f : tensor<16xf32>
  loom.weight @wte : tensor<32x16xf32>
  // expected-remark @+1 {{arena peak 1536 bytes for 9 values at 4 rows (without reuse: 2816 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %e = loom.embed %tokens, @wte {scale = 4.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    %s0 = loom.init_state %pos std 0.0 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
    %f = loom.loop %s0 default 4 max 32 exit "latent-diff" threshold 3.0e-02 : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %er = loom.rope %e, %pos head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>
      %sr = loom.rope %s, %pos head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>
      %cat = loom.concat %sr, %er : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
      %u = loom.linear %cat, @adapter : tensor<?x32xf32> -> tensor<?x16xf32>
      %ur = loom.rope %u, %pos head_dim 8 theta 5.0e+04 : tensor<?x16xf32>, tensor<?xi32>
      loom.yield %ur : tensor<?x16xf32>
    }
    %lat = loom.rms_norm %f, @ln_f eps 1.0e-06 : tensor<?x16xf32>
    %l = loom.logits %lat, @wte : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}
