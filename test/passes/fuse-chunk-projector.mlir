// RUN: loom-opt %s --loom-fuse-chunk-projector -split-input-file -verify-diagnostics | FileCheck %s

// loom-fuse-chunk-projector on REFRAG modules whose decoder (dim 16, 2 heads
// of 8, 1 kv head: q|k|v = 16 + 8 + 8 = 32 columns) is in the form
// loom-fuse-projection-attention leaves: @project_chunk gains layer 0's
// RMSNorm and packed projection of its row, returns [row | q | k | v]
// (16 + 32 columns), and layer 0's attention is marked placeholder_qkv.

// CHECK-LABEL: module @fuse
// The decoder: only layer 0's attention is marked; layer 1 reads rows that
// are no longer placeholders.
// CHECK:         func.func @forward
// CHECK:           %[[X:.*]] = loom.embed
// CHECK-NEXT:      %[[N:.*]] = loom.rms_norm %[[X]], @layers.0.attention_norm
// CHECK-NEXT:      %[[C0:.*]] = loom.kv_cache layer 0
// CHECK-NEXT:      %[[Y0:.*]] = loom.fused_qkv_attention %[[N]], %{{.*}}, %[[C0]], @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.000000e+04 placeholder_qkv :
// CHECK:           loom.fused_qkv_attention %{{.*}}, @layers.1.wqkv, @layers.1.wo heads 2 kv_heads 1 head_dim 8 theta 1.000000e+04 :
// The projector: its row, then the same norm (weight and eps) and the packed
// projection, concatenated.
// CHECK:         func.func @project_chunk(%[[E:.*]]: tensor<?x8xf32>) -> tensor<?x48xf32> {
// CHECK-NEXT:      %[[P:.*]] = loom.linear %[[E]], @projector.weight bias @projector.bias : tensor<?x8xf32> -> tensor<?x16xf32>
// CHECK-NEXT:      %[[PN:.*]] = loom.rms_norm %[[P]], @layers.0.attention_norm eps 9.99999974E-6 : tensor<?x16xf32>
// CHECK-NEXT:      %[[PQ:.*]] = loom.linear %[[PN]], @layers.0.wqkv : tensor<?x16xf32> -> tensor<?x32xf32>
// CHECK-NEXT:      %[[ROW:.*]] = loom.concat %[[P]], %[[PQ]] : tensor<?x16xf32>, tensor<?x32xf32> -> tensor<?x48xf32>
// CHECK-NEXT:      return %[[ROW]] : tensor<?x48xf32>
// The other functions are untouched.
// CHECK:         func.func @score_chunk(%{{.*}}: tensor<?x8xf32>) -> tensor<?x1xf32>
module @fuse attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @layers.1.attention_norm : tensor<16xf32>
  loom.weight @layers.1.wqkv : tensor<32x16xf32>
  loom.weight @layers.1.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  loom.weight @projector.bias : tensor<16xf32>
  loom.weight @policy.weight : tensor<1x8xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %n1 = loom.rms_norm %r0, @layers.1.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c1 = loom.kv_cache layer 1 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y1 = loom.fused_qkv_attention %n1, %pos, %c1, @layers.1.wqkv, @layers.1.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r1 = loom.add %r0, %y1 : tensor<?x16xf32>
    %l = loom.logits %r1, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  // expected-remark @below {{projector fused with layer 0's layers.0.attention_norm and layers.0.wqkv: a placeholder row is 16 + 32 floats}}
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %p = loom.linear %e, @projector.weight bias @projector.bias : tensor<?x8xf32> -> tensor<?x16xf32>
    return %p : tensor<?x16xf32>
  }
  func.func @score_chunk(%e: tensor<?x8xf32>) -> tensor<?x1xf32> {
    %s = loom.linear %e, @policy.weight : tensor<?x8xf32> -> tensor<?x1xf32>
    return %s : tensor<?x1xf32>
  }
}

// -----

// A qk_bias stays in the decoder: the projector's q|k|v are x Wqkvᵀ without
// it (the runtime adds the bias to every row, placeholder or not).
// CHECK-LABEL: module @qk_bias
// CHECK:         loom.fused_qkv_attention %{{.*}}, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.000000e+04 qk_bias @layers.0.qk_bias placeholder_qkv :
// CHECK:         func.func @project_chunk(%{{.*}}: tensor<?x8xf32>) -> tensor<?x48xf32>
// CHECK:           loom.linear %{{.*}}, @layers.0.wqkv : tensor<?x16xf32> -> tensor<?x32xf32>
// CHECK-NOT:       loom.add_row_bias
// CHECK:           return
module @qk_bias attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.qk_bias : tensor<24xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 qk_bias @layers.0.qk_bias
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %l = loom.logits %r0, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  // expected-remark @below {{a placeholder row is 16 + 32 floats}}
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x16xf32>
    return %p : tensor<?x16xf32>
  }
}

// -----

// Already fused (the attention is marked): nothing changes, no remark.
// CHECK-LABEL: module @again
// CHECK:         placeholder_qkv
// CHECK-NOT:     placeholder_qkv
// CHECK:         func.func @project_chunk(%{{.*}}: tensor<?x8xf32>) -> tensor<?x48xf32>
// CHECK-NOT:       loom.rms_norm
// CHECK:           loom.concat
// CHECK-NOT:       loom.concat
module @again attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  loom.weight @projector.wide : tensor<32x8xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 placeholder_qkv
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %l = loom.logits %r0, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x48xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x16xf32>
    %q = loom.linear %e, @projector.wide : tensor<?x8xf32> -> tensor<?x32xf32>
    %r = loom.concat %p, %q : tensor<?x16xf32>, tensor<?x32xf32> -> tensor<?x48xf32>
    return %r : tensor<?x48xf32>
  }
}

// -----

// Not a REFRAG module (no loom.refrag): left alone, silently, even with a
// function named @project_chunk.
// CHECK-LABEL: module @plain
// CHECK-NOT:     placeholder_qkv
// CHECK:         func.func @project_chunk(%{{.*}}: tensor<?x8xf32>) -> tensor<?x16xf32>
// CHECK-NOT:       loom.rms_norm
module @plain {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %l = loom.logits %r0, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x16xf32>
    return %p : tensor<?x16xf32>
  }
}

// -----

// Before loom-fuse-projection-attention (separate q/k/v linears): not fused,
// with a remark saying which pass to run first.
// CHECK-LABEL: module @unfused_attention
// CHECK:         func.func @project_chunk(%{{.*}}: tensor<?x8xf32>) -> tensor<?x16xf32>
// CHECK-NOT:       loom.concat
module @unfused_attention attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  // expected-remark @below {{projector not fused into the decoder: the embedding does not feed a loom.rms_norm whose only use is a loom.fused_qkv_attention (run loom-fuse-projection-attention first)}}
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
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x16xf32>
    return %p : tensor<?x16xf32>
  }
}

// -----

// The normalised rows have a second use (here a debug output): the norm is
// not the attention's alone, so nothing is fused.
// CHECK-LABEL: module @shared_norm
// CHECK-NOT:     placeholder_qkv
// CHECK:         func.func @project_chunk(%{{.*}}: tensor<?x8xf32>) -> tensor<?x16xf32>
module @shared_norm attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  // expected-remark @below {{projector not fused into the decoder: the embedding does not feed a loom.rms_norm whose only use is a loom.fused_qkv_attention}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %l = loom.logits %r0, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l, %n0 : tensor<?x32xf32>, tensor<?x16xf32>
  }
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x16xf32>
    return %p : tensor<?x16xf32>
  }
}

// -----

// A projector whose rows are not the decoder's width: not fused.
// CHECK-LABEL: module @narrow_projector
// CHECK-NOT:     placeholder_qkv
module @narrow_projector attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<12x8xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %l = loom.logits %r0, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  // expected-remark @below {{projector not fused into the decoder: @project_chunk does not return one row of the decoder's 16 columns}}
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x12xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x12xf32>
    return %p : tensor<?x12xf32>
  }
}

// -----

// A REFRAG module without a projector function: a remark, nothing else.
// CHECK-LABEL: module @no_projector
// expected-remark @below {{projector not fused into the decoder: the module lacks @forward or @project_chunk}}
module @no_projector attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// A @project_chunk that does not return rows at all: not fused, no crash.
// CHECK-LABEL: module @ids_projector
// CHECK:         func.func @project_chunk(%{{.*}}: tensor<?xi32>) -> tensor<?xi32>
module @ids_projector attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %l = loom.logits %r0, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  // expected-remark @below {{projector not fused into the decoder: @project_chunk does not return one row of the decoder's 16 columns}}
  func.func @project_chunk(%ids: tensor<?xi32>) -> tensor<?xi32> {
    return %ids : tensor<?xi32>
  }
}

// -----

// @project_chunk is referred to (a loom.chunk_placeholder expects its
// 16-column row): its type must not change, so nothing is fused.
// CHECK-LABEL: module @referenced_projector
// CHECK-NOT:     placeholder_qkv
// CHECK:         func.func @project_chunk(%{{.*}}: tensor<?x8xf32>) -> tensor<?x16xf32>
// CHECK:         loom.chunk_placeholder %{{.*}} k 4 encoder @encode_chunk projector @project_chunk
module @referenced_projector attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @encoder.tok_emb : tensor<32x8xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %n0 = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %n0, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r0 = loom.add %x, %y0 : tensor<?x16xf32>
    %l = loom.logits %r0, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  func.func @encode_chunk(%ids: tensor<?xi32>) -> tensor<1x8xf32> {
    %e = loom.embed %ids, @encoder.tok_emb : tensor<?xi32> -> tensor<?x8xf32>
    %cls = loom.take_row %e row 0 : tensor<?x8xf32> -> tensor<1x8xf32>
    return %cls : tensor<1x8xf32>
  }
  // expected-remark @below {{projector not fused into the decoder: @project_chunk is referred to in the module}}
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x16xf32>
    return %p : tensor<?x16xf32>
  }
  func.func @assemble(%ids: tensor<?xi32>) -> tensor<1x16xf32> {
    %p = loom.chunk_placeholder %ids k 4 encoder @encode_chunk projector @project_chunk : tensor<?xi32> -> tensor<1x16xf32>
    return %p : tensor<1x16xf32>
  }
}

// -----

// The embedding's norm feeds the second attention (the first reads the
// embedding itself): the runtime takes q|k|v only in the first, so nothing
// is fused.
// CHECK-LABEL: module @not_first
// CHECK-NOT:     placeholder_qkv
module @not_first attributes {loom.refrag = {cls_token_id = 1 : i64, encoder_dim = 8 : i64, max_chunk_len = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32>
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @layers.1.attention_norm : tensor<16xf32>
  loom.weight @layers.1.wqkv : tensor<32x16xf32>
  loom.weight @layers.1.wo : tensor<16x16xf32>
  loom.weight @projector.weight : tensor<16x8xf32>
  // expected-remark @below {{projector not fused into the decoder: the attention the embedding's norm feeds is not @forward's first}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %x, %pos, %c0, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %n1 = loom.rms_norm %x, @layers.1.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    %c1 = loom.kv_cache layer 1 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y1 = loom.fused_qkv_attention %n1, %pos, %c1, @layers.1.wqkv, @layers.1.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r = loom.add %y0, %y1 : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
  func.func @project_chunk(%e: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %p = loom.linear %e, @projector.weight : tensor<?x8xf32> -> tensor<?x16xf32>
    return %p : tensor<?x16xf32>
  }
}
