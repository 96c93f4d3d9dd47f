// RUN: loom-opt %s --loom-verify-graph -split-input-file -verify-diagnostics | FileCheck %s

// loom-verify-graph checks the frontend contract. The positive case is a
// 1-layer model (dim 16, 2 heads of 8, 1 kv head, hidden 24, vocab 32,
// max_seq 64) that must come out unchanged; every other case breaks one rule.

// A well-formed model passes and is left unchanged.
// CHECK-LABEL: module @ok attributes {loom.model = {dim = 16 : i64, max_seq = 64 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, n_layers = 1 : i64, vocab_size = 32 : i64}}
// CHECK-NEXT:    loom.weight @tok_embeddings : tensor<32x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.attention_norm : tensor<16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wq : tensor<16x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wk : tensor<8x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wv : tensor<8x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.wo : tensor<16x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.ffn_norm : tensor<16xf32>
// CHECK-NEXT:    loom.weight @layers.0.w1 : tensor<24x16xf32>
// CHECK-NEXT:    loom.weight @layers.0.w2 : tensor<16x24xf32>
// CHECK-NEXT:    loom.weight @layers.0.w3 : tensor<24x16xf32>
// CHECK-NEXT:    loom.weight @norm : tensor<16xf32>
// CHECK-NEXT:    func.func @forward(%[[TOK:.*]]: tensor<?xi32>, %[[POS:.*]]: tensor<?xi32>) -> tensor<?x32xf32> {
// CHECK-NEXT:      %[[X:.*]] = loom.embed %[[TOK]], @tok_embeddings
// CHECK-NEXT:      %[[N:.*]] = loom.rms_norm %[[X]], @layers.0.attention_norm
// CHECK-NEXT:      %[[Q:.*]] = loom.linear %[[N]], @layers.0.wq
// CHECK-NEXT:      %[[K:.*]] = loom.linear %[[N]], @layers.0.wk
// CHECK-NEXT:      %[[V:.*]] = loom.linear %[[N]], @layers.0.wv
// CHECK-NEXT:      %[[QR:.*]] = loom.rope %[[Q]], %[[POS]]
// CHECK-NEXT:      %[[KR:.*]] = loom.rope %[[K]], %[[POS]]
// CHECK-NEXT:      %[[C:.*]] = loom.kv_cache layer 0
// CHECK-NEXT:      %[[A:.*]] = loom.attention %[[QR]], %[[KR]], %[[V]], %[[POS]], %[[C]] heads 2 kv_heads 1 head_dim 8
// CHECK-NEXT:      %[[O:.*]] = loom.linear %[[A]], @layers.0.wo
// CHECK-NEXT:      %[[R:.*]] = loom.add %[[X]], %[[O]]
// CHECK-NEXT:      %[[F:.*]] = loom.rms_norm %[[R]], @layers.0.ffn_norm
// CHECK-NEXT:      %[[G:.*]] = loom.linear %[[F]], @layers.0.w1
// CHECK-NEXT:      %[[U:.*]] = loom.linear %[[F]], @layers.0.w3
// CHECK-NEXT:      %[[H:.*]] = loom.silu_mul %[[G]], %[[U]]
// CHECK-NEXT:      %[[D:.*]] = loom.linear %[[H]], @layers.0.w2
// CHECK-NEXT:      %[[R2:.*]] = loom.add %[[R]], %[[D]]
// CHECK-NEXT:      %[[Y:.*]] = loom.rms_norm %[[R2]], @norm
// CHECK-NEXT:      %[[L:.*]] = loom.logits %[[Y]], @tok_embeddings
// CHECK-NEXT:      return %[[L]] : tensor<?x32xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:  }
// The failing cases print nothing.
// CHECK-NOT:   module
module @ok attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
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

// A module without the loom.model config dictionary.
// expected-error @+1 {{module has no 'loom.model' config dictionary}}
module @no_model {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// loom.model lacks a required key (vocab_size).
// expected-error @+1 {{loom.model needs a positive integer 'vocab_size'}}
module @no_vocab attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// loom.model has a non-positive entry (n_kv_heads = 0).
// expected-error @+1 {{loom.model needs a positive integer 'n_kv_heads'}}
module @zero_kv_heads attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 0 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// No func.func @forward (the entry point is misnamed).
// expected-error @+1 {{module has no func.func @forward}}
module @no_forward attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @main(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// @forward takes no positions argument.
module @one_argument attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-error @+1 {{@forward must take (tokens: tensor<?xi32>, positions: tensor<?xi32>[, iterations: i32]) and return the logits}}
  func.func @forward(%tokens: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// @forward takes positions of the wrong element type.
module @i64_positions attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-error @+1 {{@forward must take (tokens: tensor<?xi32>, positions: tensor<?xi32>[, iterations: i32]) and return the logits}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi64>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// @forward returns two results.
module @two_results attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-error @+1 {{@forward must take (tokens: tensor<?xi32>, positions: tensor<?xi32>[, iterations: i32]) and return the logits}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l, %x : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

// @forward returns a value that loom.logits did not produce.
module @not_logits attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 16 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @output : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.linear %x, @output : tensor<?x16xf32> -> tensor<?x16xf32>
    // expected-error @+1 {{@forward must return the result of loom.logits}}
    return %l : tensor<?x16xf32>
  }
}

// -----

// The logits width differs from loom.model vocab_size.
module @vocab_mismatch attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 64 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{logits have 32 columns but loom.model vocab_size is 64}}
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Two kv_cache ops for layer 0.
module @two_caches attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %c0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a0 = loom.attention %q, %k, %v, %pos, %c0 heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    // expected-error @+1 {{layer 0 has more than one kv_cache}}
    %c1 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a1 = loom.attention %q, %k, %v, %pos, %c1 heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %s = loom.add %a0, %a1 : tensor<?x16xf32>
    %l = loom.logits %s, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// A kv_cache shorter than the model's context.
module @short_cache attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    // expected-error @+1 {{kv_cache max_seq 32 differs from loom.model max_seq 64}}
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 32, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 32, kv_heads = 1, head_dim = 8, element_type = f32>
    %l = loom.logits %a, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// One kv_cache shared by two attention ops.
module @shared_cache attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %q = loom.linear %x, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %x, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %x, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    // expected-error @+1 {{kv_cache of layer 0 must have exactly one attention user}}
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a0 = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a1 = loom.attention %q, %k, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %s = loom.add %a0, %a1 : tensor<?x16xf32>
    %l = loom.logits %s, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// A kv_cache nothing reads.
module @dead_cache attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{kv_cache of layer 0 must have exactly one attention user}}
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// A declared weight that no op names.
module @unused_weight attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-error @+1 {{weight @output is declared but never used}}
  loom.weight @output : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}
