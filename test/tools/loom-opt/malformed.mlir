// Malformed IR is reported at file:line:col, with a non-zero exit.
// RUN: not loom-opt %s 2>&1 | FileCheck %s
// CHECK: malformed.mlir:[[@LINE+2]]:{{[0-9]+}}: error:
func.func @forward(%arg0: tensor<?xi32>) {
  %0 = loom.embed %arg0, @tok : tensor<?xi32> ->
}
