// RUN: loom-opt %s --loom-lower-to-dispatch -split-input-file -verify-diagnostics | FileCheck %s

// loom-lower-to-dispatch on @forward as loom-plan-memory leaves it (the
// loom.offset / loom.scratch_offsets / loom.arena_bytes / loom.max_tokens
// below are what test/passes/plan-memory.mlir checks for the same graphs at
// max-tokens=4). Buffer ids follow first use, one per (offset, row_elems);
// buffers are declared first, in id order.

// Unfused 1-layer model: every graph kernel, rope in place (k's with a
// scale and no factors: ones before the scale), slot ids, the attention's
// sliding window after its heads.
// CHECK-LABEL: loom.program @forward arena 1664 max_tokens 4 logits 8 {
// CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 16
// CHECK-NEXT:    loom.buffer 1 offset 256 row_elems 16
// CHECK-NEXT:    loom.buffer 2 offset 512 row_elems 16
// CHECK-NEXT:    loom.buffer 3 offset 768 row_elems 8
// CHECK-NEXT:    loom.buffer 4 offset 896 row_elems 8
// CHECK-NEXT:    loom.buffer 5 offset 512 row_elems 24
// CHECK-NEXT:    loom.buffer 6 offset 896 row_elems 24
// CHECK-NEXT:    loom.buffer 7 offset 1280 row_elems 24
// CHECK-NEXT:    loom.buffer 8 offset 256 row_elems 32
// CHECK-NEXT:    loom.dispatch "embed" ins [] outs [0] weights [@tok_embeddings]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [0] outs [1] weights [@layers.0.attention_norm] fparams [1.000000e-05]
// CHECK-NEXT:    loom.dispatch "matmul" ins [1] outs [2] weights [@layers.0.wq] iparams [0]
// CHECK-NEXT:    loom.dispatch "matmul" ins [1] outs [3] weights [@layers.0.wk] iparams [0]
// CHECK-NEXT:    loom.dispatch "matmul" ins [1] outs [4] weights [@layers.0.wv] iparams [0]
// CHECK-NEXT:    loom.dispatch "rope" ins [2] outs [2] iparams [16, 8] fparams [1.000000e+04]
// CHECK-NEXT:    loom.dispatch "rope" ins [3] outs [3] iparams [8, 8] fparams [1.000000e+04, 1.000000e+00, 1.000000e+00, 1.000000e+00, 1.000000e+00, 1.500000e+00]
// CHECK-NEXT:    loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
// CHECK-NEXT:    loom.dispatch "attention" ins [2, 3, 4] outs [1] iparams [0, 2, 1, 8, 48]
// CHECK-NEXT:    loom.dispatch "matmul" ins [1] outs [2] weights [@layers.0.wo] iparams [0]
// CHECK-NEXT:    loom.dispatch "add" ins [0, 2] outs [1]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [1] outs [0] weights [@layers.0.ffn_norm] fparams [1.000000e-05]
// CHECK-NEXT:    loom.dispatch "matmul" ins [0] outs [5] weights [@layers.0.w1] iparams [0]
// CHECK-NEXT:    loom.dispatch "matmul" ins [0] outs [6] weights [@layers.0.w3] iparams [0]
// CHECK-NEXT:    loom.dispatch "silu_mul" ins [5, 6] outs [7]
// CHECK-NEXT:    loom.dispatch "matmul" ins [7] outs [0] weights [@layers.0.w2] iparams [0]
// CHECK-NEXT:    loom.dispatch "add" ins [1, 0] outs [2]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [2] outs [0] weights [@norm] fparams [1.000000e-05]
// CHECK-NEXT:    loom.dispatch "logits" ins [0] outs [8] weights [@tok_embeddings]
// CHECK-NEXT:  }
// CHECK-NOT:   func.func
module {
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
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1664 : i64, loom.max_tokens = 4 : i64} {
    %x = loom.embed %tokens, @tok_embeddings {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 {loom.offset = 256 : i64} : tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq {loom.offset = 512 : i64} : tensor<?x16xf32> -> tensor<?x16xf32>
    %k = loom.linear %n, @layers.0.wk {loom.offset = 768 : i64} : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv {loom.offset = 896 : i64} : tensor<?x16xf32> -> tensor<?x8xf32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 {loom.offset = 512 : i64} : tensor<?x16xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 1.0e+04 scale 1.5 {loom.offset = 768 : i64} : tensor<?x8xf32>, tensor<?xi32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8 window 48 {loom.offset = 256 : i64}
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %o = loom.linear %a, @layers.0.wo {loom.offset = 512 : i64} : tensor<?x16xf32> -> tensor<?x16xf32>
    %r = loom.add %x, %o {loom.offset = 256 : i64} : tensor<?x16xf32>
    %f = loom.rms_norm %r, @layers.0.ffn_norm eps 1.0e-05 {loom.offset = 0 : i64} : tensor<?x16xf32>
    %g = loom.linear %f, @layers.0.w1 {loom.offset = 512 : i64} : tensor<?x16xf32> -> tensor<?x24xf32>
    %u = loom.linear %f, @layers.0.w3 {loom.offset = 896 : i64} : tensor<?x16xf32> -> tensor<?x24xf32>
    %h = loom.silu_mul %g, %u {loom.offset = 1280 : i64} : tensor<?x24xf32>
    %d = loom.linear %h, @layers.0.w2 {loom.offset = 0 : i64} : tensor<?x24xf32> -> tensor<?x16xf32>
    %r2 = loom.add %r, %d {loom.offset = 512 : i64} : tensor<?x16xf32>
    %y = loom.rms_norm %r2, @norm eps 1.0e-05 {loom.offset = 0 : i64} : tensor<?x16xf32>
    %l = loom.logits %y, @tok_embeddings {loom.offset = 256 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Fused attention: its two scratch slices become buffers 2 and 3 (declared
// before its output), iparams carry the kv slot, head counts and 0.
// CHECK-LABEL: loom.program @forward arena 1536 max_tokens 4 logits 5 {
// CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 16
// CHECK-NEXT:    loom.buffer 1 offset 256 row_elems 16
// CHECK-NEXT:    loom.buffer 2 offset 768 row_elems 32
// CHECK-NEXT:    loom.buffer 3 offset 1280 row_elems 16
// CHECK-NEXT:    loom.buffer 4 offset 512 row_elems 16
// CHECK-NEXT:    loom.buffer 5 offset 512 row_elems 32
// CHECK-NEXT:    loom.dispatch "embed" ins [] outs [0] weights [@tok_embeddings]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [0] outs [1] weights [@layers.0.attention_norm] fparams [1.000000e-05]
// CHECK-NEXT:    loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
// CHECK-NEXT:    loom.dispatch "fused_qkv_attention" ins [1] outs [4] scratch [2, 3] weights [@layers.0.wqkv, @layers.0.wo] iparams [0, 2, 1, 8, 0] fparams [5.000000e+05]
// CHECK-NEXT:    loom.dispatch "add" ins [0, 4] outs [1]
// CHECK-NEXT:    loom.dispatch "logits" ins [1] outs [5] weights [@tok_embeddings]
// CHECK-NEXT:  }
// CHECK-NOT:   loom.attention
module {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32> packed [@layers.0.wq, @layers.0.wk, @layers.0.wv]
  loom.weight @layers.0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1536 : i64, loom.max_tokens = 4 : i64} {
    %x = loom.embed %tokens, @tok_embeddings {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 {loom.offset = 256 : i64} : tensor<?x16xf32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y = loom.fused_qkv_attention %n, %pos, %c, @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 5.0e+05 {loom.offset = 512 : i64, loom.scratch_offsets = array<i64: 768, 1280>}
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %r = loom.add %x, %y {loom.offset = 256 : i64} : tensor<?x16xf32>
    %l = loom.logits %r, @tok_embeddings {loom.offset = 512 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Two layers: kv slots are numbered in program order and each attention
// names its own slot.
// CHECK-LABEL: loom.program @forward arena 1024 max_tokens 2 logits 4 {
// CHECK:         loom.kv_slot 0 layer 3 max_seq 64 kv_heads 1 head_dim 8
// CHECK-NEXT:    loom.dispatch "fused_qkv_attention" {{.*}} weights [@a.wqkv, @a.wo] iparams [0, 2, 1, 8, 0]
// CHECK-NEXT:    loom.kv_slot 1 layer 7 max_seq 64 kv_heads 1 head_dim 8
// CHECK-NEXT:    loom.dispatch "fused_qkv_attention" {{.*}} weights [@a.wqkv, @a.wo] iparams [1, 2, 1, 8, 0, 0, 32]
module {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @a.wqkv : tensor<32x16xf32>
  loom.weight @a.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1024 : i64, loom.max_tokens = 2 : i64} {
    %x = loom.embed %tokens, @tok_embeddings {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %c0 = loom.kv_cache layer 3 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y0 = loom.fused_qkv_attention %x, %pos, %c0, @a.wqkv, @a.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 {loom.offset = 128 : i64, loom.scratch_offsets = array<i64: 256, 512>}
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %c1 = loom.kv_cache layer 7 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y1 = loom.fused_qkv_attention %y0, %pos, %c1, @a.wqkv, @a.wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 window 32 {loom.offset = 0 : i64, loom.scratch_offsets = array<i64: 256, 512>}
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %l = loom.logits %y1, @tok_embeddings {loom.offset = 128 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Error: loom-plan-memory did not run (no plan on the function).
module {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  // expected-error @+1 {{@forward has no memory plan: run loom-plan-memory first}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Error: an op without an arena offset.
module {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 768 : i64, loom.max_tokens = 4 : i64} {
    %x = loom.embed %tokens, @tok_embeddings {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{value has no arena offset: run loom-plan-memory first}}
    %l = loom.logits %x, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Error: fused attention without its scratch offsets.
module {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @wqkv : tensor<32x16xf32>
  loom.weight @wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1024 : i64, loom.max_tokens = 4 : i64} {
    %x = loom.embed %tokens, @tok_embeddings {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    // expected-error @+1 {{fused attention has no scratch offsets: run loom-plan-memory first}}
    %y = loom.fused_qkv_attention %x, %pos, %c, @wqkv, @wo heads 2 kv_heads 1 head_dim 8 theta 1.0e+04 {loom.offset = 256 : i64}
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %l = loom.logits %y, @tok_embeddings {loom.offset = 512 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Error: an op the dispatch form has no kernel for.
module {
  loom.weight @tok_embeddings : tensor<32x16xf32>
  func.func private @hook()
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 768 : i64, loom.max_tokens = 4 : i64} {
    %x = loom.embed %tokens, @tok_embeddings {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{loom-lower-to-dispatch cannot lower 'func.call'}}
    func.call @hook() : () -> ()
    %l = loom.logits %x, @tok_embeddings {loom.offset = 256 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// Error: no func.func @forward to lower.
// expected-error @+1 {{loom-lower-to-dispatch needs a func.func @forward}}
module {
  loom.weight @tok_embeddings : tensor<32x16xf32>
}
