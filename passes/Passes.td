//===- Passes.td - loom passes ----------------------------------------------===//
//
// Naming rule: pass argument loom-<verb>-<object> == def <Verb><Object>Pass
// == passes/<Verb><Object>.cpp == test/passes/<verb>-<object>.mlir.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_PASSES_TD
#define LOOM_PASSES_TD

include "mlir/Pass/PassBase.td"

def VerifyGraphPass : Pass<"loom-verify-graph", "::mlir::ModuleOp"> {
  let summary = "Check the frontend contract: one forward function over known weights";
  let description = [{
    Checks what the later passes rely on and op verifiers cannot see alone:
    the module has a `loom.model` config dictionary with positive integer
    `dim`, `n_layers`, `n_heads`, `n_kv_heads`, `vocab_size`, `max_seq`;
    a `func.func @forward(tensor<?xi32>, tensor<?xi32>) -> tensor<?xVxf32>`
    whose result comes from `loom.logits`; every KV cache layer is used by
    exactly one attention op and its `max_seq` equals the model's; every
    `loom.weight` is used (unused weights would be packed for nothing).
  }];
}

def FuseProjectionAttentionPass
    : Pass<"loom-fuse-projection-attention", "::mlir::ModuleOp"> {
  let summary = "Fuse Q/K/V projections, rope, attention and the output projection";
  let description = [{
    Matches

    ```mlir
    %q = loom.linear %x, @wq ...   %qr = loom.rope %q, %pos ...
    %k = loom.linear %x, @wk ...   %kr = loom.rope %k, %pos ...
    %v = loom.linear %x, @wv ...
    %a = loom.attention %qr, %kr, %v, %pos, %cache ...
    %o = loom.linear %a, @wo ...
    ```

    where every intermediate has a single use, and replaces it with one
    `loom.fused_qkv_attention %x, %pos, %cache, @wqkv, @wo`, declaring the
    packed weight `loom.weight @wqkv packed [@wq, @wk, @wv]` (named after the
    common prefix of the three names). The source weights stay declared for
    the packed one to refer to; the serializer writes only the packed bytes.
    The fused kernel reads `x` once for all three projections and keeps the
    Q/K/V rows in a scratch slice instead of three arena buffers. Weights
    whose `storage` differs (how the artifact will store them; the packed
    tensor has one type) are left unfused, and the packed weight takes its
    parts' `storage`.
  }];
}

def FuseChunkProjectorPass
    : Pass<"loom-fuse-chunk-projector", "::mlir::ModuleOp"> {
  let summary = "Fold the decoder's first use of a REFRAG placeholder row into the projector";
  let description = [{
    In a REFRAG module (`loom.refrag`), a compressed chunk's projected row
    (`@project_chunk`'s result) replaces a token embedding in `@forward`. Its
    first use there is layer 0's RMSNorm and packed Q/K/V projection, which
    do not depend on the row's position (RoPE comes after). This pass moves
    that work to the projector, which runs once per chunk (and whose rows the
    chunk store keeps):

    ```mlir
    // @forward, as loom-fuse-projection-attention leaves it
    %x = loom.embed %ids, @tok_embeddings : tensor<?xi32> -> tensor<?x64xf32>
    %h = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x64xf32>
    %a = loom.fused_qkv_attention %h, %pos, %cache, @layers.0.wqkv, @layers.0.wo ...
    // @project_chunk gains, after its projected row %p,
    %ph = loom.rms_norm %p, @layers.0.attention_norm eps 1.0e-05 : tensor<?x64xf32>
    %pq = loom.linear %ph, @layers.0.wqkv : tensor<?x64xf32> -> tensor<?x128xf32>
    %row = loom.concat %p, %pq : tensor<?x64xf32>, tensor<?x128xf32> -> tensor<?x192xf32>
    return %row : tensor<?x192xf32>
    // and the decoder's attention is marked
    %a = loom.fused_qkv_attention %h, ... placeholder_qkv : ...
    ```

    A placeholder row is then `[x | q | k | v]` (q, k, v before RoPE and
    before any `qk_bias`); the runtime copies `x` into the embedding rows and
    `q | k | v` into the packed projection's output, and projects only the
    token rows. Runs after `loom-fuse-projection-attention` (it needs the
    packed weight). A module without `loom.refrag` is left alone; one where
    the embedding does not feed a `loom.rms_norm` whose only use is
    `@forward`'s first attention (a `loom.fused_qkv_attention` outside any
    `loom.loop`), or whose `@project_chunk` is referred to or does not return
    one row of the decoder's width, is left unchanged with a remark saying
    why. The logits are the same as without the pass up to rounding (the
    q|k|v of a row are computed in another block of rows).
  }];
}

def FuseLinearBiasPass : Pass<"loom-fuse-linear-bias", "::mlir::ModuleOp"> {
  let summary = "Fold a bias add into the projection before it";
  let description = [{
    `loom.add_row_bias (loom.linear %x, @W), @b`, where the linear has no
    other use, becomes `loom.linear %x, @W bias @b`: the matmul kernel adds
    the bias while its output rows are hot, one dispatch and one pass over
    the rows fewer. REFRAG's chunk encoder and projector (every linear has a
    bias) are where this applies; the projector's output is the placeholder
    row the decoder reads in place of a token embedding, so that is where the
    projection meets the decoder (an RMSNorm sits between it and the first
    attention, so the projector cannot be folded into the QKV weights).

    ```mlir
    %y = loom.linear %x, @projector.fc2.weight : tensor<?x128xf32> -> tensor<?x64xf32>
    %z = loom.add_row_bias %y, @projector.fc2.bias : tensor<?x64xf32>
    // becomes
    %z = loom.linear %x, @projector.fc2.weight bias @projector.fc2.bias
         : tensor<?x128xf32> -> tensor<?x64xf32>
    ```
  }];
}

def PlanMemoryPass : Pass<"loom-plan-memory", "::mlir::ModuleOp"> {
  let summary = "Assign arena offsets to activations by liveness";
  let description = [{
    Every tensor result in `@forward` needs `max_tokens` rows of f32. Walks
    the ops in order, frees a value's slice after its last use and places
    each new value in the lowest free gap that fits (64-byte aligned).
    `loom.rope` reuses its input's slice when the input dies there (the
    kernel rotates in place); fused attention also gets two scratch slices
    that live only during the op. Sets `loom.offset` on each result op,
    `loom.scratch_offsets` on fused ops, `loom.arena_bytes` and
    `loom.max_tokens` on the function, and reports the peak next to the
    sum of all sizes as a remark.
  }];
  let options = [
    Option<"maxTokens", "max-tokens", "int64_t", "0",
           "Rows per step to plan for (0: the module's loom.model max_tokens, else 64)">
  ];
}

def PlanKvReusePass : Pass<"loom-plan-kv-reuse", "::mlir::ModuleOp"> {
  let summary = "Plan where K/V of each (layer, iteration, position) live, per KV policy";
  let description = [{
    For a model with a looped block, every core layer `j` at iteration `i`
    has the step index `s = P + C i + j` (`P` attention layers before the
    loop, `C` inside it). A KV policy maps step indices to physical caches:

    * `full` (also `skip`): one cache per (layer, iteration); memory grows
      with the iteration count r.
    * `latest-m4`, `available-m4`, `always-last-m4`: stored like `full`; a
      position that skipped an iteration (adaptive exit) is read from the
      same layer of its latest (or last) iteration instead of being skipped.
    * `compress-sN`: slot `P + (s - P) mod N`: a fixed budget of N core
      caches, the latest iteration overwriting; memory independent of r.
    * `compress-rN`: slot `P + (s - P) div N`: N consecutive steps share one.
    * `compress-anchor`: the first 8 iterations keep their own caches, later
      ones reuse `C` more modulo `C`.

    The plan, `fixed + min(ceil(C r / divisor), cap)` physical caches per
    policy (`fixed`: the layers outside the loop; `cap` absent for the
    policies that grow with r), is recorded as `loom.kv_plans` on the module
    (the artifact stores it), and a remark reports the KV bytes per token and
    for the whole context at `iterations` (default: the loop's default). Models without a
    loop get the single plan `full` (one cache per layer).
  }];
  let options = [
    ListOption<"policies", "policies", "std::string",
               "Policies to plan (default: all the supported ones)">,
    Option<"iterations", "iterations", "int64_t", "0",
           "Iteration count the report is for (0: the loop's default)">
  ];
}

def LowerToDispatchPass : Pass<"loom-lower-to-dispatch", "::mlir::ModuleOp"> {
  let summary = "Lower the planned graph to the loom.program dispatch list";
  let description = [{
    Replaces `func.func @forward` (after `loom-plan-memory`) with
    `loom.program @forward`: one `loom.buffer` per distinct arena slice, one
    `loom.kv_slot` per KV cache and one `loom.dispatch` per op, in program
    order, carrying the op's location. This is exactly what the artifact
    stores.
  }];
}

#endif // LOOM_PASSES_TD
