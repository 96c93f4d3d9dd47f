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
    // A sliding window of the last 32 positions.
    // CHECK: loom.attention %[[QR]], %[[KR]], %[[V]], %[[POS]], %[[C]] heads 2 kv_heads 1 head_dim 8 window 32 : tensor<?x16xf32>
    %aw = loom.attention %qr, %kr, %v, %pos, %c heads 2 kv_heads 1 head_dim 8 window 32
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

// Looped blocks (Huginn): loom.loop in its three forms (a constant count, a
// run-time count(%r), an adaptive exit), loom.yield, loom.init_state,
// loom.concat, loom.add_row_bias, a scaled embedding, fused attention with a
// packed rank-1 qk_bias, and the dispatch form: kv_slot loop_layer,
// loom.loop_desc (with and without `count`) and the concat / copy /
// add_row_bias kernels. dim 16, 2 heads of 8 (MHA), vocab 32. A second
// top-level module: the parser wraps both in an unnamed one.

// CHECK-LABEL: module @looped
module @looped {
  // CHECK: loom.weight @wte : tensor<32x16xf32>
  // CHECK: loom.weight @adapter : tensor<16x32xf32>
  // CHECK: loom.weight @q_bias : tensor<16xf32>
  // CHECK: loom.weight @k_bias : tensor<16xf32>
  // CHECK: loom.weight @qk_bias : tensor<32xf32> packed [@q_bias, @k_bias]
  // CHECK: loom.weight @wqkv : tensor<48x16xf32>
  // CHECK: loom.weight @wo : tensor<16x16xf32>
  // CHECK: loom.weight @ln_f : tensor<16xf32>
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @adapter : tensor<16x32xf32>
  loom.weight @q_bias : tensor<16xf32>
  loom.weight @k_bias : tensor<16xf32>
  loom.weight @qk_bias : tensor<32xf32> packed [@q_bias, @k_bias]
  loom.weight @wqkv : tensor<48x16xf32>
  loom.weight @wo : tensor<16x16xf32>
  loom.weight @ln_f : tensor<16xf32>

  // A constant count: no count operand, exit "none".
  // CHECK-LABEL: func.func @constant
  // CHECK-SAME: (%[[TOK:.*]]: tensor<?xi32>, %[[POS:.*]]: tensor<?xi32>) -> tensor<?x32xf32>
  func.func @constant(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    // CHECK: %[[E:.*]] = loom.embed %[[TOK]], @wte {scale = 8.000000e+00 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    %e = loom.embed %tokens, @wte {scale = 8.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    // CHECK: %[[S0:.*]] = loom.init_state %[[POS]] std 8.700000e-03 scale 4.000000e+00 : tensor<?xi32> -> tensor<?x16xf32>
    %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
    // CHECK: %[[F:.*]] = loom.loop %[[S0]] default 4 max 4 exit "none" threshold 0.000000e+00 : tensor<?x16xf32> {
    // CHECK-NEXT: ^bb0(%[[S:.*]]: tensor<?x16xf32>):
    // CHECK-NEXT: %[[C:.*]] = loom.concat %[[S]], %[[E]] : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
    // CHECK-NEXT: %[[X:.*]] = loom.linear %[[C]], @adapter : tensor<?x32xf32> -> tensor<?x16xf32>
    // CHECK-NEXT: %[[KV:.*]] = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    // CHECK-NEXT: %[[Y:.*]] = loom.fused_qkv_attention %[[X]], %[[POS]], %[[KV]], @wqkv, @wo heads 2 kv_heads 2 head_dim 8 theta 5.000000e+04 qk_bias @qk_bias : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    // CHECK-NEXT: loom.yield %[[Y]] : tensor<?x16xf32>
    // CHECK-NEXT: }
    %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %c = loom.concat %s, %e : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
      %x = loom.linear %c, @adapter : tensor<?x32xf32> -> tensor<?x16xf32>
      %kv = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %y = loom.fused_qkv_attention %x, %pos, %kv, @wqkv, @wo
          heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 qk_bias @qk_bias
          : tensor<?x16xf32>, tensor<?xi32>,
            !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      loom.yield %y : tensor<?x16xf32>
    }
    // CHECK-NEXT: %[[N:.*]] = loom.rms_norm %[[F]], @ln_f eps 9.99999997E-7 : tensor<?x16xf32>
    %n = loom.rms_norm %f, @ln_f eps 1.0e-06 : tensor<?x16xf32>
    // CHECK-NEXT: %[[B:.*]] = loom.add_row_bias %[[N]], @q_bias : tensor<?x16xf32>
    %b = loom.add_row_bias %n, @q_bias : tensor<?x16xf32>
    // CHECK-NEXT: %[[L:.*]] = loom.logits %[[B]], @wte : tensor<?x16xf32> -> tensor<?x32xf32>
    %l = loom.logits %b, @wte : tensor<?x16xf32> -> tensor<?x32xf32>
    // CHECK-NEXT: return %[[L]] : tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }

  // A run-time count: the iteration count is an i32 operand. The default
  // scale of an embedding (1.0) is not printed.
  // CHECK-LABEL: func.func @runtime
  // CHECK-SAME: (%[[TOK:.*]]: tensor<?xi32>, %[[POS:.*]]: tensor<?xi32>, %[[R:.*]]: i32)
  func.func @runtime(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %r: i32) -> tensor<?x16xf32> {
    // CHECK: %[[E:.*]] = loom.embed %[[TOK]], @wte : tensor<?xi32> -> tensor<?x16xf32>
    %e = loom.embed %tokens, @wte {scale = 1.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    // CHECK: %[[S0:.*]] = loom.init_state %[[POS]] std 0.000000e+00 scale 1.000000e+00
    %s0 = loom.init_state %pos std 0.0 scale 1.0 : tensor<?xi32> -> tensor<?x16xf32>
    // CHECK: loom.loop %[[S0]] count(%[[R]]) default 32 max 64 exit "none" threshold 0.000000e+00 : tensor<?x16xf32> {
    // CHECK-NEXT: ^bb0(%[[S:.*]]: tensor<?x16xf32>):
    // CHECK-NEXT: %[[X:.*]] = loom.add %[[S]], %[[E]] : tensor<?x16xf32>
    // CHECK-NEXT: loom.yield %[[X]] : tensor<?x16xf32>
    %f = loom.loop %s0 count(%r) default 32 max 64 exit "none" threshold 0.0 : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %x = loom.add %s, %e : tensor<?x16xf32>
      loom.yield %x : tensor<?x16xf32>
    }
    return %f : tensor<?x16xf32>
  }

  // Adaptive: the exit criterion decides the count, up to max; extra
  // attributes go after `attributes`.
  // CHECK-LABEL: func.func @adaptive
  func.func @adaptive(%pos: tensor<?xi32>, %e: tensor<?x16xf32>) -> tensor<?x16xf32> {
    %s0 = loom.init_state %pos std 8.7e-03 scale 4.0 : tensor<?xi32> -> tensor<?x16xf32>
    // CHECK: loom.loop %{{.*}} default 32 max 32 exit "kl" threshold 8.000000e-04 attributes {note = "kept"} : tensor<?x16xf32> {
    %f = loom.loop %s0 default 32 max 32 exit "kl" threshold 8.0e-04 attributes {note = "kept"} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %x = loom.add %s, %e : tensor<?x16xf32>
      loom.yield %x : tensor<?x16xf32>
    }
    // CHECK: loom.loop %{{.*}} default 8 max 16 exit "argmax-stability" threshold 5.000000e+00 : tensor<?x16xf32> {
    %g = loom.loop %f default 8 max 16 exit "argmax-stability" threshold 5.0 : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      loom.yield %s : tensor<?x16xf32>
    }
    return %g : tensor<?x16xf32>
  }

  // CHECK-LABEL: loom.program @forward arena 4096 max_tokens 4 logits 2 {
  // CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 16
  // CHECK-NEXT:    loom.buffer 1 offset 256 row_elems 16
  // CHECK-NEXT:    loom.buffer 2 offset 512 row_elems 32
  // CHECK-NEXT:    loom.kv_slot 0 layer 0 max_seq 64 kv_heads 2 head_dim 8{{$}}
  // CHECK-NEXT:    loom.kv_slot 1 layer 1 max_seq 64 kv_heads 2 head_dim 8 {loop_layer = 0 : i64}
  // CHECK-NEXT:    loom.dispatch "embed" ins [] outs [0] weights [@wte] fparams [8.000000e+00]
  // CHECK-NEXT:    loom.dispatch "concat" ins [1, 0] outs [2]
  // CHECK-NEXT:    loom.dispatch "copy" ins [0] outs [1]
  // CHECK-NEXT:    loom.dispatch "add_row_bias" ins [0] outs [1] weights [@q_bias]
  // CHECK-NEXT:    loom.dispatch "fused_qkv_attention" ins [1] outs [0] scratch [2, 1] weights [@wqkv, @wo, @qk_bias] iparams [1, 2, 2, 8, 0] fparams [5.000000e+04]
  // CHECK-NEXT:    loom.loop_desc body[1, 3) tail 5 state 1 next_state 0 latent 1 layers 0 + 1 default 32 max 32 exit "none" threshold 0.000000e+00 init_std 8.700000e-03 init_scale 4.000000e+00 count
  // CHECK-NEXT:  }
  // CHECK:       loom.program @adaptive_program arena 4096 max_tokens 4 logits 0 {
  // CHECK:         loom.loop_desc body[1, 3) tail 5 state 1 next_state 0 latent 1 layers 0 + 1 default 32 max 64 exit "kl" threshold 8.000000e-04 init_std 0.000000e+00 init_scale 1.000000e+00{{$}}
  loom.program @forward arena 4096 max_tokens 4 logits 2 {
    loom.buffer 0 offset 0 row_elems 16
    loom.buffer 1 offset 256 row_elems 16
    loom.buffer 2 offset 512 row_elems 32
    loom.kv_slot 0 layer 0 max_seq 64 kv_heads 2 head_dim 8 {loop_layer = -1}
    loom.kv_slot 1 layer 1 max_seq 64 kv_heads 2 head_dim 8 {loop_layer = 0}
    loom.dispatch "embed" ins [] outs [0] weights [@wte] fparams [8.0]
    loom.dispatch "concat" ins [1, 0] outs [2]
    loom.dispatch "copy" ins [0] outs [1]
    loom.dispatch "add_row_bias" ins [0] outs [1] weights [@q_bias]
    loom.dispatch "fused_qkv_attention" ins [1] outs [0] scratch [2, 1] weights [@wqkv, @wo, @qk_bias] iparams [1, 2, 2, 8, 0] fparams [5.0e+04]
    loom.loop_desc body [1, 3) tail 5 state 1 next_state 0 latent 1 layers 0 + 1
        default 32 max 32 exit "none" threshold 0.0 init_std 8.7e-03 init_scale 4.0 count
  }
  loom.program @adaptive_program arena 4096 max_tokens 4 logits 0 {
    loom.buffer 0 offset 0 row_elems 16
    loom.buffer 1 offset 256 row_elems 16
    loom.dispatch "copy" ins [0] outs [1]
    loom.dispatch "copy" ins [1] outs [0]
    loom.dispatch "copy" ins [0] outs [1]
    loom.dispatch "copy" ins [1] outs [0]
    loom.dispatch "copy" ins [0] outs [1]
    loom.loop_desc body [1, 3) tail 5 state 1 next_state 0 latent 1 layers 0 + 1
        default 32 max 64 exit "kl" threshold 8.0e-04 init_std 0.0 init_scale 1.0
  }
}

// REFRAG (compressed chunk placeholders): the chunk encoder's ops, a request
// that assembles BOS, a compressed chunk, an expanded chunk and the question
// into decoder rows, and a program that reads its rows from an input buffer
// with the encoder's kernels. Encoder width 32 (4 heads of 8), ffn 64,
// 17 positions; decoder width 64; vocab 32.

// CHECK-LABEL: module @refrag_roundtrip
module @refrag_roundtrip {
  loom.weight @enc.tok : tensor<32x32xf32>
  loom.weight @enc.pos : tensor<17x32xf32>
  loom.weight @enc.ln.weight : tensor<32xf32>
  loom.weight @enc.ln.bias : tensor<32xf32>
  loom.weight @enc.wq : tensor<32x32xf32>
  loom.weight @enc.fc1 : tensor<64x32xf32>
  loom.weight @enc.fc2 : tensor<32x64xf32>
  loom.weight @proj : tensor<64x32xf32>
  loom.weight @dec.tok : tensor<32x64xf32>

  // CHECK-LABEL: func.func @encode
  // CHECK-SAME: (%[[IDS:.*]]: tensor<?xi32>) -> tensor<1x32xf32>
  func.func @encode(%ids: tensor<?xi32>) -> tensor<1x32xf32> {
    // CHECK-NEXT: %[[X:.*]] = loom.embed %[[IDS]], @enc.tok : tensor<?xi32> -> tensor<?x32xf32>
    %x = loom.embed %ids, @enc.tok : tensor<?xi32> -> tensor<?x32xf32>
    // CHECK-NEXT: %[[P:.*]] = loom.add_positions %[[X]], @enc.pos : tensor<?x32xf32>
    %p = loom.add_positions %x, @enc.pos : tensor<?x32xf32>
    // CHECK-NEXT: %[[H:.*]] = loom.layer_norm %[[P]], @enc.ln.weight, @enc.ln.bias eps 9.99999974E-6 : tensor<?x32xf32>
    %h = loom.layer_norm %p, @enc.ln.weight, @enc.ln.bias eps 1.0e-05 : tensor<?x32xf32>
    // CHECK-NEXT: %[[Q:.*]] = loom.linear %[[H]], @enc.wq : tensor<?x32xf32> -> tensor<?x32xf32>
    %q = loom.linear %h, @enc.wq : tensor<?x32xf32> -> tensor<?x32xf32>
    // CHECK-NEXT: %[[A:.*]] = loom.self_attention %[[Q]], %[[H]], %[[P]] heads 4 head_dim 8 : tensor<?x32xf32>
    %a = loom.self_attention %q, %h, %p heads 4 head_dim 8 : tensor<?x32xf32>
    // CHECK-NEXT: %[[F:.*]] = loom.linear %[[A]], @enc.fc1 : tensor<?x32xf32> -> tensor<?x64xf32>
    %f = loom.linear %a, @enc.fc1 : tensor<?x32xf32> -> tensor<?x64xf32>
    // CHECK-NEXT: %[[G:.*]] = loom.gelu %[[F]] : tensor<?x64xf32>
    %g = loom.gelu %f : tensor<?x64xf32>
    // CHECK-NEXT: %[[Y:.*]] = loom.linear %[[G]], @enc.fc2 : tensor<?x64xf32> -> tensor<?x32xf32>
    %y = loom.linear %g, @enc.fc2 : tensor<?x64xf32> -> tensor<?x32xf32>
    // CHECK-NEXT: %[[CLS:.*]] = loom.take_row %[[Y]] row 0 : tensor<?x32xf32> -> tensor<1x32xf32>
    %cls = loom.take_row %y row 0 : tensor<?x32xf32> -> tensor<1x32xf32>
    // CHECK-NEXT: return %[[CLS]] : tensor<1x32xf32>
    return %cls : tensor<1x32xf32>
  }

  // CHECK-LABEL: func.func @project
  // CHECK-SAME: (%[[E:.*]]: tensor<?x32xf32>) -> tensor<?x64xf32>
  func.func @project(%e: tensor<?x32xf32>) -> tensor<?x64xf32> {
    // CHECK-NEXT: %[[Y:.*]] = loom.linear %[[E]], @proj : tensor<?x32xf32> -> tensor<?x64xf32>
    %y = loom.linear %e, @proj : tensor<?x32xf32> -> tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }

  // A static take_row: row 2 of 3 rows.
  // CHECK-LABEL: func.func @last_row
  func.func @last_row(%x: tensor<3x32xf32>) -> tensor<1x32xf32> {
    // CHECK-NEXT: loom.take_row %{{.*}} row 2 : tensor<3x32xf32> -> tensor<1x32xf32>
    %r = loom.take_row %x row 2 : tensor<3x32xf32> -> tensor<1x32xf32>
    return %r : tensor<1x32xf32>
  }

  // CHECK-LABEL: func.func @request
  // CHECK-SAME: (%[[BOS:[^:]*]]: tensor<1xi32>, %[[C0:[^:]*]]: tensor<?xi32>, %[[C1:[^:]*]]: tensor<?xi32>, %[[QU:[^:]*]]: tensor<?xi32>, %[[S:[^:]*]]: tensor<?x1xf32>)
  func.func @request(%bos: tensor<1xi32>, %c0: tensor<?xi32>, %c1: tensor<?xi32>,
                     %question: tensor<?xi32>, %scores: tensor<?x1xf32>)
      -> (tensor<?x64xf32>, tensor<?xi1>, tensor<2x64xf32>) {
    // CHECK-NEXT: %[[B:.*]] = loom.embed %[[BOS]], @dec.tok : tensor<1xi32> -> tensor<1x64xf32>
    %b = loom.embed %bos, @dec.tok : tensor<1xi32> -> tensor<1x64xf32>
    // CHECK-NEXT: %[[P0:.*]] = loom.chunk_placeholder %[[C0]] k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
    %p0 = loom.chunk_placeholder %c0 k 8 encoder @encode projector @project : tensor<?xi32> -> tensor<1x64xf32>
    // CHECK-NEXT: %[[E1:.*]] = loom.embed %[[C1]], @dec.tok : tensor<?xi32> -> tensor<?x64xf32>
    %e1 = loom.embed %c1, @dec.tok : tensor<?xi32> -> tensor<?x64xf32>
    // CHECK-NEXT: %[[EQ:.*]] = loom.embed %[[QU]], @dec.tok : tensor<?xi32> -> tensor<?x64xf32>
    %eq = loom.embed %question, @dec.tok : tensor<?xi32> -> tensor<?x64xf32>
    // CHECK-NEXT: %[[X:.*]] = loom.expansion_policy %[[S]] fraction 2.500000e-01 : tensor<?x1xf32> -> tensor<?xi1>
    %expand = loom.expansion_policy %scores fraction 2.5e-01 : tensor<?x1xf32> -> tensor<?xi1>
    // CHECK-NEXT: %[[SEQ:.*]] = loom.assemble_sequence %[[B]], %[[P0]], %[[E1]], %[[EQ]] : tensor<1x64xf32>, tensor<1x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    %seq = loom.assemble_sequence %b, %p0, %e1, %eq
        : tensor<1x64xf32>, tensor<1x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    // All pieces static: the result has their rows.
    // CHECK-NEXT: %[[TWO:.*]] = loom.assemble_sequence %[[B]], %[[P0]] : tensor<1x64xf32>, tensor<1x64xf32> -> tensor<2x64xf32>
    %two = loom.assemble_sequence %b, %p0 : tensor<1x64xf32>, tensor<1x64xf32> -> tensor<2x64xf32>
    // CHECK-NEXT: return %[[SEQ]], %[[X]], %[[TWO]]
    return %seq, %expand, %two : tensor<?x64xf32>, tensor<?xi1>, tensor<2x64xf32>
  }

  // Static scores and flags; the fraction's bounds 0 and 1 are allowed.
  // CHECK-LABEL: func.func @policy_bounds
  func.func @policy_bounds(%scores: tensor<3x1xf32>) -> (tensor<3xi1>, tensor<3xi1>) {
    // CHECK-NEXT: loom.expansion_policy %{{.*}} fraction 0.000000e+00 : tensor<3x1xf32> -> tensor<3xi1>
    %none = loom.expansion_policy %scores fraction 0.0 : tensor<3x1xf32> -> tensor<3xi1>
    // CHECK-NEXT: loom.expansion_policy %{{.*}} fraction 1.000000e+00 : tensor<3x1xf32> -> tensor<3xi1>
    %all = loom.expansion_policy %scores fraction 1.0 : tensor<3x1xf32> -> tensor<3xi1>
    return %none, %all : tensor<3xi1>, tensor<3xi1>
  }

  // A program whose rows come from the caller: `input` names their buffer.
  // CHECK-LABEL: loom.program @encoder_program arena 4096 max_tokens 4 logits 3 input 0 {
  // CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 32
  // CHECK-NEXT:    loom.buffer 1 offset 512 row_elems 32
  // CHECK-NEXT:    loom.buffer 2 offset 1024 row_elems 64
  // CHECK-NEXT:    loom.buffer 3 offset 2048 row_elems 32
  // CHECK-NEXT:    loom.dispatch "add_positions" ins [0] outs [1] weights [@enc.pos]
  // CHECK-NEXT:    loom.dispatch "layer_norm" ins [1] outs [0] weights [@enc.ln.weight, @enc.ln.bias] fparams [1.000000e-05]
  // CHECK-NEXT:    loom.dispatch "self_attention" ins [0, 0, 0] outs [1] iparams [4, 8]
  // CHECK-NEXT:    loom.dispatch "matmul" ins [1] outs [2] weights [@enc.fc1] iparams [0]
  // CHECK-NEXT:    loom.dispatch "gelu_tanh" ins [2] outs [2]
  // CHECK-NEXT:    loom.dispatch "take_row" ins [1] outs [3] iparams [0]
  // CHECK-NEXT:  }
  loom.program @encoder_program arena 4096 max_tokens 4 logits 3 input 0 {
    loom.buffer 0 offset 0 row_elems 32
    loom.buffer 1 offset 512 row_elems 32
    loom.buffer 2 offset 1024 row_elems 64
    loom.buffer 3 offset 2048 row_elems 32
    loom.dispatch "add_positions" ins [0] outs [1] weights [@enc.pos]
    loom.dispatch "layer_norm" ins [1] outs [0] weights [@enc.ln.weight, @enc.ln.bias] fparams [1.0e-05]
    loom.dispatch "self_attention" ins [0, 0, 0] outs [1] iparams [4, 8]
    loom.dispatch "matmul" ins [1] outs [2] weights [@enc.fc1] iparams [0]
    loom.dispatch "gelu_tanh" ins [2] outs [2]
    loom.dispatch "take_row" ins [1] outs [3] iparams [0]
  }
}
