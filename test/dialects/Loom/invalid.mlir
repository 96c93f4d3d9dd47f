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

// loom.weight packed: a packed weight is rank 2.
loom.weight @a : tensor<8x16xf32>
// expected-error @+1 {{'loom.weight' op a packed weight must be rank 2}}
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
  // expected-error @+1 {{'loom.dispatch' op kernel "attention" takes 4 iparams, got 0}}
  loom.dispatch "attention" ins [0, 1, 2] outs [3]
}

// -----

// loom.dispatch: a matmul without its weight.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  loom.buffer 1 offset 256 row_elems 16
  // expected-error @+1 {{'loom.dispatch' op kernel "matmul" takes 1 weights, got 0}}
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

// kv_slot: dims must be positive.
loom.program @forward arena 1024 max_tokens 4 logits 0 {
  loom.buffer 0 offset 0 row_elems 16
  // expected-error @+1 {{'loom.kv_slot' op max_seq must be positive, got 0}}
  loom.kv_slot 0 layer 0 max_seq 0 kv_heads 1 head_dim 8
}
