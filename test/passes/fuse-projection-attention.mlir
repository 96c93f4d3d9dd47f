// RUN: loom-opt %s --loom-fuse-projection-attention -split-input-file | FileCheck %s

// loom-fuse-projection-attention on a 1-layer block (dim 16, 2 heads of 8,
// 1 kv head): Q/K/V projections, rope, attention and the output projection
// become one loom.fused_qkv_attention over a packed [Wq; Wk; Wv] weight,
// unless some part of the pattern does not hold.

// The full block fuses; the packed weight is 16 + 8 + 8 = 32 rows of 16.
// CHECK-LABEL: module @fuse
// CHECK:         loom.weight @layers.0.attention_norm : tensor<16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wqkv : tensor<32x16xf32> packed [@layers.0.wq, @layers.0.wk, @layers.0.wv]
// CHECK-NEXT:    loom.weight @layers.0.wq : tensor<16x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wk : tensor<8x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wv : tensor<8x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wo : tensor<16x16xf32>
// CHECK:         func.func @forward(%[[TOK:.*]]: tensor<?xi32>, %[[POS:.*]]: tensor<?xi32>)
// CHECK:           %[[X:.*]] = loom.embed %[[TOK]]
// CHECK-NEXT:      %[[N:.*]] = loom.rms_norm %[[X]]
// CHECK-NEXT:      %[[C:.*]] = loom.kv_cache layer 0
// CHECK-NEXT:      %[[Y:.*]] = loom.fused_qkv_attention %[[N]], %[[POS]], %[[C]], @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 5.000000e+05 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
// CHECK-NEXT:      %[[R:.*]] = loom.add %[[X]], %[[Y]]
// CHECK-NOT:       loom.linear
// CHECK-NOT:       loom.rope
// CHECK-NOT:       loom.attention
// CHECK:           loom.logits %[[R]], @tok_embeddings
module @fuse {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 5.0e+05 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 5.0e+05 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %r = loom.add %x, %o : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Two layers fuse independently, each into its own packed weight; names
// without a common dotted prefix pack as plain @wqkv, and a clash with an
// existing symbol is renamed rather than overwritten.
// CHECK-LABEL: module @two_layers
// CHECK:         loom.weight @wqkv : tensor<4x4xf32>
// CHECK-NEXT:    loom.weight @[[P0:wqkv_[0-9]+]] : tensor<32x16xf32> packed [@q0, @k0, @v0]
// CHECK-NEXT:    loom.weight @q0
// CHECK:         loom.weight @[[P1:b.1.wqkv]] : tensor<32x16xf32> packed [@b.1.wq, @b.1.wk, @b.1.wv]
// CHECK-NEXT:    loom.weight @b.1.wq
// CHECK:         func.func @forward
// CHECK:           %[[C0:.*]] = loom.kv_cache layer 0
// CHECK-NEXT:      %[[Y0:.*]] = loom.fused_qkv_attention %{{.*}}, %{{.*}}, %[[C0]], @[[P0]], @o0 heads 2 kv_heads 1 head_dim 8 theta 1.000000e+04
// CHECK:           %[[C1:.*]] = loom.kv_cache layer 1
// CHECK-NEXT:      %[[Y1:.*]] = loom.fused_qkv_attention %[[Y0]], %{{.*}}, %[[C1]], @[[P1]], @b.1.wo heads 2 kv_heads 1 head_dim 8 theta 1.000000e+04
// CHECK-NOT:       loom.attention
// CHECK:           loom.logits %[[Y1]]
module @two_layers {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @wqkv : tensor<4x4xf32>
  loom.weight @q0 : tensor<16x16xf32>
  loom.weight @k0 : tensor<8x16xf32>
  loom.weight @v0 : tensor<8x16xf32>
  loom.weight @o0 : tensor<16x16xf32>
  loom.weight @b.1.wq : tensor<16x16xf32>
  loom.weight @b.1.wk : tensor<8x16xf32>
  loom.weight @b.1.wv : tensor<8x16xf32>
  loom.weight @b.1.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @q0 : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @k0 : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @v0 : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @o0 : tensor<?x16xf32> -> tensor<?x16xf32>
    %q1 = loom.linear %o, @b.1.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k1 = loom.linear %o, @b.1.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v1 = loom.linear %o, @b.1.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr1 = loom.rope %q1, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr1 = loom.rope %k1, %pos head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c1 = loom.kv_cache layer 1 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a1 = loom.attention %qr1, %kr1, %v1, %pos, %c1 heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o1 = loom.linear %a1, @b.1.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %l = loom.logits %o1, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: K is projected from a different input than Q and V.
// CHECK-LABEL: module @different_inputs
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         loom.rope
// CHECK:         loom.rope
// CHECK:         loom.attention
// CHECK:         loom.linear {{.*}} @layers.0.wo
module @different_inputs {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %l = loom.logits %o, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: the Q projection has a second use (erasing it would break it).
// CHECK-LABEL: module @two_uses
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         %[[Q:.*]] = loom.linear %{{.*}}, @layers.0.wq
// CHECK:         loom.rope %[[Q]]
// CHECK:         loom.attention
// CHECK:         loom.add %[[Q]], %{{.*}}
module @two_uses {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
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
    %s = loom.add %q, %o : tensor<?x16xf32>
    %l = loom.logits %s, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: the attention result has a second use besides the projection.
// CHECK-LABEL: module @attention_two_uses
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         %[[A:.*]] = loom.attention
// CHECK:         loom.linear %[[A]], @layers.0.wo
// CHECK:         loom.add %[[A]], %{{.*}}
module @attention_two_uses {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
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
    %s = loom.add %a, %o : tensor<?x16xf32>
    %l = loom.logits %s, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: K's rope uses other positions than the attention op.
// CHECK-LABEL: module @rope_positions
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         func.func @forward(%[[TOK:.*]]: tensor<?xi32>, %[[POS:.*]]: tensor<?xi32>)
// CHECK:         loom.rope %{{.*}}, %[[POS]]
// CHECK:         loom.rope %{{.*}}, %[[TOK]]
// CHECK:         loom.attention
module @rope_positions {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %tokens head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %l = loom.logits %o, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: Q and K are rotated with different theta.
// CHECK-LABEL: module @rope_theta
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         loom.rope {{.*}} theta 1.000000e+04
// CHECK:         loom.rope {{.*}} theta 5.000000e+05
// CHECK:         loom.attention
module @rope_theta {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 5.0e+05 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %l = loom.logits %o, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: the ropes rotate heads of 4 while attention uses heads of 8.
// CHECK-LABEL: module @rope_head_dim
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         loom.rope {{.*}} head_dim 4
// CHECK:         loom.attention {{.*}} head_dim 8
module @rope_head_dim {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 4 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 4 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %l = loom.logits %o, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: the attention result feeds the residual add directly, with no
// output projection.
// CHECK-LABEL: module @no_output_projection
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         %[[A:.*]] = loom.attention
// CHECK-NEXT:    loom.add %{{.*}}, %[[A]]
module @no_output_projection {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r = loom.add %x, %a : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No fusion: Q is not rotated (attention reads the projection directly).
// CHECK-LABEL: module @no_rope
// CHECK-NOT:     packed
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         loom.attention
module @no_rope {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %kr = loom.rope %k, %pos head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %q, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %l = loom.logits %o, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Projections stored in different formats (loom.weight's `storage`: the
// packed tensor would have one type) stay apart; projections stored alike
// pack, and the packed weight is stored as its parts.
// CHECK-LABEL: module @storage
// CHECK:         loom.weight @l0.wq : tensor<16x16xf32> {storage = "q4_k"}
// CHECK:         loom.weight @l1.wqkv : tensor<32x16xf32> packed [@l1.wq, @l1.wk, @l1.wv] {storage = "q4_k"}
// CHECK:         func.func @forward
// CHECK:           loom.linear %{{.*}}, @l0.wq
// CHECK:           loom.attention
// CHECK:           loom.fused_qkv_attention %{{.*}}, @l1.wqkv, @l1.wo
module @storage {
  loom.weight @l0.wq : tensor<16x16xf32> {storage = "q4_k"}
  loom.weight @l0.wk : tensor<8x16xf32> {storage = "q4_k"}
  loom.weight @l0.wv : tensor<8x16xf32> {storage = "q6_k"}
  loom.weight @l0.wo : tensor<16x16xf32>
  loom.weight @l1.wq : tensor<16x16xf32> {storage = "q4_k"}
  loom.weight @l1.wk : tensor<8x16xf32> {storage = "q4_k"}
  loom.weight @l1.wv : tensor<8x16xf32> {storage = "q4_k"}
  loom.weight @l1.wo : tensor<16x16xf32>
  func.func @forward(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
    %q = loom.linear %x, @l0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @l0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @l0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 5.0e+05 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 5.0e+05 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @l0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %q1 = loom.linear %o, @l1.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k1 = loom.linear %o, @l1.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v1 = loom.linear %o, @l1.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr1 = loom.rope %q1, %pos head_dim 8 theta 5.0e+05 : tensor<?x16xf32>, tensor<?xi32>
    %kr1 = loom.rope %k1, %pos head_dim 8 theta 5.0e+05 : tensor<?x8xf32>, tensor<?xi32>
    %c1 = loom.kv_cache layer 1 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a1 = loom.attention %qr1, %kr1, %v1, %pos, %c1 heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o1 = loom.linear %a1, @l1.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    return %o1 : tensor<?x16xf32>
  }
}

// -----

// RoPE frequency factors and scale (Llama 3.1's, YaRN's rope scaling) move
// onto the fused op; q and k ropes with different factors do not fuse.
// CHECK-LABEL: module @freq_factors
// CHECK:         loom.fused_qkv_attention {{.*}} head_dim 8 theta 5.000000e+05 freq_factors [1.000000e+00, 2.000000e+00, 4.000000e+00, 8.000000e+00] rope_scale 1.250000e+00 :
// CHECK-LABEL: module @freq_factors_differ
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         loom.attention
module @freq_factors {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 5.0e+05 freq_factors [1.0, 2.0, 4.0, 8.0] scale 1.25 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 5.0e+05 freq_factors [1.0, 2.0, 4.0, 8.0] scale 1.25 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %r = loom.add %x, %o : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

module @freq_factors_differ {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 5.0e+05 freq_factors [1.0, 2.0, 4.0, 8.0] : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 5.0e+05 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %r = loom.add %x, %o : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Qwen 2's q/k/v biases: q|k's packed as qk_bias, v's its own v_bias; the
// attention's sliding window carries over. A bias already folded into a
// projection has no place in the fused op: that block stays as it is.
// CHECK-LABEL: module @v_bias
// CHECK:         loom.weight @layers.0.qk_bias : tensor<24xf32> packed [@layers.0.bq, @layers.0.bk]
// CHECK:         loom.fused_qkv_attention {{.*}} theta 5.000000e+05 window 16 qk_bias @layers.0.qk_bias v_bias @layers.0.bv :
// CHECK-NOT:     loom.add_row_bias
// CHECK-NOT:     loom.attention
// CHECK-LABEL: module @folded_bias
// CHECK-NOT:     loom.fused_qkv_attention
// CHECK:         loom.attention
module @v_bias {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.bq : tensor<16xf32>
  loom.weight @layers.0.bk : tensor<8xf32>
  loom.weight @layers.0.bv : tensor<8xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q0 = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k0 = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v0 = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %q = loom.add_row_bias %q0, @layers.0.bq : tensor<?x16xf32>
    %k = loom.add_row_bias %k0, @layers.0.bk : tensor<?x8xf32>
    %v = loom.add_row_bias %v0, @layers.0.bv : tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 5.0e+05 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 5.0e+05 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8 window 16
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %r = loom.add %x, %o : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

module @folded_bias {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.bv : tensor<8xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv bias @layers.0.bv : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 5.0e+05 : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 5.0e+05 : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %r = loom.add %x, %o : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}
