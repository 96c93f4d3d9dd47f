// RUN: loom-opt %s --loom-plan-memory=max-tokens=4 -split-input-file -verify-diagnostics | FileCheck %s

// loom-plan-memory at 4 rows: a value of C f32 columns takes 4 * C * 4 bytes,
// rounded up to 64; slices are placed first-fit and freed after the op of the
// value's last use (so a result never shares a slice with its own inputs,
// except loom.rope, which rotates a dying input in place).
// Sizes below: 16 cols = 256 B, 8 cols = 128 B, 24 cols = 384 B, 32 cols = 512 B.
// The expected offsets are worked out by hand from that rule.

// Unfused 1-layer model: reuse of dead slices and rope in place.
//   %n dies at %v, so %a takes its slice (256); %qr/%kr rotate %q/%k in
//   place (512/768); %f fits in the gap at 0 left by %x; %h does not fit any
//   gap and raises the peak to 1280 + 384 = 1664. loom.model says
//   max_tokens 64; the pass option (4) wins.
// CHECK-LABEL: module @reuse
// CHECK:         func.func @forward
// CHECK-SAME:    attributes {loom.arena_bytes = 1664 : i64, loom.max_tokens = 4 : i64}
// CHECK:         %[[X:.*]] = loom.embed {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[N:.*]] = loom.rms_norm %[[X]], {{.*}} {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[Q:.*]] = loom.linear %[[N]], @layers.0.wq {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[K:.*]] = loom.linear %[[N]], @layers.0.wk {loom.offset = 768 : i64}
// CHECK-NEXT:    %[[V:.*]] = loom.linear %[[N]], @layers.0.wv {loom.offset = 896 : i64}
// CHECK-NEXT:    %[[QR:.*]] = loom.rope %[[Q]], {{.*}} {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[KR:.*]] = loom.rope %[[K]], {{.*}} {loom.offset = 768 : i64}
// CHECK-NEXT:    %[[C:.*]] = loom.kv_cache layer 0 :
// CHECK-NEXT:    %[[A:.*]] = loom.attention %[[QR]], %[[KR]], %[[V]], {{.*}} {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[O:.*]] = loom.linear %[[A]], @layers.0.wo {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[R:.*]] = loom.add %[[X]], %[[O]] {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[F:.*]] = loom.rms_norm %[[R]], {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[G:.*]] = loom.linear %[[F]], @layers.0.w1 {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[U:.*]] = loom.linear %[[F]], @layers.0.w3 {loom.offset = 896 : i64}
// CHECK-NEXT:    %[[H:.*]] = loom.silu_mul %[[G]], %[[U]] {loom.offset = 1280 : i64}
// CHECK-NEXT:    %[[D:.*]] = loom.linear %[[H]], @layers.0.w2 {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[R2:.*]] = loom.add %[[R]], %[[D]] {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[Y:.*]] = loom.rms_norm %[[R2]], {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[L:.*]] = loom.logits %[[Y]], @tok_embeddings {loom.offset = 256 : i64}
// CHECK-NEXT:    return %[[L]]
module @reuse attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64, max_tokens = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @layers.0.ffn_norm : tensor<16xf32>
  loom.weight @layers.0.w1 : tensor<24x16xf32>
  loom.weight @layers.0.w2 : tensor<16x24xf32>
  loom.weight @layers.0.w3 : tensor<24x16xf32>
  loom.weight @norm : tensor<16xf32>
  // expected-remark @+1 {{arena peak 1664 bytes for 18 values at 4 rows (without reuse: 4864 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %r = loom.add %x, %o : tensor<?x16xf32>
    %f = loom.rms_norm %r, @layers.0.ffn_norm eps 1.0e-05 : tensor<?x16xf32>
    %g = loom.linear %f, @layers.0.w1 : tensor<?x16xf32> -> tensor<?x24xf32>
    %u = loom.linear %f, @layers.0.w3 : tensor<?x16xf32> -> tensor<?x24xf32>
    %h = loom.silu_mul %g, %u : tensor<?x24xf32>
    %d = loom.linear %h, @layers.0.w2 : tensor<?x24xf32> -> tensor<?x16xf32>
    %r2 = loom.add %r, %d : tensor<?x16xf32>
    %y = loom.rms_norm %r2, @norm eps 1.0e-05 : tensor<?x16xf32>
    %l = loom.logits %y, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Fused attention: its result is placed first (512), then the two scratch
// slices, QKV rows (2 + 2 * 1) * 8 = 32 cols = 512 B at 768 and attention
// rows 16 cols = 256 B at 1280, all while its input %n (256) is still live;
// the scratch is free again for %r and %l.
// CHECK-LABEL: module @fused_scratch
// CHECK:         func.func @forward
// CHECK-SAME:    attributes {loom.arena_bytes = 1536 : i64, loom.max_tokens = 4 : i64}
// CHECK:         %[[X:.*]] = loom.embed {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[N:.*]] = loom.rms_norm %[[X]], {{.*}} {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[C:.*]] = loom.kv_cache layer 0 :
// CHECK-NEXT:    %[[Y:.*]] = loom.fused_qkv_attention %[[N]], {{.*}} {loom.offset = 512 : i64, loom.scratch_offsets = array<i64: 768, 1280>}
// CHECK-NEXT:    %[[R:.*]] = loom.add %[[X]], %[[Y]] {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[L:.*]] = loom.logits %[[R]], @tok_embeddings {loom.offset = 512 : i64}
// CHECK-NEXT:    return %[[L]]
module @fused_scratch {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32> packed [@layers.0.wq, @layers.0.wk, @layers.0.wv]
  loom.weight @layers.0.wo : tensor<16x16xf32>
  // expected-remark @+1 {{arena peak 1536 bytes for 5 values at 4 rows (without reuse: 2304 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y = loom.fused_qkv_attention %n, %pos, %c, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r = loom.add %x, %y : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Rope is not in place when its input is still live afterwards: %xr gets a
// fresh slice; %l then fits in the 512-byte gap freed at offset 0.
// CHECK-LABEL: module @rope_not_in_place
// CHECK:         func.func @forward
// CHECK-SAME:    attributes {loom.arena_bytes = 768 : i64, loom.max_tokens = 4 : i64}
// CHECK:         %[[X:.*]] = loom.embed {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[XR:.*]] = loom.rope %[[X]], {{.*}} {loom.offset = 256 : i64}
// CHECK-NEXT:    %[[S:.*]] = loom.add %[[X]], %[[XR]] {loom.offset = 512 : i64}
// CHECK-NEXT:    %[[L:.*]] = loom.logits %[[S]], @tok_embeddings {loom.offset = 0 : i64}
module @rope_not_in_place {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-remark @+1 {{arena peak 768 bytes for 4 values at 4 rows (without reuse: 1280 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %xr = loom.rope %x, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %s = loom.add %x, %xr : tensor<?x16xf32>
    %l = loom.logits %s, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// A result nobody uses is freed right after its op: %l reuses %dead's slice.
// CHECK-LABEL: module @dead_result
// CHECK:         func.func @forward
// CHECK-SAME:    attributes {loom.arena_bytes = 768 : i64, loom.max_tokens = 4 : i64}
// CHECK:         %[[X:.*]] = loom.embed {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    loom.rms_norm %[[X]], {{.*}} {loom.offset = 256 : i64}
// CHECK-NEXT:    loom.logits %[[X]], @tok_embeddings {loom.offset = 256 : i64}
module @dead_result {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @norm : tensor<16xf32>
  // expected-remark @+1 {{arena peak 768 bytes for 3 values at 4 rows (without reuse: 1024 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %dead = loom.rms_norm %x, @norm eps 1.0e-05 : tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Slices are 64-byte aligned: 5 cols = 80 B and 3 cols = 48 B take 128 B and
// 64 B, so %n sits at 128 and the arena peaks at 256, above the unaligned
// sum of 208 bytes.
// CHECK-LABEL: module @alignment
// CHECK:         func.func @forward
// CHECK-SAME:    attributes {loom.arena_bytes = 256 : i64, loom.max_tokens = 4 : i64}
// CHECK:         %[[X:.*]] = loom.embed {{.*}} {loom.offset = 0 : i64}
// CHECK-NEXT:    %[[N:.*]] = loom.rms_norm %[[X]], {{.*}} {loom.offset = 128 : i64}
// CHECK-NEXT:    loom.logits %[[N]], @output {loom.offset = 0 : i64}
module @alignment {
  loom.weight @tok_embeddings : tensor<32x5xf32>
  loom.weight @norm : tensor<5xf32>
  loom.weight @output : tensor<3x5xf32>
  // expected-remark @+1 {{arena peak 256 bytes for 3 values at 4 rows (without reuse: 320 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x3xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x5xf32>
    %n = loom.rms_norm %x, @norm eps 1.0e-05 : tensor<?x5xf32>
    %l = loom.logits %n, @output : tensor<?x5xf32> -> tensor<?x3xf32>
    return %l : tensor<?x3xf32>
  }
}

// -----

// Without a func.func @forward there is nothing to plan.
// expected-error @+1 {{loom-plan-memory needs a func.func @forward}}
module @no_forward {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @main(%tokens: tensor<?xi32>) -> tensor<?x16xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    return %x : tensor<?x16xf32>
  }
}
