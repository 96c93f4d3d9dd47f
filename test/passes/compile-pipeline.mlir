// RUN: loom-opt %s --loom-compile-pipeline -split-input-file -verify-diagnostics | FileCheck %s

// The pipeline loomc runs (verify, fuse, plan memory, lower) on a 1-layer
// model: dim 16, 2 heads of 8, 1 kv head, hidden 24, vocab 32. No max-tokens
// option, so rows come from loom.model max_tokens = 4.

// End to end: the attention block is fused over a packed weight, the arena
// is planned at 4 rows (scratch 512 B + 256 B during the fused op, peak set by
// the FFN at 1280 + 384 = 1664) and the function becomes a loom.program.
// CHECK-LABEL: module @tiny
// CHECK:         loom.weight @layers.0.wqkv : tensor<32x16xf32> packed [@layers.0.wq, @layers.0.wk, @layers.0.wv]
// CHECK-NOT:     func.func
// CHECK-NOT:     loom.linear
// CHECK-NOT:     loom.rope
// CHECK-NOT:     loom.attention
// CHECK:         loom.program @forward arena 1664 max_tokens 4 logits 8 {
// CHECK-NEXT:      loom.buffer 0 offset 0 row_elems 16
// CHECK-NEXT:      loom.buffer 1 offset 256 row_elems 16
// CHECK-NEXT:      loom.buffer 2 offset 768 row_elems 32
// CHECK-NEXT:      loom.buffer 3 offset 1280 row_elems 16
// CHECK-NEXT:      loom.buffer 4 offset 512 row_elems 16
// CHECK-NEXT:      loom.buffer 5 offset 512 row_elems 24
// CHECK-NEXT:      loom.buffer 6 offset 896 row_elems 24
// CHECK-NEXT:      loom.buffer 7 offset 1280 row_elems 24
// CHECK-NEXT:      loom.buffer 8 offset 256 row_elems 32
// CHECK-NEXT:      loom.dispatch "embed" ins [] outs [0] weights [@tok_embeddings]
// CHECK-NEXT:      loom.dispatch "rms_norm" ins [0] outs [1] weights [@layers.0.attention_norm] fparams [1.000000e-05]
// CHECK-NEXT:      loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
// CHECK-NEXT:      loom.dispatch "fused_qkv_attention" ins [1] outs [4] scratch [2, 3] weights [@layers.0.wqkv, @layers.0.wo] iparams [0, 2, 1, 8, 0] fparams [1.000000e+04]
// CHECK-NEXT:      loom.dispatch "add" ins [0, 4] outs [1]
// CHECK-NEXT:      loom.dispatch "rms_norm" ins [1] outs [0] weights [@layers.0.ffn_norm] fparams [1.000000e-05]
// CHECK-NEXT:      loom.dispatch "matmul" ins [0] outs [5] weights [@layers.0.w1] iparams [0]
// CHECK-NEXT:      loom.dispatch "matmul" ins [0] outs [6] weights [@layers.0.w3] iparams [0]
// CHECK-NEXT:      loom.dispatch "silu_mul" ins [5, 6] outs [7]
// CHECK-NEXT:      loom.dispatch "matmul" ins [7] outs [0] weights [@layers.0.w2] iparams [0]
// CHECK-NEXT:      loom.dispatch "add" ins [1, 0] outs [4]
// CHECK-NEXT:      loom.dispatch "rms_norm" ins [4] outs [0] weights [@norm] fparams [1.000000e-05]
// CHECK-NEXT:      loom.dispatch "logits" ins [0] outs [8] weights [@tok_embeddings]
// CHECK-NEXT:    }
module @tiny attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64, max_tokens = 4 : i64}} {
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
  // expected-remark @+2 {{kv policy 'full': 1 caches at r = 1 (1 outside the loop + 0 core), 64 bytes per token, 4096 bytes for 64 positions}}
  // expected-remark @+1 {{arena peak 1664 bytes for 12 values at 4 rows (without reuse: 4480 bytes)}}
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

// The pipeline stops at loom-verify-graph: nothing is fused or lowered.
// CHECK-NOT: module @rejected
module @rejected attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64, max_tokens = 4 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-error @+1 {{weight @spare is declared but never used}}
  loom.weight @spare : tensor<16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Without max_tokens in loom.model (and no option) the plan uses 64 rows:
// 64 * 16 * 4 = 4096 B for the embedding, 64 * 32 * 4 = 8192 B for logits.
// CHECK-LABEL: module @default_rows
// CHECK:         loom.program @forward arena 12288 max_tokens 64 logits 1 {
// CHECK-NEXT:      loom.buffer 0 offset 0 row_elems 16
// CHECK-NEXT:      loom.buffer 1 offset 4096 row_elems 32
// CHECK-NEXT:      loom.dispatch "embed" ins [] outs [0] weights [@tok_embeddings]
// CHECK-NEXT:      loom.dispatch "logits" ins [0] outs [1] weights [@tok_embeddings]
// CHECK-NEXT:    }
module @default_rows attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-remark @+1 {{arena peak 12288 bytes for 2 values at 64 rows (without reuse: 12288 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// A model whose loom.model max_tokens is 0 cannot be planned.
// CHECK-NOT: module @zero_rows
// expected-error @+1 {{max-tokens must be positive, got 0}}
module @zero_rows attributes {loom.model = {dim = 16 : i64, n_layers = 1 : i64, n_heads = 2 : i64, n_kv_heads = 1 : i64, vocab_size = 32 : i64, max_seq = 64 : i64, max_tokens = 0 : i64}} {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}
