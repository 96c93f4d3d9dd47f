// RUN: loom-opt %s | loom-opt | FileCheck %s
// RUN: loom-opt %s --mlir-print-op-generic | loom-opt | FileCheck %s

// Round trip of every loom op and of !loom.kv_cache: a 1-layer model with
// dim 16, 2 heads of 8, 1 kv head, hidden 24, vocab 32, plus a dispatch
// program using every optional clause of loom.dispatch.

// CHECK-LABEL: module @roundtrip
module @roundtrip {
  // CHECK: loom.weight @tok_embeddings : tensor<32x16xf32>
  // CHECK: loom.weight @layers.0.attention_norm : tensor<16xf32>
  // CHECK: loom.weight @layers.0.wq : tensor<16x16xf32>
  // CHECK: loom.weight @layers.0.wk : tensor<8x16xf32>
  // CHECK: loom.weight @layers.0.wv : tensor<8x16xf32>
  // CHECK: loom.weight @layers.0.wqkv : tensor<32x16xf32> packed [@layers.0.wq, @layers.0.wk, @layers.0.wv]
  // CHECK: loom.weight @layers.0.wo : tensor<16x16xf32>
  // CHECK: loom.weight @layers.0.w1 : tensor<24x16xf32>
  // CHECK: loom.weight @layers.0.w3 : tensor<24x16xf32>
  // CHECK: loom.weight @layers.0.w2 : tensor<16x24xf32>
  loom.weight @tok_embeddings : tensor<32x16xf32>
  loom.weight @layers.0.attention_norm : tensor<16xf32>
  loom.weight @layers.0.wq : tensor<16x16xf32>
  loom.weight @layers.0.wk : tensor<8x16xf32>
  loom.weight @layers.0.wv : tensor<8x16xf32>
  loom.weight @layers.0.wqkv : tensor<32x16xf32> packed [@layers.0.wq, @layers.0.wk, @layers.0.wv]
  loom.weight @layers.0.wo : tensor<16x16xf32>
  loom.weight @layers.0.w1 : tensor<24x16xf32>
  loom.weight @layers.0.w3 : tensor<24x16xf32>
  loom.weight @layers.0.w2 : tensor<16x24xf32>

  // CHECK-LABEL: func.func @graph
  // CHECK-SAME: (%[[TOK:.*]]: tensor<?xi32>, %[[POS:.*]]: tensor<?xi32>) -> tensor<?x32xf32>
  func.func @graph(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    // CHECK: %[[X:.*]] = loom.embed %[[TOK]], @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x16xf32>
    // CHECK: %[[N:.*]] = loom.rms_norm %[[X]], @layers.0.attention_norm eps 9.99999974E-6 : tensor<?x16xf32>
    %n = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x16xf32>
    // CHECK: %[[Q:.*]] = loom.linear %[[N]], @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    %q = loom.linear %n, @layers.0.wq : tensor<?x16xf32> -> tensor<?x16xf32>
    // CHECK: %[[K:.*]] = loom.linear %[[N]], @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    %k = loom.linear %n, @layers.0.wk : tensor<?x16xf32> -> tensor<?x8xf32>
    // CHECK: %[[V:.*]] = loom.linear %[[N]], @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    %v = loom.linear %n, @layers.0.wv : tensor<?x16xf32> -> tensor<?x8xf32>
    // CHECK: %[[QR:.*]] = loom.rope %[[Q]], %[[POS]] head_dim 8 theta 1.000000e+04 : tensor<?x16xf32>, tensor<?xi32>
    %qr = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x16xf32>, tensor<?xi32>
    // CHECK: %[[KR:.*]] = loom.rope %[[K]], %[[POS]] head_dim 8 theta 1.000000e+04 : tensor<?x8xf32>, tensor<?xi32>
    %kr = loom.rope %k, %pos head_dim 8 theta 1.0e+04 : tensor<?x8xf32>, tensor<?xi32>
    // CHECK: %[[C:.*]] = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    // CHECK: %[[A:.*]] = loom.attention %[[QR]], %[[KR]], %[[V]], %[[POS]], %[[C]] heads 2 kv_heads 1 head_dim 8 : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %a = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8
        : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?xi32>,
          !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    // CHECK: %[[O:.*]] = loom.linear %[[A]], @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    %o = loom.linear %a, @layers.0.wo : tensor<?x16xf32> -> tensor<?x16xf32>
    // CHECK: %[[R:.*]] = loom.add %[[X]], %[[O]] : tensor<?x16xf32>
    %r = loom.add %x, %o : tensor<?x16xf32>
    // CHECK: %[[G:.*]] = loom.linear %[[R]], @layers.0.w1 : tensor<?x16xf32> -> tensor<?x24xf32>
    %g = loom.linear %r, @layers.0.w1 : tensor<?x16xf32> -> tensor<?x24xf32>
    // CHECK: %[[U:.*]] = loom.linear %[[R]], @layers.0.w3 : tensor<?x16xf32> -> tensor<?x24xf32>
    %u = loom.linear %r, @layers.0.w3 : tensor<?x16xf32> -> tensor<?x24xf32>
    // CHECK: %[[H:.*]] = loom.silu_mul %[[G]], %[[U]] : tensor<?x24xf32>
    %h = loom.silu_mul %g, %u : tensor<?x24xf32>
    // CHECK: %[[D:.*]] = loom.linear %[[H]], @layers.0.w2 : tensor<?x24xf32> -> tensor<?x16xf32>
    %d = loom.linear %h, @layers.0.w2 : tensor<?x24xf32> -> tensor<?x16xf32>
    // CHECK: %[[L:.*]] = loom.logits %[[D]], @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    %l = loom.logits %d, @tok_embeddings : tensor<?x16xf32> -> tensor<?x32xf32>
    // CHECK: return %[[L]] : tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }

  // Static row counts are accepted where they agree.
  // CHECK-LABEL: func.func @fused
  // CHECK-SAME: (%[[X:.*]]: tensor<4x16xf32>, %[[POS:.*]]: tensor<4xi32>)
  func.func @fused(%x: tensor<4x16xf32>, %pos: tensor<4xi32>) -> tensor<4x16xf32> {
    // CHECK: %[[C:.*]] = loom.kv_cache layer 3 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %c = loom.kv_cache layer 3 : !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    // CHECK: %[[Y:.*]] = loom.fused_qkv_attention %[[X]], %[[POS]], %[[C]], @layers.0.wqkv, @layers.0.wo heads 2 kv_heads 1 head_dim 8 theta 5.000000e+05 : tensor<4x16xf32>, tensor<4xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    %y = loom.fused_qkv_attention %x, %pos, %c, @layers.0.wqkv, @layers.0.wo
        heads 2 kv_heads 1 head_dim 8 theta 5.0e+05
        : tensor<4x16xf32>, tensor<4xi32>,
          !loom.kv_cache<max_seq = 64, kv_heads = 1, head_dim = 8, element_type = f32>
    // CHECK: return %[[Y]]
    return %y : tensor<4x16xf32>
  }

  // CHECK-LABEL: loom.program @forward arena 4096 max_tokens 4 logits 3 {
  // CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 16
  // CHECK-NEXT:    loom.buffer 1 offset 256 row_elems 32
  // CHECK-NEXT:    loom.buffer 2 offset 768 row_elems 16
  // CHECK-NEXT:    loom.buffer 3 offset 1024 row_elems 32
  // CHECK-NEXT:    loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
  // CHECK-NEXT:    loom.dispatch "embed" ins [] outs [0] weights [@tok_embeddings]
  // CHECK-NEXT:    loom.dispatch "rms_norm" ins [0] outs [2] weights [@layers.0.attention_norm] fparams [1.000000e-05]
  // CHECK-NEXT:    loom.dispatch "fused_qkv_attention" ins [2] outs [0] scratch [1, 2] weights [@layers.0.wqkv, @layers.0.wo] iparams [0, 2, 1, 8, 0] fparams [1.000000e+04]
  // CHECK-NEXT:    loom.dispatch "matmul" ins [0] outs [2] weights [@layers.0.wq] iparams [0]
  // CHECK-NEXT:    loom.dispatch "add" ins [0, 2] outs [0]
  // CHECK-NEXT:    loom.dispatch "silu_mul" ins [0, 2] outs [0] {note = "extra attrs survive"}
  // CHECK-NEXT:    loom.dispatch "logits" ins [0] outs [3] weights [@tok_embeddings]
  // CHECK-NEXT:  }
  loom.program @forward arena 4096 max_tokens 4 logits 3 {
    loom.buffer 0 offset 0 row_elems 16
    loom.buffer 1 offset 256 row_elems 32
    loom.buffer 2 offset 768 row_elems 16
    loom.buffer 3 offset 1024 row_elems 32
    loom.kv_slot 0 layer 0 max_seq 64 kv_heads 1 head_dim 8
    loom.dispatch "embed" ins [] outs [0] weights [@tok_embeddings]
    loom.dispatch "rms_norm" ins [0] outs [2] weights [@layers.0.attention_norm] fparams [1.0e-05]
    loom.dispatch "fused_qkv_attention" ins [2] outs [0] scratch [1, 2] weights [@layers.0.wqkv, @layers.0.wo] iparams [0, 2, 1, 8, 0] fparams [1.0e+04]
    loom.dispatch "matmul" ins [0] outs [2] weights [@layers.0.wq] iparams [0]
    loom.dispatch "add" ins [0, 2] outs [0]
    loom.dispatch "silu_mul" ins [0, 2] outs [0] {note = "extra attrs survive"}
    loom.dispatch "logits" ins [0] outs [3] weights [@tok_embeddings]
  }

  // An empty program body with only its logits buffer.
  // CHECK-LABEL: loom.program @empty arena 64 max_tokens 1 logits 0 {
  // CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 16
  // CHECK-NEXT:  }
  loom.program @empty arena 64 max_tokens 1 logits 0 {
    loom.buffer 0 offset 0 row_elems 16
  }
}
