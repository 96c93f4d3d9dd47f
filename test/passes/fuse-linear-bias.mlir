// RUN: loom-opt %s --loom-fuse-linear-bias --split-input-file | FileCheck %s

// A bias add after a single-use projection folds into it.
// CHECK-LABEL: func.func @fold
// CHECK-NEXT: %[[Y:.+]] = loom.linear %arg0, @w bias @b : tensor<?x8xf32> -> tensor<?x4xf32>
// CHECK-NEXT: return %[[Y]]
// CHECK-NOT: loom.add_row_bias
loom.weight @w : tensor<4x8xf32>
loom.weight @b : tensor<4xf32>
func.func @fold(%x: tensor<?x8xf32>) -> tensor<?x4xf32> {
  %y = loom.linear %x, @w : tensor<?x8xf32> -> tensor<?x4xf32>
  %z = loom.add_row_bias %y, @b : tensor<?x4xf32>
  return %z : tensor<?x4xf32>
}

// -----

// The projection's raw output is used elsewhere too: no fold.
// CHECK-LABEL: func.func @shared
// CHECK: loom.linear %arg0, @w : tensor<?x8xf32> -> tensor<?x4xf32>
// CHECK: loom.add_row_bias
loom.weight @w : tensor<4x8xf32>
loom.weight @b : tensor<4xf32>
func.func @shared(%x: tensor<?x8xf32>) -> (tensor<?x4xf32>, tensor<?x4xf32>) {
  %y = loom.linear %x, @w : tensor<?x8xf32> -> tensor<?x4xf32>
  %z = loom.add_row_bias %y, @b : tensor<?x4xf32>
  return %y, %z : tensor<?x4xf32>, tensor<?x4xf32>
}

// -----

// Two biases in a row: the first folds, the second stays an add.
// CHECK-LABEL: func.func @twice
// CHECK: loom.linear %arg0, @w bias @b
// CHECK-NEXT: loom.add_row_bias %{{.+}}, @b
loom.weight @w : tensor<4x8xf32>
loom.weight @b : tensor<4xf32>
func.func @twice(%x: tensor<?x8xf32>) -> tensor<?x4xf32> {
  %y = loom.linear %x, @w : tensor<?x8xf32> -> tensor<?x4xf32>
  %z = loom.add_row_bias %y, @b : tensor<?x4xf32>
  %u = loom.add_row_bias %z, @b : tensor<?x4xf32>
  return %u : tensor<?x4xf32>
}
