// RUN: loom-opt %s --loom-plan-memory=max-tokens=4 --loom-lower-to-dispatch -split-input-file -verify-diagnostics | FileCheck %s

// loom-plan-memory and loom-lower-to-dispatch on a module of several
// functions (REFRAG's @encode_chunk, @project_chunk and @score_chunk beside
// @forward): each func.func is planned on its own arena and becomes a
// loom.program of the same name. A function whose argument is rows (not
// token ids) gets that argument's slice as its `input` buffer, allocated
// before any op's result; its returned value is the output (`logits`) buffer.
//
// At 4 rows: 8 columns = 128 B, 16 columns = 256 B, 32 columns = 512 B,
// 1 column = 16 B rounded up to 64 B; first fit, freed after the last use.
//
// @forward: %x at 0, %n at 128, %x freed, %l (512 B) fits nowhere below 128
//   so it goes to 256: peak 768.
// @mlp: the argument %rows at 0 stays live until the residual add (the last
//   op); %h 128, %f 256, %h freed; %g (256 B) does not fit at 128 (256 is
//   taken) so it goes to 512; %f freed; %y back at 128; %g freed; %r does
//   not fit at 128 (taken by %y) so 256: peak 512 + 256 = 768. Buffers by
//   first use: 0 = the input (0, 8), 1 = (128, 8) for %h and %y,
//   2 = (256, 16), 3 = (512, 16), 4 = (256, 8) for the result.
// @score: the argument %e at 0 dies at the matmul, whose result (64 B) is
//   allocated before that at 128; the bias add then reuses offset 0: peak
//   192. Buffer 2 (0, 1) overlaps the input's slice, dead by then. (The
//   remark's "without reuse" sums the unrounded sizes: 128 + 16 + 16.)

// CHECK-LABEL: loom.program @forward arena 768 max_tokens 4 logits 2 {
// CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 8
// CHECK-NEXT:    loom.buffer 1 offset 128 row_elems 8
// CHECK-NEXT:    loom.buffer 2 offset 256 row_elems 32
// CHECK-NEXT:    loom.dispatch "embed" ins [] outs [0] weights [@tok]
// CHECK-NEXT:    loom.dispatch "rms_norm" ins [0] outs [1] weights [@norm] fparams [1.000000e-05]
// CHECK-NEXT:    loom.dispatch "logits" ins [1] outs [2] weights [@tok]
// CHECK-NEXT:  }
// CHECK-LABEL: loom.program @mlp arena 768 max_tokens 4 logits 4 input 0 {
// CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 8
// CHECK-NEXT:    loom.buffer 1 offset 128 row_elems 8
// CHECK-NEXT:    loom.buffer 2 offset 256 row_elems 16
// CHECK-NEXT:    loom.buffer 3 offset 512 row_elems 16
// CHECK-NEXT:    loom.buffer 4 offset 256 row_elems 8
// CHECK-NEXT:    loom.dispatch "layer_norm" ins [0] outs [1] weights [@ln.w, @ln.b] fparams [1.000000e-05]
// CHECK-NEXT:    loom.dispatch "matmul" ins [1] outs [2] weights [@fc1] iparams [0]
// CHECK-NEXT:    loom.dispatch "gelu_tanh" ins [2] outs [3]
// CHECK-NEXT:    loom.dispatch "matmul" ins [3] outs [1] weights [@fc2] iparams [0]
// CHECK-NEXT:    loom.dispatch "add" ins [0, 1] outs [4]
// CHECK-NEXT:  }
// CHECK-LABEL: loom.program @score arena 192 max_tokens 4 logits 2 input 0 {
// CHECK-NEXT:    loom.buffer 0 offset 0 row_elems 8
// CHECK-NEXT:    loom.buffer 1 offset 128 row_elems 1
// CHECK-NEXT:    loom.buffer 2 offset 0 row_elems 1
// CHECK-NEXT:    loom.dispatch "matmul" ins [0] outs [1] weights [@policy] iparams [0]
// CHECK-NEXT:    loom.dispatch "add_row_bias" ins [1] outs [2] weights [@policy.bias]
// CHECK-NEXT:  }
// CHECK-NOT:   func.func
module {
  loom.weight @tok : tensor<32x8xf32>
  loom.weight @norm : tensor<8xf32>
  loom.weight @ln.w : tensor<8xf32>
  loom.weight @ln.b : tensor<8xf32>
  loom.weight @fc1 : tensor<16x8xf32>
  loom.weight @fc2 : tensor<8x16xf32>
  loom.weight @policy : tensor<1x8xf32>
  loom.weight @policy.bias : tensor<1xf32>

  // expected-remark @+1 {{arena peak 768 bytes for 3 values at 4 rows (without reuse: 768 bytes)}}
  func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
    %x = loom.embed %tokens, @tok : tensor<?xi32> -> tensor<?x8xf32>
    %n = loom.rms_norm %x, @norm eps 1.0e-05 : tensor<?x8xf32>
    %l = loom.logits %n, @tok : tensor<?x8xf32> -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }

  // expected-remark @+1 {{arena peak 768 bytes for 6 values at 4 rows (without reuse: 1024 bytes)}}
  func.func @mlp(%rows: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %h = loom.layer_norm %rows, @ln.w, @ln.b eps 1.0e-05 : tensor<?x8xf32>
    %f = loom.linear %h, @fc1 : tensor<?x8xf32> -> tensor<?x16xf32>
    %g = loom.gelu %f : tensor<?x16xf32>
    %y = loom.linear %g, @fc2 : tensor<?x16xf32> -> tensor<?x8xf32>
    %r = loom.add %rows, %y : tensor<?x8xf32>
    return %r : tensor<?x8xf32>
  }

  // expected-remark @+1 {{arena peak 192 bytes for 3 values at 4 rows (without reuse: 256 bytes)}}
  func.func @score(%e: tensor<?x8xf32>) -> tensor<?x1xf32> {
    %s = loom.linear %e, @policy : tensor<?x8xf32> -> tensor<?x1xf32>
    %b = loom.add_row_bias %s, @policy.bias : tensor<?x1xf32>
    return %b : tensor<?x1xf32>
  }
}

// -----

// A program has one input buffer: a function of two row arguments is
// planned (both arguments get a slice) but not lowered.
module {
  // expected-remark @+2 {{arena peak 384 bytes for 3 values at 4 rows (without reuse: 384 bytes)}}
  // expected-error @+1 {{a program takes at most one row input}}
  func.func @forward(%a: tensor<?x8xf32>, %b: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %s = loom.add %a, %b : tensor<?x8xf32>
    return %s : tensor<?x8xf32>
  }
}
