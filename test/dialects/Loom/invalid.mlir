// RUN: loom-opt %s -split-input-file -verify-diagnostics

// One case per verifier diagnostic of the loom dialect (LoomOps.cpp and
// LoomDialect.cpp). Shapes follow a tiny model: dim 16, 2 heads of 8,
// 1 kv head, vocab 32.

// !loom.kv_cache: max_seq must be positive.
// expected-error @+1 {{kv_cache max_seq must be positive, got 0}}
func.func private @cache_max_seq(!loom.kv_cache<max_seq = 0, kv_heads = 1, head_dim = 8, element_type = f32>)

// -----

// !loom.kv_cache: kv_heads must be positive.
// expected-error @+1 {{kv_cache kv_heads must be positive, got -1}}
func.func private @cache_kv_heads(!loom.kv_cache<max_seq = 64, kv_heads = -1, head_dim = 8, element_type = f32>)

// -----

// !loom.kv_cache: head_dim must be positive.
// expected-error @+1 {{kv_cache head_dim must be positive, got 0}}
func.func private @cache_head_dim(!loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 0, element_type = f32>)

// -----

// !loom.kv_cache: only f32 caches.
// expected-error @+1 {{kv_cache element_type must be f32, got 'f16'}}
func.func private @cache_element_type(!loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f16>)

// -----

// loom.kv_cache: the layer index is non-negative.
func.func @cache_negative_layer() {
  // expected-error @+1 {{'loom.kv_cache' op layer must be non-negative, got -1}}
  %c = loom.kv_cache layer -1 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return
}

// -----

// loom.weight: element type must be f32.
// expected-error @+1 {{'loom.weight' op weight element type must be f32, got 'f16'}}
loom.weight @half : tensor<16x16xf16>

// -----

// loom.weight: rank 3 is rejected.
// expected-error @+1 {{'loom.weight' op weight must be rank 1 or 2, got rank 3}}
loom.weight @cube : tensor<2x2x2xf32>

// -----

// loom.weight: rank 0 is rejected.
// expected-error @+1 {{'loom.weight' op weight must be rank 1 or 2, got rank 0}}
loom.weight @scalar : tensor<f32>

// -----

// loom.weight: the type must be a static-shape tensor (ODS constraint).
// expected-error @+1 {{'loom.weight' op attribute 'type' failed to satisfy constraint}}
loom.weight @dynamic : tensor<?x16xf32>

// -----

// loom.weight packed: the parts have the packed weight's rank (rank-1
// weights pack too, for the qk_bias; see the looped-block cases below).
loom.weight @a : tensor<8x16xf32>
// expected-error @+1 {{'loom.weight' op packed part @a must be rank 1, got 'tensor<8x16xf32>'}}
loom.weight @packed : tensor<8xf32> packed [@a]

// -----

// loom.weight packed: every part must be a declared loom.weight.
loom.weight @wq : tensor<16x16xf32>
loom.weight @wk : tensor<8x16xf32>
// expected-error @+1 {{'loom.weight' op packed part @wv does not name a loom.weight}}
loom.weight @wqkv : tensor<32x16xf32> packed [@wq, @wk, @wv]

// -----

// loom.weight packed: a part naming a function rather than a weight.
func.func private @wv()
loom.weight @wq : tensor<16x16xf32>
// expected-error @+1 {{'loom.weight' op packed part @wv does not name a loom.weight}}
loom.weight @wqkv : tensor<24x16xf32> packed [@wq, @wv]

// -----

// loom.weight packed: parts must have the packed weight's column count.
loom.weight @wq : tensor<16x16xf32>
loom.weight @wk : tensor<8x12xf32>
loom.weight @wv : tensor<8x16xf32>
// expected-error @+1 {{'loom.weight' op packed part @wk must be rank 2 with 16 columns, got 'tensor<8x12xf32>'}}
loom.weight @wqkv : tensor<32x16xf32> packed [@wq, @wk, @wv]

// -----

// loom.weight packed: a rank-1 part is rejected.
loom.weight @wq : tensor<16x16xf32>
loom.weight @norm : tensor<16xf32>
// expected-error @+1 {{'loom.weight' op packed part @norm must be rank 2 with 16 columns, got 'tensor<16xf32>'}}
loom.weight @wqn : tensor<17x16xf32> packed [@wq, @norm]

// -----

// loom.weight packed: part rows must add up to the packed rows.
loom.weight @wq : tensor<16x16xf32>
loom.weight @wk : tensor<8x16xf32>
loom.weight @wv : tensor<8x16xf32>
// expected-error @+1 {{'loom.weight' op packed parts have 32 rows in total but the weight has 40}}
loom.weight @wqkv : tensor<40x16xf32> packed [@wq, @wk, @wv]

// -----

// loom.weight packed: packing a packed weight is rejected.
loom.weight @wq : tensor<16x16xf32>
loom.weight @wk : tensor<8x16xf32>
loom.weight @wqk : tensor<24x16xf32> packed [@wq, @wk]
// expected-error @+1 {{'loom.weight' op packed part @wqk is itself packed; pack only source weights}}
loom.weight @twice : tensor<40x16xf32> packed [@wqk, @wq]

// -----

// loom.embed: token count and result rows must agree when both are static.
loom.weight @tok_embeddings : tensor<32x16xf32>
func.func @embed_rows(%t: tensor<4xi32>) -> tensor<3x16xf32> {
  // expected-error @+1 {{'loom.embed' op has 4 tokens but 3 result rows}}
  %x = loom.embed %t, @tok_embeddings : tensor<4xi32> -> tensor<3x16xf32>
  return %x : tensor<3x16xf32>
}

// -----

// loom.embed: the table is [vocab, dim] with dim the result's columns.
loom.weight @tok_embeddings : tensor<32x8xf32>
func.func @embed_table(%t: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.embed' op table @tok_embeddings must be [vocab, 16], got 'tensor<32x8xf32>'}}
  %x = loom.embed %t, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
  return %x : tensor<?x16xf32>
}

// -----

// loom.embed: a rank-1 table is rejected.
loom.weight @tok_embeddings : tensor<16xf32>
func.func @embed_table_rank(%t: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.embed' op table @tok_embeddings must be [vocab, 16], got 'tensor<16xf32>'}}
  %x = loom.embed %t, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
  return %x : tensor<?x16xf32>
}

// -----

// loom.embed: the table must be a declared loom.weight.
func.func @embed_missing(%t: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.embed' op table @tok_embeddings does not name a loom.weight}}
  %x = loom.embed %t, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
  return %x : tensor<?x16xf32>
}

// -----

// loom.rms_norm: the scale is [dim].
loom.weight @norm : tensor<8xf32>
func.func @rms_norm_weight(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rms_norm' op weight @norm has shape [8] but the op needs [16]}}
  %y = loom.rms_norm %x, @norm eps 1.0e-05 : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.rms_norm: a rank-2 scale is rejected.
loom.weight @norm : tensor<1x16xf32>
func.func @rms_norm_weight_rank(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rms_norm' op weight @norm has shape [1, 16] but the op needs [16]}}
  %y = loom.rms_norm %x, @norm eps 1.0e-05 : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.linear: the weight is [out, in]; the message names both shapes.
loom.weight @wk : tensor<8x16xf32>
func.func @linear_weight(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.linear' op weight @wk has shape [8, 16] but the op needs [16, 16]}}
  %y = loom.linear %x, @wk : tensor<?x16xf32> -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.linear: a transposed weight is rejected.
loom.weight @w2 : tensor<16x24xf32>
func.func @linear_transposed(%x: tensor<?x16xf32>) -> tensor<?x24xf32> {
  // expected-error @+1 {{'loom.linear' op weight @w2 has shape [16, 24] but the op needs [24, 16]}}
  %y = loom.linear %x, @w2 : tensor<?x16xf32> -> tensor<?x24xf32>
  return %y : tensor<?x24xf32>
}

// -----

// loom.linear: the weight name must be a loom.weight, not another symbol.
func.func private @wq()
func.func @linear_not_weight(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.linear' op weight @wq does not name a loom.weight}}
  %y = loom.linear %x, @wq : tensor<?x16xf32> -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.linear: static input and result rows must agree.
loom.weight @wq : tensor<16x16xf32>
func.func @linear_rows(%x: tensor<4x16xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'loom.linear' op input has 4 rows but result has 2}}
  %y = loom.linear %x, @wq : tensor<4x16xf32> -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

// loom.logits: the classifier is [vocab, dim].
loom.weight @output : tensor<32x8xf32>
func.func @logits_weight(%x: tensor<?x16xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.logits' op weight @output has shape [32, 8] but the op needs [32, 16]}}
  %l = loom.logits %x, @output : tensor<?x16xf32> -> tensor<?x32xf32>
  return %l : tensor<?x32xf32>
}

// -----

// loom.logits: the classifier must be a declared loom.weight.
func.func @logits_missing(%x: tensor<?x16xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.logits' op weight @output does not name a loom.weight}}
  %l = loom.logits %x, @output : tensor<?x16xf32> -> tensor<?x32xf32>
  return %l : tensor<?x32xf32>
}

// -----

// loom.logits: static input and result rows must agree.
loom.weight @output : tensor<32x16xf32>
func.func @logits_rows(%x: tensor<4x16xf32>) -> tensor<1x32xf32> {
  // expected-error @+1 {{'loom.logits' op input has 4 rows but result has 1}}
  %l = loom.logits %x, @output : tensor<4x16xf32> -> tensor<1x32xf32>
  return %l : tensor<1x32xf32>
}

// -----

// loom.rope: head_dim must be even (pairs are rotated).
func.func @rope_odd(%q: tensor<?x15xf32>, %pos: tensor<?xi32>) -> tensor<?x15xf32> {
  // expected-error @+1 {{'loom.rope' op head_dim must be positive and even, got 5}}
  %r = loom.rope %q, %pos head_dim 5 theta 1.0e+04 : tensor<?x15xf32>, tensor<?xi32>
  return %r : tensor<?x15xf32>
}

// -----

// loom.rope: head_dim must be positive.
func.func @rope_zero(%q: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rope' op head_dim must be positive and even, got 0}}
  %r = loom.rope %q, %pos head_dim 0 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
  return %r : tensor<?x16xf32>
}

// -----

// loom.rope: the columns are whole heads.
func.func @rope_columns(%q: tensor<?x12xf32>, %pos: tensor<?xi32>) -> tensor<?x12xf32> {
  // expected-error @+1 {{'loom.rope' op input has 12 columns, not a multiple of head_dim 8}}
  %r = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x12xf32>, tensor<?xi32>
  return %r : tensor<?x12xf32>
}

// -----

// loom.rope: theta must be positive.
func.func @rope_theta(%q: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rope' op theta must be positive}}
  %r = loom.rope %q, %pos head_dim 8 theta 0.0 : tensor<?x16xf32>, tensor<?xi32>
  return %r : tensor<?x16xf32>
}

// -----

// loom.rope: one freq_factor per pair of a head.
func.func @rope_factor_count(%q: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rope' op has 3 freq_factors, expected 4 (head_dim / 2)}}
  %r = loom.rope %q, %pos head_dim 8 theta 1.0e+04 freq_factors [1.0, 2.0, 4.0] : tensor<?x16xf32>, tensor<?xi32>
  return %r : tensor<?x16xf32>
}

// -----

// loom.rope: freq_factors divide frequencies, so they must be positive.
func.func @rope_factor_sign(%q: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rope' op freq_factors[2] is 0.000000e+00, not a positive number}}
  %r = loom.rope %q, %pos head_dim 8 theta 1.0e+04 freq_factors [1.0, 2.0, 0.0, 8.0] : tensor<?x16xf32>, tensor<?xi32>
  return %r : tensor<?x16xf32>
}

// -----

// loom.rope: its scale multiplies cos and sin, a positive number.
func.func @rope_scale_sign(%q: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rope' op rope scale must be a positive number, got 0}}
  %r = loom.rope %q, %pos head_dim 8 theta 1.0e+04 scale 0.0 : tensor<?x16xf32>, tensor<?xi32>
  return %r : tensor<?x16xf32>
}

// -----

// loom.rope: one position per row when both are static.
func.func @rope_positions(%q: tensor<4x16xf32>, %pos: tensor<3xi32>) -> tensor<4x16xf32> {
  // expected-error @+1 {{'loom.rope' op has 3 positions but 4 rows}}
  %r = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<4x16xf32>, tensor<3xi32>
  return %r : tensor<4x16xf32>
}

// -----

// loom.attention: heads, kv_heads and head_dim must be positive.
func.func @attention_zero_heads(%q: tensor<?x16xf32>, %k: tensor<?x8xf32>, %v: tensor<?x8xf32>, %pos: tensor<?xi32>,
                                %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.attention' op heads, kv_heads and head_dim must be positive}}
  %o = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 0 head_dim 8
      : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %o : tensor<?x16xf32>
}

// -----

// loom.attention: a sliding window holds at least the row itself.
func.func @attention_zero_window(%q: tensor<?x16xf32>, %k: tensor<?x8xf32>, %v: tensor<?x8xf32>, %pos: tensor<?xi32>,
                                 %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.attention' op window must be in 1..2147483647 positions, got 0}}
  %o = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8 window 0
      : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %o : tensor<?x16xf32>
}

// -----

// loom.fused_qkv_attention: the same rule for its window.
func.func @fused_negative_window(%x: tensor<?x16xf32>, %pos: tensor<?xi32>,
                                 %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.fused_qkv_attention' op window must be in 1..2147483647 positions, got -3}}
  %0 = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 window -3 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %0 : tensor<?x16xf32>
}

// -----

// loom.attention: query heads are grouped evenly over kv heads.
func.func @attention_grouping(%q: tensor<?x24xf32>, %k: tensor<?x16xf32>, %v: tensor<?x16xf32>, %pos: tensor<?xi32>,
                              %c: !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>) -> tensor<?x24xf32> {
  // expected-error @+1 {{'loom.attention' op heads (3) must be a multiple of kv_heads (2)}}
  %o = loom.attention %q, %k, %v, %pos, %c heads 3 kv_heads 2 head_dim 8
      : tensor<?x24xf32>, tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
  return %o : tensor<?x24xf32>
}

// -----

// loom.attention: q has heads * head_dim columns.
func.func @attention_q_columns(%q: tensor<?x8xf32>, %k: tensor<?x8xf32>, %v: tensor<?x8xf32>, %pos: tensor<?xi32>,
                               %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'loom.attention' op q has 8 columns but heads * head_dim = 16}}
  %o = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
      : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %o : tensor<?x8xf32>
}

// -----

// loom.attention: k (and v) have kv_heads * head_dim columns.
func.func @attention_k_columns(%q: tensor<?x16xf32>, %k: tensor<?x16xf32>, %v: tensor<?x16xf32>, %pos: tensor<?xi32>,
                               %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.attention' op k has 16 columns but kv_heads * head_dim = 8}}
  %o = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
      : tensor<?x16xf32>, tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %o : tensor<?x16xf32>
}

// -----

// loom.attention: the cache's kv heads and head_dim match the op's.
func.func @attention_cache(%q: tensor<?x16xf32>, %k: tensor<?x8xf32>, %v: tensor<?x8xf32>, %pos: tensor<?xi32>,
                           %c: !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 4, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.attention' op cache holds 2 kv heads of head_dim 4 but the op uses 1 kv heads of head_dim 8}}
  %o = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
      : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 4, element_type = f32>
  return %o : tensor<?x16xf32>
}

// -----

// loom.attention: static q and k rows must agree.
func.func @attention_rows(%q: tensor<4x16xf32>, %k: tensor<2x8xf32>, %v: tensor<2x8xf32>, %pos: tensor<?xi32>,
                          %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<4x16xf32> {
  // expected-error @+1 {{'loom.attention' op q has 4 rows but k has 2}}
  %o = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
      : tensor<4x16xf32>, tensor<2x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %o : tensor<4x16xf32>
}

// -----

// loom.fused_qkv_attention: head counts are checked as for loom.attention.
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x16xf32>
func.func @fused_grouping(%x: tensor<?x16xf32>, %pos: tensor<?xi32>,
                          %c: !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.fused_qkv_attention' op heads (3) must be a multiple of kv_heads (2)}}
  %y = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 3 kv_heads 2 head_dim 8 theta 1.0e+04
      : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.fused_qkv_attention: the cache matches the op's kv heads.
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x16xf32>
func.func @fused_cache(%x: tensor<?x16xf32>, %pos: tensor<?xi32>,
                       %c: !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.fused_qkv_attention' op cache holds 2 kv heads of head_dim 8 but the op uses 1 kv heads of head_dim 8}}
  %y = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
      : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.fused_qkv_attention: the packed weight is [(heads + 2 kv_heads) head_dim, dim].
loom.weight @wq : tensor<16x16xf32>
loom.weight @wo : tensor<16x16xf32>
func.func @fused_qkv_weight(%x: tensor<?x16xf32>, %pos: tensor<?xi32>,
                            %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.fused_qkv_attention' op qkv_weight @wq has shape [16, 16] but the op needs [32, 16]}}
  %y = loom.fused_qkv_attention %x, %pos, %c, @wq, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
      : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.fused_qkv_attention: the output projection is [dim, heads head_dim].
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x8xf32>
func.func @fused_out_weight(%x: tensor<?x16xf32>, %pos: tensor<?xi32>,
                            %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.fused_qkv_attention' op out_weight @wo has shape [16, 8] but the op needs [16, 16]}}
  %y = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
      : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.fused_qkv_attention: both weight names must be loom.weight ops.
loom.weight @wqkv : tensor<32x16xf32>
func.func @fused_missing_out(%x: tensor<?x16xf32>, %pos: tensor<?xi32>,
                             %c: !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.fused_qkv_attention' op out_weight @wo does not name a loom.weight}}
  %y = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04
      : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.program: max_tokens must be positive.
// expected-error @+1 {{'loom.program' op max_tokens must be positive, got 0}}
loom.program @forward arena 64 max_tokens 0 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
}

// -----

// loom.program: a buffer of max_tokens rows must fit in the arena.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // 768 + 4 * 16 * 4 = 1024 fits exactly; 832 + 256 = 1088 does not.
  loom.buffer 1 offset 768 row_elems 16
  // expected-error @+1 {{'loom.buffer' op ends at byte 1088, past the arena of 1024 bytes}}
  loom.buffer 2 offset 832 row_elems 16
}

// -----

// loom.program: buffer ids are unique.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.buffer' op duplicate buffer id 0}}
  loom.buffer 0 offset 256 row_elems 16
}

// -----

// loom.program: a buffer needs a non-negative offset.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  // expected-error @+1 {{'loom.buffer' op needs offset >= 0 and row_elems > 0}}
  loom.buffer 0 offset -64 row_elems 16
}

// -----

// loom.program: a buffer needs at least one element per row.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  // expected-error @+1 {{'loom.buffer' op needs offset >= 0 and row_elems > 0}}
  loom.buffer 0 offset 0 row_elems 0
}

// -----

// loom.program: a negative row_elems is rejected too.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  // expected-error @+1 {{'loom.buffer' op needs offset >= 0 and row_elems > 0}}
  loom.buffer 0 offset 0 row_elems -16
}

// -----

// loom.program: kv slot ids are unique.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
  // expected-error @+1 {{'loom.kv_slot' op duplicate kv slot id 0}}
  loom.kv_slot 0 layer 1 max_seq 64 kv_heads 1 head_dim 8
}

// -----

// loom.program: the logits buffer must be declared.
// expected-error @+1 {{'loom.program' op logits buffer 3 is not declared}}
loom.program @forward arena 1024 max_tokens 4 logits 3 {
  loom.buffer 0 offset 0 row_elems 16
}

// -----

// loom.dispatch: input buffers must be declared.
loom.weight @norm : tensor<16xf32>
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op input buffer 1 is not declared}}
  loom.dispatch "rms_norm" ins [1] outs [0] weights [@norm] fparams [1.0e-05]
}

// -----

// loom.dispatch: output buffers must be declared.
loom.weight @norm : tensor<16xf32>
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op output buffer 7 is not declared}}
  loom.dispatch "rms_norm" ins [0] outs [7] weights [@norm] fparams [1.0e-05]
}

// -----

// loom.dispatch: scratch buffers must be declared.
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x16xf32>
loom.program @forward arena 4096 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.buffer 2 offset 512 row_elems 32
  loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
  // expected-error @+1 {{'loom.dispatch' op scratch buffer 3 is not declared}}
  loom.dispatch "fused_qkv_attention" ins [0] outs [1] scratch [2, 3] weights [@wqkv, @wo] iparams [0, 2, 1, 8, 0] fparams [1.0e+04]
}

// -----

// loom.dispatch: the kernel must be one the runtime knows.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op unknown kernel "gelu"}}
  loom.dispatch "gelu" ins [0] outs [0]
}

// -----

// loom.dispatch: each kernel takes a fixed number of parameters (attention
// without iparams).
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 8
  loom.buffer 2 offset 384 row_elems 8
  loom.buffer 3 offset 512 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op kernel "attention" takes 4 to 5 iparams, got 0}}
  loom.dispatch "attention" ins [0, 1, 2] outs [3]
}

// -----

// loom.dispatch: a matmul without its weight.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op kernel "matmul" takes 1 to 2 weights, got 0}}
  loom.dispatch "matmul" ins [0] outs [1] iparams [0]
}

// -----

// loom.dispatch: add takes two inputs.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op kernel "add" takes 2 inputs, got 1}}
  loom.dispatch "add" ins [0] outs [1]
}

// -----

// loom.dispatch: attention's iparams[0] names a slot that is not declared.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 8
  loom.buffer 2 offset 384 row_elems 8
  loom.buffer 3 offset 512 row_elems 16
  loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
  // expected-error @+1 {{'loom.dispatch' op attention needs iparams[0] to name a declared kv slot}}
  loom.dispatch "attention" ins [0, 1, 2] outs [3] iparams [1, 2, 1, 8]
}

// -----

// loom.dispatch: fused attention needs a kv slot too.
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x16xf32>
loom.program @forward arena 4096 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.buffer 2 offset 512 row_elems 32
  loom.buffer 3 offset 1024 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op fused_qkv_attention needs iparams[0] to name a declared kv slot}}
  loom.dispatch "fused_qkv_attention" ins [0] outs [1] scratch [2, 3] weights [@wqkv, @wo] iparams [0, 2, 1, 8, 0] fparams [1.0e+04]
}

// -----

// loom.dispatch: weights must name loom.weight ops.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op weight @norm does not name a loom.weight}}
  loom.dispatch "rms_norm" ins [0] outs [0] weights [@norm] fparams [1.0e-05]
}

// -----

// rms_norm: eps must be positive.
loom.weight @g : tensor<16xf32>
func.func @f(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.rms_norm' op eps must be positive, got -1}}
  %0 = loom.rms_norm %x, @g eps -1.0 : tensor<?x16xf32>
  return %0 : tensor<?x16xf32>
}

// -----

// attention: one position per query row.
func.func @f(%q: tensor<4x16xf32>, %k: tensor<4x8xf32>, %pos: tensor<2xi32>) -> tensor<4x16xf32> {
  %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  // expected-error @+1 {{'loom.attention' op has 2 positions but 4 rows}}
  %0 = loom.attention %q, %k, %k, %pos, %c heads 2 kv_heads 1 head_dim 8 : tensor<4x16xf32>, tensor<4x8xf32>, tensor<2xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %0 : tensor<4x16xf32>
}

// -----

// fused_qkv_attention: rope needs an even head_dim.
loom.weight @wqkv : tensor<15x10xf32>
loom.weight @wo : tensor<10x10xf32>
func.func @f(%x: tensor<?x10xf32>, %pos: tensor<?xi32>) -> tensor<?x10xf32> {
  %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 5, element_type = f32>
  // expected-error @+1 {{'loom.fused_qkv_attention' op head_dim must be positive and even, got 5}}
  %0 = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 5 theta 1.0e+04 : tensor<?x10xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 5, element_type = f32>
  return %0 : tensor<?x10xf32>
}

// -----

// fused_qkv_attention: theta must be positive.
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x16xf32>
func.func @f(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  // expected-error @+1 {{'loom.fused_qkv_attention' op theta must be positive, got -1}}
  %0 = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta -1.0 : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %0 : tensor<?x16xf32>
}

// -----

// fused_qkv_attention: a v_bias comes with a qk_bias (Qwen 2's three).
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x16xf32>
loom.weight @bv : tensor<8xf32>
func.func @f(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  // expected-error @+1 {{'loom.fused_qkv_attention' op has a v_bias without a qk_bias}}
  %0 = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 v_bias @bv : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %0 : tensor<?x16xf32>
}

// -----

// fused_qkv_attention: v_bias is n_kv_heads * head_dim values.
loom.weight @wqkv : tensor<32x16xf32>
loom.weight @wo : tensor<16x16xf32>
loom.weight @qkb : tensor<24xf32>
loom.weight @bv : tensor<16xf32>
func.func @f(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  // expected-error @+1 {{v_bias}}
  %0 = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 qk_bias @qkb v_bias @bv : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
  return %0 : tensor<?x16xf32>
}

// -----

// kv_slot: dims must be positive.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.kv_slot' op max_seq must be positive, got 0}}
  loom.kv_slot 0 layer 0 max_seq 0 kv_heads 1 head_dim 8
}

// -----

//===----------------------------------------------------------------------===//
// Looped blocks (Huginn): loom.loop, loom.yield, loom.concat,
// loom.add_row_bias, fused qk_bias, rank-1 packing and the new dispatch
// kernels. Same tiny shapes, with 2 kv heads (MHA) where attention appears.
//===----------------------------------------------------------------------===//

// loom.loop: at least one iteration by default (the runtime's range is 1..1024).
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op default iterations must be in 1..1024, got 0}}
  %f = loom.loop %s0 default 0 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: a negative default is reported with its sign.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op default iterations must be in 1..1024, got -3}}
  %f = loom.loop %s0 default -3 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the cap is at least the default.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op max iterations (16) must be at least the default (32) and at most 1024}}
  %f = loom.loop %s0 default 32 max 16 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the cap is at most 1024 iterations (the runtime's limit).
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op max iterations (2048) must be at least the default (32) and at most 1024}}
  %f = loom.loop %s0 default 32 max 2048 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: so is the default.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op default iterations must be in 1..1024, got 1025}}
  %f = loom.loop %s0 default 1025 max 1025 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: an exit criterion needs a positive threshold (0 would never,
// or always, stop).
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op exit "kl" needs a positive threshold}}
  %f = loom.loop %s0 default 32 max 32 exit "kl" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: argmax-stability's threshold counts checks: a whole number.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op argmax-stability counts checks: its threshold must be a whole number, got 2.500000e+00}}
  %f = loom.loop %s0 default 32 max 32 exit "argmax-stability" threshold 2.5 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.init_state: a negative std.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.init_state' op std and scale must be finite and non-negative, got std -1.000000e+00 and scale 4.000000e+00}}
  %s0 = loom.init_state %pos std -1.0 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  return %s0 : tensor<?x16xf32>
}

// -----

// loom.init_state: an infinite scale (f32 bits 0x7F800000).
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.init_state' op std and scale must be finite and non-negative, got std 8.700000e-03 and scale INF}}
  %s0 = loom.init_state %pos std 8.7e-03 scale 0x7F800000 : tensor<?xi32> -> tensor<?x16xf32>
  return %s0 : tensor<?x16xf32>
}

// -----

// loom.loop: the exit criterion is one the runtime knows; the message lists them.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op unknown exit criterion "kld" (expected one of none, kl, minp-kl, entropy-diff, latent-diff, cosine, argmax-stability)}}
  %f = loom.loop %s0 default 32 max 32 exit "kld" threshold 1.0e-03 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: a negative threshold.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op threshold must be finite and non-negative, got -1.000000e-03}}
  %f = loom.loop %s0 default 32 max 32 exit "kl" threshold -1.0e-03 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: a NaN threshold (f32 bits 0x7FC00000).
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op threshold must be finite and non-negative, got nan}}
  %f = loom.loop %s0 default 32 max 32 exit "kl" threshold 0x7FC00000 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: an infinite threshold (f32 bits 0x7F800000).
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op threshold must be finite and non-negative, got INF}}
  %f = loom.loop %s0 default 32 max 32 exit "cosine" threshold 0x7F800000 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: an adaptive loop picks its own count; a run-time count is refused.
func.func @f(%pos: tensor<?xi32>, %r: i32) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op an adaptive loop (exit "kl") decides its own count: drop count(...)}}
  %f = loom.loop %s0 count(%r) default 32 max 32 exit "kl" threshold 8.0e-04 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the count operand is an i32 (a parser error).
// expected-note @+1 {{prior use here}}
func.func @f(%pos: tensor<?xi32>, %r: i64) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{use of value '%r' expects different type than prior uses: 'i32' vs 'i64'}}
  %f = loom.loop %s0 count(%r) default 32 max 32 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the body takes the state as its only argument (none here).
func.func @f(%pos: tensor<?xi32>, %e: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op body must take exactly one argument, the state of type 'tensor<?x16xf32>'}}
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
    loom.yield %e : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: two body arguments.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op body must take exactly one argument, the state of type 'tensor<?x16xf32>'}}
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>, %t: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the body argument has the state's type.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op body must take exactly one argument, the state of type 'tensor<?x16xf32>'}}
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x8xf32>):
    %x = loom.concat %s, %s : tensor<?x8xf32>, tensor<?x8xf32> -> tensor<?x16xf32>
    loom.yield %x : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.yield: the next state has the state's type.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    %x = loom.concat %s, %s : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
    // expected-error @+1 {{'loom.yield' op yields 'tensor<?x32xf32>' but the loop state is 'tensor<?x16xf32>'}}
    loom.yield %x : tensor<?x32xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the body ends in a terminator. Without one the generic region
// check fires first (the op is not NoTerminator), so the verifier's own
// "body must end with loom.yield" is only reachable with an unregistered
// terminator-like op.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    // expected-error @+1 {{block with no terminator}}
    %x = loom.add %s, %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: an empty body has no state argument to carry.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op expects a non-empty block}}
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the body is a single block.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  // expected-error @+1 {{'loom.loop' op expects region #0 to have 0 or 1 blocks}}
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    loom.yield %s : tensor<?x16xf32>
  ^bb1:
    loom.yield %s : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: one looped block per model; loops do not nest.
func.func @f(%pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
  %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
  ^bb0(%s: tensor<?x16xf32>):
    %t0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{'loom.loop' op loops do not nest: one looped block per model}}
    %g = loom.loop %t0 default 2 max 2 exit "none" threshold 0.0 : tensor<?x16xf32> {
    ^bb0(%t: tensor<?x16xf32>):
      %x = loom.add %s, %t : tensor<?x16xf32>
      loom.yield %x : tensor<?x16xf32>
    }
    loom.yield %g : tensor<?x16xf32>
  }
  return %f : tensor<?x16xf32>
}

// -----

// loom.loop: the result has the init's type.
func.func @f(%pos: tensor<?xi32>, %s0: tensor<?x8xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.loop' op failed to verify that all of {init, result} have same type}}
  %f = "loom.loop"(%s0) <{default_iterations = 4 : i64, exit = "none", max_iterations = 4 : i64, threshold = 0.0 : f32}> ({
  ^bb0(%s: tensor<?x8xf32>):
    "loom.yield"(%s) : (tensor<?x8xf32>) -> ()
  }) : (tensor<?x8xf32>) -> tensor<?x16xf32>
  return %f : tensor<?x16xf32>
}

// -----

// loom.yield: only inside a loom.loop.
func.func @f(%s: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.yield' op expects parent op 'loom.loop'}}
  loom.yield %s : tensor<?x16xf32>
}

// -----

// loom.concat: the result's columns are the sum of the inputs'.
func.func @f(%a: tensor<?x16xf32>, %b: tensor<?x16xf32>) -> tensor<?x24xf32> {
  // expected-error @+1 {{'loom.concat' op result has 24 columns but the inputs have 16 + 16}}
  %c = loom.concat %a, %b : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x24xf32>
  return %c : tensor<?x24xf32>
}

// -----

// loom.concat: static row counts agree.
func.func @f(%a: tensor<4x16xf32>, %b: tensor<2x16xf32>) -> tensor<4x32xf32> {
  // expected-error @+1 {{'loom.concat' op lhs has 4 rows but rhs has 2}}
  %c = loom.concat %a, %b : tensor<4x16xf32>, tensor<2x16xf32> -> tensor<4x32xf32>
  return %c : tensor<4x32xf32>
}

// -----

// loom.concat: ... and so do the result's.
func.func @f(%a: tensor<4x16xf32>, %b: tensor<?x16xf32>) -> tensor<3x32xf32> {
  // expected-error @+1 {{'loom.concat' op lhs has 4 rows but result has 3}}
  %c = loom.concat %a, %b : tensor<4x16xf32>, tensor<?x16xf32> -> tensor<3x32xf32>
  return %c : tensor<3x32xf32>
}

// -----

// loom.add_row_bias: the bias is [dim].
loom.weight @b : tensor<8xf32>
func.func @f(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.add_row_bias' op bias @b has shape [8] but the op needs [16]}}
  %y = loom.add_row_bias %x, @b : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.add_row_bias: a rank-2 bias is rejected.
loom.weight @b : tensor<1x16xf32>
func.func @f(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.add_row_bias' op bias @b has shape [1, 16] but the op needs [16]}}
  %y = loom.add_row_bias %x, @b : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.add_row_bias: the bias must be a declared loom.weight.
func.func @f(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'loom.add_row_bias' op bias @missing does not name a loom.weight}}
  %y = loom.add_row_bias %x, @missing : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.fused_qkv_attention: qk_bias is [(heads + kv_heads) head_dim].
loom.weight @wqkv : tensor<48x16xf32>
loom.weight @wo : tensor<16x16xf32>
loom.weight @qkb : tensor<16xf32>
func.func @f(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
  // expected-error @+1 {{'loom.fused_qkv_attention' op qk_bias @qkb has shape [16] but the op needs [32]}}
  %y = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 qk_bias @qkb : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.fused_qkv_attention: qk_bias must be a declared loom.weight.
loom.weight @wqkv : tensor<48x16xf32>
loom.weight @wo : tensor<16x16xf32>
func.func @f(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
  %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
  // expected-error @+1 {{'loom.fused_qkv_attention' op qk_bias @qkb does not name a loom.weight}}
  %y = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 qk_bias @qkb : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
  return %y : tensor<?x16xf32>
}

// -----

// loom.weight packed: rank-1 weights pack along dimension 0 (the packed
// qk_bias); no diagnostic.
loom.weight @q_bias : tensor<16xf32>
loom.weight @k_bias : tensor<16xf32>
loom.weight @qk_bias : tensor<32xf32> packed [@q_bias, @k_bias]

// -----

// loom.weight packed: a rank-1 packed weight takes rank-1 parts only.
loom.weight @q_bias : tensor<16xf32>
loom.weight @wk : tensor<16x16xf32>
// expected-error @+1 {{'loom.weight' op packed part @wk must be rank 1, got 'tensor<16x16xf32>'}}
loom.weight @qk_bias : tensor<32xf32> packed [@q_bias, @wk]

// -----

// loom.weight packed: rank-1 part lengths add up to the packed length.
loom.weight @q_bias : tensor<16xf32>
loom.weight @k_bias : tensor<16xf32>
// expected-error @+1 {{'loom.weight' op packed parts have 32 rows in total but the weight has 48}}
loom.weight @qk_bias : tensor<48xf32> packed [@q_bias, @k_bias]

// -----

// loom.dispatch: embed takes at most one fparam (its scale).
loom.weight @wte : tensor<32x16xf32>
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op kernel "embed" takes 0 to 1 fparams, got 2}}
  loom.dispatch "embed" ins [] outs [0] weights [@wte] fparams [8.0, 1.0]
}

// -----

// loom.dispatch: fused attention takes two or three weights (qkv, out, qk_bias).
loom.weight @wqkv : tensor<48x16xf32>
loom.weight @wo : tensor<16x16xf32>
loom.weight @qkb : tensor<32xf32>
loom.program @forward arena 4096 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.buffer 2 offset 512 row_elems 48
  loom.buffer 3 offset 1280 row_elems 16
  loom.kv_slot 0 layer 0 max_seq 64 kv_heads 2 head_dim 8
  // expected-error @+1 {{'loom.dispatch' op kernel "fused_qkv_attention" takes 2 to 4 weights, got 5}}
  loom.dispatch "fused_qkv_attention" ins [0] outs [1] scratch [2, 3] weights [@wqkv, @wo, @qkb, @qkb, @qkb] iparams [0, 2, 2, 8, 0] fparams [5.0e+04]
}

// -----

// loom.dispatch: ... and at least two.
loom.weight @wqkv : tensor<48x16xf32>
loom.program @forward arena 4096 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.buffer 2 offset 512 row_elems 48
  loom.buffer 3 offset 1280 row_elems 16
  loom.kv_slot 0 layer 0 max_seq 64 kv_heads 2 head_dim 8
  // expected-error @+1 {{'loom.dispatch' op kernel "fused_qkv_attention" takes 2 to 4 weights, got 1}}
  loom.dispatch "fused_qkv_attention" ins [0] outs [1] scratch [2, 3] weights [@wqkv] iparams [0, 2, 2, 8, 0] fparams [5.0e+04]
}

// -----

// loom.dispatch: concat takes two inputs.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "concat" takes 2 inputs, got 1}}
  loom.dispatch "concat" ins [0] outs [1]
}

// -----

// loom.dispatch: copy takes one input and no weights.
loom.weight @b : tensor<16xf32>
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op kernel "copy" takes 0 weights, got 1}}
  loom.dispatch "copy" ins [0] outs [1] weights [@b]
}

// -----

// loom.dispatch: add_row_bias names its bias.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op kernel "add_row_bias" takes 1 weights, got 0}}
  loom.dispatch "add_row_bias" ins [0] outs [0]
}

//===----------------------------------------------------------------------===//
// loom.loop_desc and kv_slot loop_layer: a program with three dispatches;
// a valid descriptor is body [1, 2) tail 3.
//===----------------------------------------------------------------------===//

// -----

// loom.loop_desc: a well-formed descriptor (no diagnostic).
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: the body is not empty.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op needs 0 <= body_begin < body_end < tail_end, got 2, 2, 3}}
  loom.loop_desc body [2, 2) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: the body begins before it ends.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op needs 0 <= body_begin < body_end < tail_end, got 2, 1, 3}}
  loom.loop_desc body [2, 1) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: the tail (logits from the state) is not empty.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op needs 0 <= body_begin < body_end < tail_end, got 1, 3, 3}}
  loom.loop_desc body [1, 3) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: the tail ends at the program's last dispatch.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op tail_end 4 must be the number of dispatches (3)}}
  loom.loop_desc body [1, 2) tail 4 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: the state buffer is declared.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op state buffer 5 is not declared}}
  loom.loop_desc body [1, 2) tail 3 state 5 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: ... and so are next_state and latent.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op latent buffer 7 is not declared}}
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 7 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: one looped block per program.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
  // expected-error @+1 {{'loom.loop_desc' op a program has at most one looped block}}
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: layer counts are non-negative.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op layer counts must be non-negative}}
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 1 layers -1 + 1 default 4 max 4 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: the initial state's std and scale are finite and non-negative.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op init_std and init_scale must be finite and non-negative}}
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "none" threshold 0.0 init_std -1.0 init_scale 1.0
}

// -----

// loom.loop_desc: the iteration counts and exit follow loom.loop's rules.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op max iterations (2048) must be at least the default (4) and at most 1024}}
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 2048 exit "none" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.loop_desc: ... the exit criterion included.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  loom.dispatch "copy" ins [0] outs [1]
  loom.dispatch "copy" ins [1] outs [0]
  loom.dispatch "copy" ins [0] outs [1]
  // expected-error @+1 {{'loom.loop_desc' op exit "cosine" needs a positive threshold}}
  loom.loop_desc body [1, 2) tail 3 state 1 next_state 0 latent 1 layers 0 + 1 default 4 max 4 exit "cosine" threshold 0.0 init_std 0.0 init_scale 1.0
}

// -----

// loom.kv_slot: loop_layer is -1 (outside the loop) or a core layer index.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  // expected-error @+1 {{'loom.kv_slot' op loop_layer must be -1 (not in the loop) or a core layer index, got -5}}
  loom.kv_slot 0 layer 0 max_seq 64 kv_heads 2 head_dim 8 {loop_layer = -5}
}

// -----

// REFRAG's chunk encoder ops. Encoder width 32 (4 heads of 8), 17 position
// rows; decoder width 64; chunks of at most k tokens.

// loom.layer_norm: eps must be positive.
loom.weight @ln.w : tensor<32xf32>
loom.weight @ln.b : tensor<32xf32>
func.func @layer_norm_eps(%x: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.layer_norm' op eps must be positive, got 0.000000e+00}}
  %y = loom.layer_norm %x, @ln.w, @ln.b eps 0.0 : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// loom.layer_norm: the scale has one entry per column.
loom.weight @ln.w : tensor<16xf32>
loom.weight @ln.b : tensor<32xf32>
func.func @layer_norm_weight(%x: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.layer_norm' op weight @ln.w has shape [16] but the op needs [32]}}
  %y = loom.layer_norm %x, @ln.w, @ln.b eps 1.0e-05 : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// loom.layer_norm: ... and so has the shift.
loom.weight @ln.w : tensor<32xf32>
loom.weight @ln.b : tensor<1x32xf32>
func.func @layer_norm_bias(%x: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.layer_norm' op bias @ln.b has shape [1, 32] but the op needs [32]}}
  %y = loom.layer_norm %x, @ln.w, @ln.b eps 1.0e-05 : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// loom.layer_norm: both must be declared weights.
loom.weight @ln.w : tensor<32xf32>
func.func @layer_norm_missing_bias(%x: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.layer_norm' op bias @ln.b does not name a loom.weight}}
  %y = loom.layer_norm %x, @ln.w, @ln.b eps 1.0e-05 : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// loom.self_attention: heads x head_dim must be the columns.
func.func @self_attention_columns(%q: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.self_attention' op q has 32 columns but heads * head_dim = 24}}
  %a = loom.self_attention %q, %q, %q heads 3 head_dim 8 : tensor<?x32xf32>
  return %a : tensor<?x32xf32>
}

// -----

// loom.self_attention: heads and head_dim are positive.
func.func @self_attention_heads(%q: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.self_attention' op heads and head_dim must be in 1..1048576}}
  %a = loom.self_attention %q, %q, %q heads -4 head_dim -8 : tensor<?x32xf32>
  return %a : tensor<?x32xf32>
}

// -----

// loom.add_positions: the table is [rows, columns of the input].
loom.weight @pos : tensor<17x16xf32>
func.func @add_positions_table(%x: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.add_positions' op table @pos must be [rows, 32], got 'tensor<17x16xf32>'}}
  %y = loom.add_positions %x, @pos : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// loom.add_positions: a rank-1 table is rejected.
loom.weight @pos : tensor<32xf32>
func.func @add_positions_rank(%x: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.add_positions' op table @pos must be [rows, 32], got 'tensor<32xf32>'}}
  %y = loom.add_positions %x, @pos : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// loom.add_positions: more rows than the table has positions.
loom.weight @pos : tensor<17x32xf32>
func.func @add_positions_rows(%x: tensor<18x32xf32>) -> tensor<18x32xf32> {
  // expected-error @+1 {{'loom.add_positions' op input has 18 rows but the table has only 17 positions}}
  %y = loom.add_positions %x, @pos : tensor<18x32xf32>
  return %y : tensor<18x32xf32>
}

// -----

// loom.add_positions: the table must be a declared weight.
func.func @add_positions_missing(%x: tensor<?x32xf32>) -> tensor<?x32xf32> {
  // expected-error @+1 {{'loom.add_positions' op table @pos does not name a loom.weight}}
  %y = loom.add_positions %x, @pos : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// loom.take_row: the row must be one of the input's (here 3 rows: 0..2).
func.func @take_row_past(%x: tensor<3x32xf32>) -> tensor<1x32xf32> {
  // expected-error @+1 {{'loom.take_row' op row 3 is outside the input's rows}}
  %r = loom.take_row %x row 3 : tensor<3x32xf32> -> tensor<1x32xf32>
  return %r : tensor<1x32xf32>
}

// -----

// loom.take_row: ... and is never negative, even with `?` rows.
func.func @take_row_negative(%x: tensor<?x32xf32>) -> tensor<1x32xf32> {
  // expected-error @+1 {{'loom.take_row' op row -1 is outside the input's rows}}
  %r = loom.take_row %x row -1 : tensor<?x32xf32> -> tensor<1x32xf32>
  return %r : tensor<1x32xf32>
}

// -----

// loom.take_row: the result is one row of the input's width.
func.func @take_row_rows(%x: tensor<?x32xf32>) -> tensor<2x32xf32> {
  // expected-error @+1 {{'loom.take_row' op result must be one row of 32 columns, got 'tensor<2x32xf32>'}}
  %r = loom.take_row %x row 0 : tensor<?x32xf32> -> tensor<2x32xf32>
  return %r : tensor<2x32xf32>
}

// -----

// loom.take_row: ... of its columns too.
func.func @take_row_columns(%x: tensor<?x32xf32>) -> tensor<1x16xf32> {
  // expected-error @+1 {{'loom.take_row' op result must be one row of 32 columns, got 'tensor<1x16xf32>'}}
  %r = loom.take_row %x row 0 : tensor<?x32xf32> -> tensor<1x16xf32>
  return %r : tensor<1x16xf32>
}

// -----

// loom.chunk_placeholder: k is at least 1.
func.func private @encode(tensor<?xi32>) -> tensor<1x32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x64xf32>
func.func @placeholder_k(%ids: tensor<?xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op k must be at least 1, got 0}}
  %p = loom.chunk_placeholder %ids k 0 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: one position, one row.
func.func private @encode(tensor<?xi32>) -> tensor<1x32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x64xf32>
func.func @placeholder_rows(%ids: tensor<?xi32>) -> tensor<?x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op a placeholder is one position: the result must have one row, got 'tensor<?x64xf32>'}}
  %p = loom.chunk_placeholder %ids k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<?x64xf32>
  return %p : tensor<?x64xf32>
}

// -----

// loom.chunk_placeholder: a static chunk has 1..k tokens (5 > k = 4).
func.func private @encode(tensor<5xi32>) -> tensor<1x32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x64xf32>
func.func @placeholder_too_long(%ids: tensor<5xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op a chunk has 1..4 tokens, got 5}}
  %p = loom.chunk_placeholder %ids k 4 encoder @encode projector @project : tensor<5xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: ... and never none.
func.func private @encode(tensor<0xi32>) -> tensor<1x32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x64xf32>
func.func @placeholder_empty(%ids: tensor<0xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op a chunk has 1..4 tokens, got 0}}
  %p = loom.chunk_placeholder %ids k 4 encoder @encode projector @project : tensor<0xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: the encoder names a function (not a weight).
loom.weight @encode : tensor<32x32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x64xf32>
func.func @placeholder_encoder_not_func(%ids: tensor<?xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op encoder @encode does not name a func.func}}
  %p = loom.chunk_placeholder %ids k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: ... and so does the projector.
func.func private @encode(tensor<?xi32>) -> tensor<1x32xf32>
func.func @placeholder_projector_missing(%ids: tensor<?xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op projector @project does not name a func.func}}
  %p = loom.chunk_placeholder %ids k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: the encoder maps the chunk's ids to a row tensor
// (here to a rank-1 vector).
func.func private @encode(tensor<?xi32>) -> tensor<32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x64xf32>
func.func @placeholder_encoder_result(%ids: tensor<?xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op encoder @encode must take token ids and return one embedding row (tensor<1xExf32>), got '(tensor<?xi32>) -> tensor<32xf32>'}}
  %p = loom.chunk_placeholder %ids k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: the encoder takes the placeholder's token type.
func.func private @encode(tensor<?xi32>, tensor<?xi32>) -> tensor<1x32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x64xf32>
func.func @placeholder_encoder_args(%ids: tensor<?xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op encoder @encode must take token ids and return one embedding row (tensor<1xExf32>), got '(tensor<?xi32>, tensor<?xi32>) -> tensor<1x32xf32>'}}
  %p = loom.chunk_placeholder %ids k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: the projector reads the encoder's width (32)...
func.func private @encode(tensor<?xi32>) -> tensor<1x32xf32>
func.func private @project(tensor<?x16xf32>) -> tensor<?x64xf32>
func.func @placeholder_projector_input(%ids: tensor<?xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op projector @project must map 32-wide rows to 64-wide rows, got '(tensor<?x16xf32>) -> tensor<?x64xf32>'}}
  %p = loom.chunk_placeholder %ids k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.chunk_placeholder: ... and writes the placeholder's width (64).
func.func private @encode(tensor<?xi32>) -> tensor<1x32xf32>
func.func private @project(tensor<?x32xf32>) -> tensor<?x48xf32>
func.func @placeholder_projector_result(%ids: tensor<?xi32>) -> tensor<1x64xf32> {
  // expected-error @+1 {{'loom.chunk_placeholder' op projector @project must map 32-wide rows to 64-wide rows, got '(tensor<?x32xf32>) -> tensor<?x48xf32>'}}
  %p = loom.chunk_placeholder %ids k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
  return %p : tensor<1x64xf32>
}

// -----

// loom.expansion_policy: the fraction is in [0, 1].
func.func @policy_fraction_high(%s: tensor<?x1xf32>) -> tensor<?xi1> {
  // expected-error @+1 {{'loom.expansion_policy' op fraction must be in [0, 1], got 1.500000e+00}}
  %e = loom.expansion_policy %s fraction 1.5 : tensor<?x1xf32> -> tensor<?xi1>
  return %e : tensor<?xi1>
}

// -----

func.func @policy_fraction_negative(%s: tensor<?x1xf32>) -> tensor<?xi1> {
  // expected-error @+1 {{'loom.expansion_policy' op fraction must be in [0, 1], got -2.500000e-01}}
  %e = loom.expansion_policy %s fraction -0.25 : tensor<?x1xf32> -> tensor<?xi1>
  return %e : tensor<?xi1>
}

// -----

// loom.expansion_policy: one score (one column) per chunk row.
func.func @policy_scores(%s: tensor<?x2xf32>) -> tensor<?xi1> {
  // expected-error @+1 {{'loom.expansion_policy' op scores must have one column per chunk row, got 'tensor<?x2xf32>'}}
  %e = loom.expansion_policy %s fraction 0.25 : tensor<?x2xf32> -> tensor<?xi1>
  return %e : tensor<?xi1>
}

// -----

// loom.expansion_policy: one flag per score.
func.func @policy_flags(%s: tensor<3x1xf32>) -> tensor<4xi1> {
  // expected-error @+1 {{'loom.expansion_policy' op has 3 scores but 4 flags}}
  %e = loom.expansion_policy %s fraction 0.25 : tensor<3x1xf32> -> tensor<4xi1>
  return %e : tensor<4xi1>
}

// -----

// loom.assemble_sequence: at least one piece (generic form: the custom form
// cannot spell an empty list).
func.func @assemble_empty() -> tensor<?x64xf32> {
  // expected-error @+1 {{'loom.assemble_sequence' op needs at least one piece}}
  %s = "loom.assemble_sequence"() : () -> tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

// -----

// loom.assemble_sequence: every piece has the sequence's width.
func.func @assemble_columns(%a: tensor<1x64xf32>, %b: tensor<?x32xf32>) -> tensor<?x64xf32> {
  // expected-error @+1 {{'loom.assemble_sequence' op piece 'tensor<?x32xf32>' has 32 columns but the sequence has 64}}
  %s = loom.assemble_sequence %a, %b : tensor<1x64xf32>, tensor<?x32xf32> -> tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

// -----

// loom.assemble_sequence: static pieces add up to the result's rows.
func.func @assemble_rows(%a: tensor<1x64xf32>, %b: tensor<4x64xf32>) -> tensor<6x64xf32> {
  // expected-error @+1 {{'loom.assemble_sequence' op pieces have 5 rows but the result 6}}
  %s = loom.assemble_sequence %a, %b : tensor<1x64xf32>, tensor<4x64xf32> -> tensor<6x64xf32>
  return %s : tensor<6x64xf32>
}

// -----

// loom.program: the input buffer (the caller's rows) must be declared.
// expected-error @+1 {{'loom.program' op input buffer 5 is not declared}}
loom.program @project_chunk arena 1024 max_tokens 4 logits 0 input 5 {
  loom.buffer 0 offset 0 row_elems 32
}

// -----

// loom.dispatch: layer_norm takes its scale and shift...
loom.weight @ln.w : tensor<32xf32>
loom.program @encode_chunk arena 1024 max_tokens 4 logits 1 {
  loom.buffer 0 offset 0 row_elems 32
  loom.buffer 1 offset 512 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "layer_norm" takes 2 weights, got 1}}
  loom.dispatch "layer_norm" ins [0] outs [1] weights [@ln.w] fparams [1.0e-05]
}

// -----

// loom.dispatch: ... and its eps.
loom.weight @ln.w : tensor<32xf32>
loom.weight @ln.b : tensor<32xf32>
loom.program @encode_chunk arena 1024 max_tokens 4 logits 1 {
  loom.buffer 0 offset 0 row_elems 32
  loom.buffer 1 offset 512 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "layer_norm" takes 1 fparams, got 0}}
  loom.dispatch "layer_norm" ins [0] outs [1] weights [@ln.w, @ln.b]
}

// -----

// loom.dispatch: gelu_tanh is elementwise on one input.
loom.program @encode_chunk arena 1024 max_tokens 4 logits 1 {
  loom.buffer 0 offset 0 row_elems 32
  loom.buffer 1 offset 512 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "gelu_tanh" takes 1 inputs, got 2}}
  loom.dispatch "gelu_tanh" ins [0, 1] outs [1]
}

// -----

// loom.dispatch: self_attention reads q, k and v...
loom.program @encode_chunk arena 1024 max_tokens 4 logits 1 {
  loom.buffer 0 offset 0 row_elems 32
  loom.buffer 1 offset 512 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "self_attention" takes 3 inputs, got 2}}
  loom.dispatch "self_attention" ins [0, 0] outs [1] iparams [4, 8]
}

// -----

// loom.dispatch: ... with heads and head_dim as iparams.
loom.program @encode_chunk arena 1024 max_tokens 4 logits 1 {
  loom.buffer 0 offset 0 row_elems 32
  loom.buffer 1 offset 512 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "self_attention" takes 2 iparams, got 1}}
  loom.dispatch "self_attention" ins [0, 0, 0] outs [1] iparams [4]
}

// -----

// loom.dispatch: add_positions takes its table.
loom.program @encode_chunk arena 1024 max_tokens 4 logits 1 {
  loom.buffer 0 offset 0 row_elems 32
  loom.buffer 1 offset 512 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "add_positions" takes 1 weights, got 0}}
  loom.dispatch "add_positions" ins [0] outs [1]
}

// -----

// loom.dispatch: take_row takes the row index.
loom.program @encode_chunk arena 1024 max_tokens 4 logits 1 {
  loom.buffer 0 offset 0 row_elems 32
  loom.buffer 1 offset 512 row_elems 32
  // expected-error @+1 {{'loom.dispatch' op kernel "take_row" takes 1 iparams, got 0}}
  loom.dispatch "take_row" ins [0] outs [1]
}

// -----

// linear: the bias matches the output columns.
loom.weight @w : tensor<4x8xf32>
loom.weight @b : tensor<5xf32>
func.func @linear_bias_shape(%x: tensor<?x8xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{'loom.linear' op bias @b has shape [5] but the op needs [4]}}
  %y = loom.linear %x, @w bias @b : tensor<?x8xf32> -> tensor<?x4xf32>
  return %y : tensor<?x4xf32>
}
