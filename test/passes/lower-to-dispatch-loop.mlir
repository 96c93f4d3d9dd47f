// RUN: loom-opt %s --loom-lower-to-dispatch -split-input-file -verify-diagnostics | FileCheck %s

// loom-lower-to-dispatch on models with a loom.loop, as loom-plan-memory
// leaves them (the offsets are those test/passes/plan-memory-loop.mlir
// checks). The body's dispatches follow the loop's predecessors in program
// order; loom.init_state is a buffer the runtime fills, not a dispatch; KV
// caches inside the body become kv slots with loop_layer 0, 1, ... (the rest
// keep -1, not printed); loom.loop_desc closes the program:
//   body [first body dispatch, first dispatch after the body)
//   tail = the dispatch count (the tail runs to the end)
//   state = the init's buffer, next_state = the yielded value's buffer,
//   latent = the buffer the first dispatch after the body writes (ln_f)
//   layers P + C, default / max / exit / threshold from the loop,
//   init_std / init_scale from loom.init_state, `count` for count(%r).

// P = 1, C = 2, A = 1 (fused attention, a qk_bias in core layer 0).
// Dispatches 0-3 prelude, 4-11 body, 12-17 tail (ln_f writes buffer 4 at
// offset 512: the latent; the yielded %u2 is at 768: buffer 9).
// CHECK-LABEL: module @core2
// CHECK:       loom.program @forward arena 2304 max_tokens 4 logits 10 {
// CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 16
// CHECK-NEXT:    loom.buffer 1 offset 256 row_elems 16
// CHECK-NEXT:    loom.buffer 2 offset 768 row_elems 48
// CHECK-NEXT:    loom.buffer 3 offset 1536 row_elems 16
// CHECK-NEXT:    loom.buffer 4 offset 512 row_elems 16
// CHECK-NEXT:    loom.buffer 5 offset 512 row_elems 32
// CHECK-NEXT:    loom.buffer 6 offset 1024 row_elems 16
// CHECK-NEXT:    loom.buffer 7 offset 1280 row_elems 48
// CHECK-NEXT:    loom.buffer 8 offset 2048 row_elems 16
// CHECK-NEXT:    loom.buffer 9 offset 768 row_elems 16
// CHECK-NEXT:    loom.buffer 10 offset 1280 row_elems 32
// CHECK-NEXT:    loom.dispatch "embed" ins [] outs [0] weights [@wte] fparams [4.000000e+00]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [0] outs [1] weights [@p0.norm] fparams [1.000000e-06]
// CHECK-NEXT:    loom.kv_slot 0 layer 0 max_seq 64 kv_heads 2 head_dim 8{{$}}
// CHECK-NEXT:    loom.dispatch "fused_qkv_attention" ins [1] outs [4] scratch [2, 3] weights [@p0.wqkv, @p0.wo] iparams [0, 2, 2, 8, 0] fparams [5.000000e+04]
// CHECK-NEXT:    loom.dispatch "add" ins [0, 4] outs [1]
// CHECK-NEXT:    loom.dispatch "concat" ins [0, 1] outs [5]
// CHECK-NEXT:    loom.dispatch "matmul" ins [5] outs [6] weights [@adapter] iparams [0]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [6] outs [4] weights [@c0.norm]
// CHECK-NEXT:    loom.kv_slot 1 layer 1 max_seq 64 kv_heads 2 head_dim 8 {loop_layer = 0 : i64}
// CHECK-NEXT:    loom.dispatch "fused_qkv_attention" ins [4] outs [9] scratch [7, 8] weights [@c0.wqkv, @c0.wo, @c0.qk_bias] iparams [1, 2, 2, 8, 0] fparams [5.000000e+04]
// CHECK-NEXT:    loom.dispatch "add" ins [6, 9] outs [4]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [4] outs [9] weights [@c1.norm]
// CHECK-NEXT:    loom.kv_slot 2 layer 2 max_seq 64 kv_heads 2 head_dim 8 {loop_layer = 1 : i64}
// CHECK-NEXT:    loom.dispatch "fused_qkv_attention" ins [9] outs [6] scratch [7, 8] weights [@c1.wqkv, @c1.wo] iparams [2, 2, 2, 8, 0] fparams [5.000000e+04]
// CHECK-NEXT:    loom.dispatch "add" ins [4, 6] outs [9]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [0] outs [4] weights [@ln_f]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [4] outs [9] weights [@d0.norm]
// CHECK-NEXT:    loom.kv_slot 3 layer 3 max_seq 64 kv_heads 2 head_dim 8{{$}}
// CHECK-NEXT:    loom.dispatch "fused_qkv_attention" ins [9] outs [6] scratch [7, 8] weights [@d0.wqkv, @d0.wo] iparams [3, 2, 2, 8, 0] fparams [5.000000e+04]
// CHECK-NEXT:    loom.dispatch "add" ins [4, 6] outs [9]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [9] outs [6] weights [@ln_f]
// CHECK-NEXT:    loom.dispatch "logits" ins [6] outs [10] weights [@wte]
// CHECK-NEXT:    loom.loop_desc body[4, 12) tail 18 state 0 next_state 9 latent 4 layers 1 + 2 default 6 max 8 exit "none" threshold 0.000000e+00 init_std 0.158113882 init_scale 4.000000e+00 count{{$}}
// CHECK-NEXT:  }
// CHECK-NOT:   func.func
module @core2 attributes {loom.model = {dim = 16 : i64, n_layers = 4 : i64, n_heads = 2 : i64, n_kv_heads = 2 : i64, vocab_size = 32 : i64, max_seq = 64 : i64, max_tokens = 4 : i64}} {
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @adapter : tensor<16x32xf32>
  loom.weight @ln_f : tensor<16xf32>
  loom.weight @p0.norm : tensor<16xf32>
  loom.weight @p0.wqkv : tensor<48x16xf32>
  loom.weight @p0.wo : tensor<16x16xf32>
  loom.weight @c0.norm : tensor<16xf32>
  loom.weight @c0.wqkv : tensor<48x16xf32>
  loom.weight @c0.wo : tensor<16x16xf32>
  loom.weight @c0.qk_bias : tensor<32xf32>
  loom.weight @c1.norm : tensor<16xf32>
  loom.weight @c1.wqkv : tensor<48x16xf32>
  loom.weight @c1.wo : tensor<16x16xf32>
  loom.weight @d0.norm : tensor<16xf32>
  loom.weight @d0.wqkv : tensor<48x16xf32>
  loom.weight @d0.wo : tensor<16x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %r: i32) -> tensor<?x32xf32> attributes {loom.arena_bytes = 2304 : i64, loom.max_tokens = 4 : i64} {
    %x = loom.embed %tokens, @wte {loom.offset = 0 : i64, scale = 4.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    %h0 = loom.rms_norm %x, @p0.norm eps 1.0e-06 {loom.offset = 256 : i64} : tensor<?x16xf32>
    %k0 = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %a0 = loom.fused_qkv_attention %h0, %pos, %k0, @p0.wqkv, @p0.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 {loom.offset = 512 : i64, loom.scratch_offsets = array<i64: 768, 1536>}
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %e = loom.add %x, %a0 {loom.offset = 256 : i64} : tensor<?x16xf32>
    %s0 = loom.init_state %pos std 0.158113882 scale 4.0 {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %f = loom.loop %s0 count(%r) default 6 max 8 exit "none" threshold 0.0 attributes {loom.offset = 0 : i64} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %cat = loom.concat %s, %e {loom.offset = 512 : i64} : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
      %u = loom.linear %cat, @adapter {loom.offset = 1024 : i64} : tensor<?x32xf32> -> tensor<?x16xf32>
      %h1 = loom.rms_norm %u, @c0.norm eps 1.0e-06 {loom.offset = 512 : i64} : tensor<?x16xf32>
      %k1 = loom.kv_cache layer 1 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a1 = loom.fused_qkv_attention %h1, %pos, %k1, @c0.wqkv, @c0.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 qk_bias @c0.qk_bias {loom.offset = 768 : i64, loom.scratch_offsets = array<i64: 1280, 2048>}
          : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %u1 = loom.add %u, %a1 {loom.offset = 512 : i64} : tensor<?x16xf32>
      %h2 = loom.rms_norm %u1, @c1.norm eps 1.0e-06 {loom.offset = 768 : i64} : tensor<?x16xf32>
      %k2 = loom.kv_cache layer 2 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %a2 = loom.fused_qkv_attention %h2, %pos, %k2, @c1.wqkv, @c1.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 {loom.offset = 1024 : i64, loom.scratch_offsets = array<i64: 1280, 2048>}
          : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
      %u2 = loom.add %u1, %a2 {loom.offset = 768 : i64} : tensor<?x16xf32>
      loom.yield %u2 : tensor<?x16xf32>
    }
    %lat = loom.rms_norm %f, @ln_f eps 1.0e-06 {loom.offset = 512 : i64} : tensor<?x16xf32>
    %h3 = loom.rms_norm %lat, @d0.norm eps 1.0e-06 {loom.offset = 768 : i64} : tensor<?x16xf32>
    %k3 = loom.kv_cache layer 3 : !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %a3 = loom.fused_qkv_attention %h3, %pos, %k3, @d0.wqkv, @d0.wo heads 2 kv_heads 2 head_dim 8 theta 5.0e+04 {loom.offset = 1024 : i64, loom.scratch_offsets = array<i64: 1280, 2048>}
        : tensor<?x16xf32>, tensor<?xi32>, !loom.kv_cache<max_seq = 64, kv_heads = 2, head_dim = 8, element_type = f32>
    %y = loom.add %lat, %a3 {loom.offset = 768 : i64} : tensor<?x16xf32>
    %z = loom.rms_norm %y, @ln_f eps 1.0e-06 {loom.offset = 1024 : i64} : tensor<?x16xf32>
    %l = loom.logits %z, @wte {loom.offset = 1280 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// An adaptive loop (exit "latent-diff"): no `count`. Ropes in the body, a
// loop without attention layers (0 + 0: loom-lower-to-dispatch does not
// require any; the runtime's loader does). The state is buffer 1 (the
// init_state's slice, 256); init_state itself emits no dispatch.
// CHECK-LABEL: module @adaptive
// CHECK:       loom.program @forward arena 1536 max_tokens 4 logits 5 {
// CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 16
// CHECK-NEXT:    loom.buffer 1 offset 256 row_elems 16
// CHECK-NEXT:    loom.buffer 2 offset 512 row_elems 16
// CHECK-NEXT:    loom.buffer 3 offset 768 row_elems 16
// CHECK-NEXT:    loom.buffer 4 offset 1024 row_elems 32
// CHECK-NEXT:    loom.buffer 5 offset 768 row_elems 32
// CHECK-NEXT:    loom.dispatch "embed" ins [] outs [0] weights [@wte] fparams [4.000000e+00]
// CHECK-NEXT:    loom.dispatch "rope" ins [0] outs [2] iparams [16, 8] fparams [5.000000e+04]
// CHECK-NEXT:    loom.dispatch "rope" ins [1] outs [3] iparams [16, 8] fparams [5.000000e+04]
// CHECK-NEXT:    loom.dispatch "concat" ins [3, 2] outs [4]
// CHECK-NEXT:    loom.dispatch "matmul" ins [4] outs [2] weights [@adapter] iparams [0]
// CHECK-NEXT:    loom.dispatch "rope" ins [2] outs [2] iparams [16, 8] fparams [5.000000e+04]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [1] outs [2] weights [@ln_f]
// CHECK-NEXT:    loom.dispatch "logits" ins [2] outs [5] weights [@wte]
// CHECK-NEXT:    loom.loop_desc body[1, 6) tail 8 state 1 next_state 2 latent 2 layers 0 + 0 default 4 max 32 exit "latent-diff" threshold 3.000000e-02 init_std 0.000000e+00 init_scale 4.000000e+00{{$}}
// CHECK-NEXT:  }
module @adaptive {
  loom.weight @adapter : tensor<16x32xf32>
  loom.weight @ln_f : tensor<16xf32>
  loom.weight @wte : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1536 : i64, loom.max_tokens = 4 : i64} {
    %e = loom.embed %tokens, @wte {loom.offset = 0 : i64, scale = 4.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    %s0 = loom.init_state %pos std 0.0 scale 4.0 {loom.offset = 256 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %f = loom.loop %s0 default 4 max 32 exit "latent-diff" threshold 3.0e-02 attributes {loom.offset = 256 : i64} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %er = loom.rope %e, %pos head_dim 8 theta 5.0e+04 {loom.offset = 512 : i64} : tensor<?x16xf32>, tensor<?xi32>
      %sr = loom.rope %s, %pos head_dim 8 theta 5.0e+04 {loom.offset = 768 : i64} : tensor<?x16xf32>, tensor<?xi32>
      %cat = loom.concat %sr, %er {loom.offset = 1024 : i64} : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
      %u = loom.linear %cat, @adapter {loom.offset = 512 : i64} : tensor<?x32xf32> -> tensor<?x16xf32>
      %ur = loom.rope %u, %pos head_dim 8 theta 5.0e+04 {loom.offset = 512 : i64} : tensor<?x16xf32>, tensor<?xi32>
      loom.yield %ur : tensor<?x16xf32>
    }
    %lat = loom.rms_norm %f, @ln_f eps 1.0e-06 {loom.offset = 512 : i64} : tensor<?x16xf32>
    %l = loom.logits %lat, @wte {loom.offset = 768 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// A constant count: no count operand, exit "none", no `count` flag.
// CHECK-LABEL: module @constant
// CHECK:         loom.loop_desc body[1, 6) tail 8 state 1 next_state 2 latent 2 layers 0 + 0 default 4 max 4 exit "none" threshold 0.000000e+00 init_std 0.0790569409 init_scale 4.000000e+00{{$}}
module @constant {
  loom.weight @adapter : tensor<16x32xf32>
  loom.weight @ln_f : tensor<16xf32>
  loom.weight @wte : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1536 : i64, loom.max_tokens = 4 : i64} {
    %e = loom.embed %tokens, @wte {loom.offset = 0 : i64, scale = 4.0 : f32} : tensor<?xi32> -> tensor<?x16xf32>
    %s0 = loom.init_state %pos std 0.0790569409 scale 4.0 {loom.offset = 256 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %f = loom.loop %s0 default 4 max 4 exit "none" threshold 0.0 attributes {loom.offset = 256 : i64} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %er = loom.rope %e, %pos head_dim 8 theta 5.0e+04 {loom.offset = 512 : i64} : tensor<?x16xf32>, tensor<?xi32>
      %sr = loom.rope %s, %pos head_dim 8 theta 5.0e+04 {loom.offset = 768 : i64} : tensor<?x16xf32>, tensor<?xi32>
      %cat = loom.concat %sr, %er {loom.offset = 1024 : i64} : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x32xf32>
      %u = loom.linear %cat, @adapter {loom.offset = 512 : i64} : tensor<?x32xf32> -> tensor<?x16xf32>
      %ur = loom.rope %u, %pos head_dim 8 theta 5.0e+04 {loom.offset = 512 : i64} : tensor<?x16xf32>, tensor<?xi32>
      loom.yield %ur : tensor<?x16xf32>
    }
    %lat = loom.rms_norm %f, @ln_f eps 1.0e-06 {loom.offset = 512 : i64} : tensor<?x16xf32>
    %l = loom.logits %lat, @wte {loom.offset = 768 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// The runtime fills the state before the first iteration: the init must be
// a loom.init_state.
module {
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @ln_f : tensor<16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1024 : i64, loom.max_tokens = 4 : i64} {
    %e = loom.embed %tokens, @wte {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{a loom.loop's init must be a loom.init_state}}
    %f = loom.loop %e default 2 max 2 exit "none" threshold 0.0 attributes {loom.offset = 0 : i64} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %u = loom.add %s, %s {loom.offset = 256 : i64} : tensor<?x16xf32>
      loom.yield %u : tensor<?x16xf32>
    }
    %lat = loom.rms_norm %f, @ln_f eps 1.0e-06 {loom.offset = 256 : i64} : tensor<?x16xf32>
    %l = loom.logits %lat, @wte {loom.offset = 512 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// The tail starts with the normalisation of the state (its output is the
// latent the runtime keeps): the first op after the loop must read it.
module {
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @ln_f : tensor<16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1280 : i64, loom.max_tokens = 4 : i64} {
    %e = loom.embed %tokens, @wte {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %s0 = loom.init_state %pos std 0.0 scale 1.0 {loom.offset = 256 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{the op after a loom.loop must read its state (the normalisation the tail starts with)}}
    %f = loom.loop %s0 default 2 max 2 exit "none" threshold 0.0 attributes {loom.offset = 256 : i64} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %u = loom.add %s, %e {loom.offset = 512 : i64} : tensor<?x16xf32>
      loom.yield %u : tensor<?x16xf32>
    }
    %n = loom.rms_norm %e, @ln_f eps 1.0e-06 {loom.offset = 512 : i64} : tensor<?x16xf32>
    %y = loom.add %n, %f {loom.offset = 768 : i64} : tensor<?x16xf32>
    %l = loom.logits %y, @wte {loom.offset = 1024 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// ... and there must be one: a loop with no dispatch after it.
module {
  loom.weight @wte : tensor<32x16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1280 : i64, loom.max_tokens = 4 : i64} {
    %e = loom.embed %tokens, @wte {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %l = loom.logits %e, @wte {loom.offset = 256 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    %s0 = loom.init_state %pos std 0.0 scale 1.0 {loom.offset = 768 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{the op after a loom.loop must read its state}}
    %f = loom.loop %s0 default 2 max 2 exit "none" threshold 0.0 attributes {loom.offset = 768 : i64} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %u = loom.add %s, %e {loom.offset = 1024 : i64} : tensor<?x16xf32>
      loom.yield %u : tensor<?x16xf32>
    }
    return %l : tensor<?x32xf32>
  }
}

// -----

// One looped block per program.
module {
  loom.weight @wte : tensor<32x16xf32>
  loom.weight @ln_f : tensor<16xf32>
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> attributes {loom.arena_bytes = 1536 : i64, loom.max_tokens = 4 : i64} {
    %e = loom.embed %tokens, @wte {loom.offset = 0 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %s0 = loom.init_state %pos std 0.0 scale 1.0 {loom.offset = 256 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    %f = loom.loop %s0 default 2 max 2 exit "none" threshold 0.0 attributes {loom.offset = 256 : i64} : tensor<?x16xf32> {
    ^bb0(%s: tensor<?x16xf32>):
      %u = loom.add %s, %e {loom.offset = 512 : i64} : tensor<?x16xf32>
      loom.yield %u : tensor<?x16xf32>
    }
    %lat = loom.rms_norm %f, @ln_f eps 1.0e-06 {loom.offset = 512 : i64} : tensor<?x16xf32>
    %t0 = loom.init_state %pos std 0.0 scale 1.0 {loom.offset = 768 : i64} : tensor<?xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{a program has at most one looped block}}
    %g = loom.loop %t0 default 2 max 2 exit "none" threshold 0.0 attributes {loom.offset = 768 : i64} : tensor<?x16xf32> {
    ^bb0(%t: tensor<?x16xf32>):
      %v = loom.add %t, %lat {loom.offset = 1024 : i64} : tensor<?x16xf32>
      loom.yield %v : tensor<?x16xf32>
    }
    %z = loom.rms_norm %g, @ln_f eps 1.0e-06 {loom.offset = 1024 : i64} : tensor<?x16xf32>
    %l = loom.logits %z, @wte {loom.offset = 1024 : i64} : tensor<?x16xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}
