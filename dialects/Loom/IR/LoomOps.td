//===- LoomOps.td - the loom dialect: model graph and dispatch form -------===//
//
// Two levels live in this dialect:
//  * the graph level: value-semantics tensor ops of a transformer
//    (`loom.embed`, `loom.rms_norm`, `loom.linear`, `loom.rope`,
//    `loom.attention`, `loom.silu_mul`, `loom.add`, `loom.logits`) and the
//    fused forms the passes produce (`loom.fused_qkv_attention`);
//  * the dispatch level: `loom.program` holding `loom.buffer`, `loom.kv_slot`
//    and `loom.dispatch` ops, which the artifact stores one to one.
// Weights are `loom.weight` symbols: ops name them, the IR never holds their
// bytes.
//
//===----------------------------------------------------------------------===//

#ifndef LOOM_OPS_TD
#define LOOM_OPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"

def Loom_Dialect : Dialect {
  let name = "loom";
  let cppNamespace = "::loom";
  let summary = "Transformer inference graphs and their scheduled dispatch form";
  let description = [{
    The `loom` dialect describes a decoder-only transformer as a graph of
    tensor ops over a symbolic number of rows (the tokens fed in one step,
    `tensor<?xDxf32>`), with weights referenced by symbol (`@layers.0.wq`)
    and per-layer KV caches as values of type `!loom.kv_cache`. Passes fuse
    it (`loom-fuse-projection-attention`), plan its activation memory
    (`loom-plan-memory`) and lower it to `loom.program`, the scheduled
    dispatch list that `loomc` serialises into an artifact.
  }];
  let useDefaultTypePrinterParser = 1;
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

def Loom_KvCacheType : TypeDef<Loom_Dialect, "KvCache"> {
  let mnemonic = "kv_cache";
  let summary = "One layer's key/value cache";
  let description = [{
    Keys and values of one attention layer for positions `0 .. max_seq-1`:
    two row-major arrays `[max_seq, kv_heads * head_dim]` of `element_type`.

    ```mlir
    !loom.kv_cache<max_seq = 512, kv_heads = 4, head_dim = 8, element_type = f32>
    ```
  }];
  let parameters = (ins "int64_t":$max_seq, "int64_t":$kv_heads,
                        "int64_t":$head_dim, "::mlir::Type":$element_type);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    int64_t getKvDim() const { return getKvHeads() * getHeadDim(); }
  }];
}

def Loom_RowTensor : TensorRankOf<[F32], [2]>;
def Loom_IdTensor : TensorRankOf<[I32], [1]>;

//===----------------------------------------------------------------------===//
// Base
//===----------------------------------------------------------------------===//

class Loom_Op<string mnemonic, list<Trait> traits = []>
    : Op<Loom_Dialect, mnemonic, traits>;

// Ops that name weights verify the names and shapes in verifySymbolUses.
class Loom_WeightUserOp<string mnemonic, list<Trait> traits = []>
    : Loom_Op<mnemonic, !listconcat(traits,
        [DeclareOpInterfaceMethods<SymbolUserOpInterface>])>;

//===----------------------------------------------------------------------===//
// Weights and caches
//===----------------------------------------------------------------------===//

def Loom_WeightOp : Loom_Op<"weight", [Symbol, HasParent<"::mlir::ModuleOp">,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "A named model parameter (its bytes live outside the IR)";
  let description = [{
    Declares a parameter by name and type. The frontend hands the serializer
    a source for each name; `packed` weights are made by concatenating other
    weights along dimension 0 (the fused QKV projection and its bias).

    `storage`, when present, is how the artifact will store the weight
    other than as f32 (`loomc --weight-type`: "bf16", "q8_0", "q4_k", ...;
    loomc sets it, for `--target=cpu`, from the source and the requested
    type). A stored tensor
    has one type, so passes pack only weights whose `storage` is the same
    (an absent one is f32): a layer of llama.cpp's Q4_K_M, whose q and k
    are Q4_K and v Q6_K, keeps its projections apart rather than become one
    f32 `wqkv`.

    ```mlir
    loom.weight @layers.0.wq : tensor<64x64xf32>
    loom.weight @layers.0.wqkv : tensor<128x64xf32> packed [@layers.0.wq, @layers.0.wk, @layers.0.wv]
    loom.weight @layers.1.wv : tensor<64x64xf32> {storage = "q6_k"}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<AnyStaticShapeTensor>:$type,
                       OptionalAttr<FlatSymbolRefArrayAttr>:$packed,
                       OptionalAttr<StrAttr>:$storage);
  let assemblyFormat = "$sym_name `:` $type (`packed` $packed^)? attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
  }];
}

def Loom_KvCacheOp : Loom_Op<"kv_cache", [
    MemoryEffects<[MemAlloc<DefaultResource, 0, FullEffect>]>]> {
  let summary = "The KV cache of one attention layer";
  let description = [{
    Names the cache that `loom.attention` of layer `layer` reads and appends
    to. Its contents persist across steps of a session.

    ```mlir
    %c = loom.kv_cache layer 0 : !loom.kv_cache<max_seq = 512, kv_heads = 4, head_dim = 8, element_type = f32>
    ```
  }];
  let arguments = (ins I64Attr:$layer);
  let results = (outs Loom_KvCacheType:$cache);
  let assemblyFormat = "`layer` $layer attr-dict `:` qualified(type($cache))";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Graph-level model ops
//===----------------------------------------------------------------------===//

def Loom_EmbedOp : Loom_WeightUserOp<"embed", [Pure]> {
  let summary = "Token embedding lookup";
  let description = [{
    `result[t, :] = table[tokens[t], :] * scale`; `table` is a `[vocab, dim]`
    weight (Huginn scales by sqrt(dim); `scale` defaults to 1).

    ```mlir
    %x = loom.embed %tokens, @tok_embeddings : tensor<?xi32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Loom_IdTensor:$tokens, FlatSymbolRefAttr:$table,
                       DefaultValuedAttr<F32Attr, "1.0f">:$scale);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$tokens `,` $table attr-dict `:` type($tokens) `->` type($result)";
  let hasVerifier = 1;
}

def Loom_RmsNormOp : Loom_WeightUserOp<"rms_norm", [Pure, SameOperandsAndResultType]> {
  let hasVerifier = 1;
  let summary = "Root-mean-square normalisation with a learned scale";
  let description = [{
    `result[t] = weight * x[t] / sqrt(mean(x[t]^2) + eps)`.

    ```mlir
    %y = loom.rms_norm %x, @layers.0.attention_norm eps 1.0e-05 : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, FlatSymbolRefAttr:$weight, F32Attr:$eps);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$input `,` $weight `eps` $eps attr-dict `:` type($result)";
}

def Loom_LinearOp : Loom_WeightUserOp<"linear", [Pure]> {
  let summary = "Projection x · Wᵀ by a named weight";
  let description = [{
    `result[t, n] = sum_k input[t, k] * weight[n, k] (+ bias[n])` with
    `weight` of shape `[N, K]` (llama2.c's row-major `out x in` layout) and
    the optional `bias` `[N]` (set by `loom-fuse-linear-bias`).

    ```mlir
    %q = loom.linear %x, @layers.0.wq : tensor<?x64xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, FlatSymbolRefAttr:$weight,
                       OptionalAttr<FlatSymbolRefAttr>:$bias);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:` type($input) `->`
    type($result)
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Type":$result, "::mlir::Value":$input,
                   "::mlir::FlatSymbolRefAttr":$weight), [{
      build($_builder, $_state, result, input, weight,
            ::mlir::FlatSymbolRefAttr());
    }]>
  ];
  let hasVerifier = 1;
}

def Loom_RopeOp : Loom_Op<"rope", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "Rotary position embedding on interleaved pairs";
  let description = [{
    Rotates each pair `(2i, 2i+1)` inside every head of `head_dim` columns by
    `positions[t] * theta^(-2i / head_dim) / freq_factors[i]` radians
    (llama2.c's layout). `freq_factors` (`head_dim / 2` positive values,
    absent: all 1) stretches each pair's wavelength: Llama 3.1's rope scaling,
    GGUF's `rope_freqs` tensor, linear and YaRN scaling. `scale` (absent: 1)
    multiplies the rotation's cosine and sine, so the rotated vector's
    length: YaRN's attention factor (q and k both rotated, their scores
    scale by its square).

    ```mlir
    %r = loom.rope %q, %pos head_dim 8 theta 1.0e+04 : tensor<?x64xf32>, tensor<?xi32>
    %s = loom.rope %k, %pos head_dim 4 theta 5.0e+05 freq_factors [8.0, 1.0]
         : tensor<?x32xf32>, tensor<?xi32>
    %y = loom.rope %k, %pos head_dim 4 theta 1.0e+06 freq_factors [1.0, 4.0]
         scale 1.1386 : tensor<?x32xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, Loom_IdTensor:$positions,
                       I64Attr:$head_dim, F32Attr:$theta,
                       OptionalAttr<DenseF32ArrayAttr>:$freq_factors,
                       OptionalAttr<F32Attr>:$scale);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $input `,` $positions `head_dim` $head_dim `theta` $theta
    (`freq_factors` $freq_factors^)? (`scale` $scale^)? attr-dict `:`
    type($input) `,` type($positions)
  }];
  let hasVerifier = 1;
}

def Loom_AttentionOp : Loom_Op<"attention", [AllTypesMatch<["q", "result"]>,
    AllTypesMatch<["k", "v"]>,
    MemoryEffects<[MemRead<DefaultResource>, MemWrite<DefaultResource>]>]> {
  let summary = "Causal grouped-query attention that appends to a KV cache";
  let description = [{
    Appends rows `k[t]`, `v[t]` at `positions[t]` of `cache`, then computes,
    for each row and query head `h`, softmax(q·Kᵀ/sqrt(head_dim))·V over the
    positions `0 .. positions[t]` of kv head `h / (n_heads / n_kv_heads)`.
    With a `window` W (sliding-window attention: Mistral v0.1, Phi-3, Qwen 2's
    upper layers), only the last W of them, positions
    `max(0, positions[t] - W + 1) .. positions[t]` (Hugging Face's and
    llama.cpp's reading of `sliding_window`: W keys, the row's own included).

    ```mlir
    %o = loom.attention %q, %k, %v, %pos, %cache heads 8 kv_heads 4 head_dim 8
         : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>,
           !loom.kv_cache<max_seq = 512, kv_heads = 4, head_dim = 8, element_type = f32>
    %w = loom.attention %q, %k, %v, %pos, %cache heads 8 kv_heads 4 head_dim 8
         window 128 : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?xi32>,
           !loom.kv_cache<max_seq = 512, kv_heads = 4, head_dim = 8, element_type = f32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$q, Loom_RowTensor:$k, Loom_RowTensor:$v,
                       Loom_IdTensor:$positions, Loom_KvCacheType:$cache,
                       I64Attr:$n_heads, I64Attr:$n_kv_heads, I64Attr:$head_dim,
                       OptionalAttr<I64Attr>:$window);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $positions `,` $cache `heads` $n_heads `kv_heads`
    $n_kv_heads `head_dim` $head_dim (`window` $window^)? attr-dict `:`
    type($q) `,` type($k) `,` type($positions) `,` qualified(type($cache))
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::Type getVType() { return getV().getType(); }
  }];
}

def Loom_FusedQkvAttentionOp : Loom_WeightUserOp<"fused_qkv_attention", [
    AllTypesMatch<["input", "result"]>, MemoryEffects<[MemRead<DefaultResource>, MemWrite<DefaultResource>]>]> {
  let summary = "QKV projection, rope, attention and output projection in one op";
  let description = [{
    Produced by `loom-fuse-projection-attention`. `qkv_weight` is the packed
    `[Wq; Wk; Wv]` weight of shape `[(n_heads + 2 n_kv_heads) head_dim, D]`,
    `out_weight` the `[D, n_heads head_dim]` output projection, `qk_bias`
    (optional) the packed `[(n_heads + n_kv_heads) head_dim]` bias added to q
    and k before rope, `v_bias` (optional, only with `qk_bias`: Qwen 2's) the
    `[n_kv_heads head_dim]` bias added to v. Equivalent to
    `linear(attention(rope(x Wqᵀ + bq), rope(x Wkᵀ + bk), x Wvᵀ + bv), Wo)`, the
    ropes with `theta`, `freq_factors` and `rope_scale` (as `loom.rope`'s
    `scale`), and the
    attention over the last `window` positions when set (as `loom.attention`'s).

    `placeholder_qkv` (set by `loom-fuse-chunk-projector` on the decoder's
    first attention) lets REFRAG chunk placeholder rows skip the packed
    projection: for such a row the runtime is handed the pre-RoPE
    `q | k | v` that `@project_chunk` computed beside the projected row, and
    uses them in place of `x Wqkvᵀ`. Token rows are computed as usual. The
    result is the same either way up to rounding; the attribute only saves
    the work.

    ```mlir
    %y = loom.fused_qkv_attention %x, %pos, %cache, @layers.0.wqkv, @layers.0.wo
         heads 8 kv_heads 4 head_dim 8 theta 1.0e+04
         : tensor<?x64xf32>, tensor<?xi32>,
           !loom.kv_cache<max_seq = 512, kv_heads = 4, head_dim = 8, element_type = f32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, Loom_IdTensor:$positions,
                       Loom_KvCacheType:$cache, FlatSymbolRefAttr:$qkv_weight,
                       FlatSymbolRefAttr:$out_weight, I64Attr:$n_heads,
                       I64Attr:$n_kv_heads, I64Attr:$head_dim, F32Attr:$theta,
                       OptionalAttr<FlatSymbolRefAttr>:$qk_bias,
                       UnitAttr:$placeholder_qkv,
                       OptionalAttr<DenseF32ArrayAttr>:$freq_factors,
                       OptionalAttr<FlatSymbolRefAttr>:$v_bias,
                       OptionalAttr<I64Attr>:$window,
                       OptionalAttr<F32Attr>:$rope_scale);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $input `,` $positions `,` $cache `,` $qkv_weight `,` $out_weight
    `heads` $n_heads `kv_heads` $n_kv_heads `head_dim` $head_dim `theta` $theta
    (`window` $window^)? (`freq_factors` $freq_factors^)?
    (`rope_scale` $rope_scale^)?
    (`qk_bias` $qk_bias^)? (`v_bias` $v_bias^)?
    (`placeholder_qkv` $placeholder_qkv^)? attr-dict
    `:` type($input) `,` type($positions) `,`
    qualified(type($cache))
  }];
  let hasVerifier = 1;
}

def Loom_SiluMulOp : Loom_Op<"silu_mul", [Pure, SameOperandsAndResultType]> {
  let summary = "silu(gate) * up, the SwiGLU activation";
  let description = [{
    ```mlir
    %h = loom.silu_mul %gate, %up : tensor<?x172xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$gate, Loom_RowTensor:$up);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($result)";
}

def Loom_AddOp : Loom_Op<"add", [Pure, SameOperandsAndResultType, Commutative]> {
  let summary = "Elementwise sum (residual connections)";
  let description = [{
    ```mlir
    %r = loom.add %x, %y : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$lhs, Loom_RowTensor:$rhs);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def Loom_LogitsOp : Loom_WeightUserOp<"logits", [Pure]> {
  let summary = "Classifier: next-token logits over the vocabulary";
  let description = [{
    `result[t, v] = sum_k input[t, k] * weight[v, k]`, `weight` `[vocab, D]`
    (the embedding table when the classifier is shared). The runtime computes
    only the rows it needs (the last one while generating).

    ```mlir
    %l = loom.logits %h, @output : tensor<?x64xf32> -> tensor<?x512xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, FlatSymbolRefAttr:$weight);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def Loom_AddRowBiasOp : Loom_WeightUserOp<"add_row_bias", [Pure, SameOperandsAndResultType]> {
  let summary = "Adds a bias vector to every row";
  let description = [{
    `result[t] = input[t] + bias` with `bias` a `[D]` weight (Huginn's q/k
    bias before rope).

    ```mlir
    %qb = loom.add_row_bias %q, @prelude.0.attn.q_bias : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, FlatSymbolRefAttr:$bias);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$input `,` $bias attr-dict `:` type($result)";
}

def Loom_ConcatOp : Loom_Op<"concat", [Pure]> {
  let summary = "Concatenates the columns of two row tensors";
  let description = [{
    `result[t] = [lhs[t], rhs[t]]` (Huginn's adapter input: the latent state
    then the prelude output).

    ```mlir
    %c = loom.concat %state, %e : tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x128xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$lhs, Loom_RowTensor:$rhs);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Loom_InitStateOp : Loom_Op<"init_state", [
    MemoryEffects<[MemRead<DefaultResource>]>]> {
  let summary = "The initial latent state of a looped block";
  let description = [{
    One row per position. The runtime fills it: by default with
    `trunc_normal(0, std, ±3 std) * scale` from a seeded generator, or with
    zeros (`--init-state zero`), or warm-started from the previous token's
    latent state. Not pure: two of them are different draws.

    ```mlir
    %s0 = loom.init_state %pos std 8.7e-03 scale 8.0 : tensor<?xi32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Loom_IdTensor:$positions, F32Attr:$std, F32Attr:$scale);
  let results = (outs Loom_RowTensor:$result);
  let hasVerifier = 1;
  let assemblyFormat = [{
    $positions `std` $std `scale` $scale attr-dict `:` type($positions) `->`
    type($result)
  }];
}

def Loom_LoopOp : Loom_Op<"loop", [
    SingleBlock, RecursiveMemoryEffects,
    AllTypesMatch<["init", "result"]>]> {
  let summary = "A looped block (recurrent depth) over a carried latent state";
  let description = [{
    Runs its body repeatedly: the body's block argument is the state, and the
    `loom.yield`ed value is the next state. The body may use values from
    above (the injected prelude output, the positions), which stay fixed.
    The iteration count is

    * a constant: `default` iterations, when there is no `count` operand and
      `exit` is `none`;
    * a run-time operand: `count(%r)`, an `i32` chosen per request;
    * adaptive: `exit` names a criterion (`kl`, `minp-kl`, `entropy-diff`,
      `latent-diff`, `cosine`, `argmax-stability`); after each iteration the
      runtime evaluates it (on the next-token distribution of the ops after
      the loop, or on the state) and stops when it is below `threshold`
      (`argmax-stability`: when the argmax held for `threshold` checks), at
      most `max` iterations.

    KV caches used inside the body are per core layer; which physical cache
    iteration `i` of layer `j` reads and writes is decided by the KV policy
    (`loom-plan-kv-reuse`, `docs/looped-blocks.md`).

    ```mlir
    %final = loom.loop %s0 count(%r) default 32 max 32 exit "none" threshold 0.0
        : tensor<?x64xf32> {
    ^bb0(%state: tensor<?x64xf32>):
      %c = loom.concat %state, %e : tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x128xf32>
      %x = loom.linear %c, @transformer.adapter.weight : tensor<?x128xf32> -> tensor<?x64xf32>
      loom.yield %x : tensor<?x64xf32>
    }
    ```
  }];
  let arguments = (ins Loom_RowTensor:$init, Optional<I32>:$count,
                       I64Attr:$default_iterations, I64Attr:$max_iterations,
                       StrAttr:$exit, F32Attr:$threshold);
  let results = (outs Loom_RowTensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $init (`count` `(` $count^ `)`)? `default` $default_iterations `max`
    $max_iterations `exit` $exit `threshold` $threshold attr-dict-with-keyword
    `:` type($result) $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::BlockArgument getState() { return getBody().front().getArgument(0); }
    /// Exit criteria `exit` accepts.
    static ::llvm::ArrayRef<::llvm::StringLiteral> exitCriteria();
  }];
}

def Loom_YieldOp : Loom_Op<"yield", [Pure, Terminator, ReturnLike,
    HasParent<"LoopOp">]> {
  let summary = "The next state of a loom.loop iteration";
  let arguments = (ins Loom_RowTensor:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

//===----------------------------------------------------------------------===//
// Chunk encoder ops (REFRAG's encoder, projector and policy)
//===----------------------------------------------------------------------===//

def Loom_LayerNormOp : Loom_WeightUserOp<"layer_norm", [Pure, SameOperandsAndResultType]> {
  let summary = "Layer normalisation with a learned scale and shift";
  let description = [{
    `result[t] = (x[t] - mean) / sqrt(var + eps) * weight + bias`, with the
    population variance over the row.

    ```mlir
    %y = loom.layer_norm %x, @enc.ln1.weight, @enc.ln1.bias eps 1.0e-05 : tensor<?x32xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, FlatSymbolRefAttr:$weight,
                       FlatSymbolRefAttr:$bias, F32Attr:$eps);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $bias `eps` $eps attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

def Loom_GeluOp : Loom_Op<"gelu", [Pure, SameOperandsAndResultType]> {
  let summary = "GELU, tanh approximation";
  let description = [{
    `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` elementwise.

    ```mlir
    %y = loom.gelu %x : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def Loom_SelfAttentionOp : Loom_Op<"self_attention", [Pure,
    AllTypesMatch<["q", "k", "v", "result"]>]> {
  let summary = "Bidirectional multi-head attention within one sequence";
  let description = [{
    Every row attends to every row (no mask, no KV cache): an encoder's
    attention. Head `a` uses columns `a head_dim .. (a+1) head_dim - 1`.

    ```mlir
    %o = loom.self_attention %q, %k, %v heads 4 head_dim 8 : tensor<?x32xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$q, Loom_RowTensor:$k, Loom_RowTensor:$v,
                       I64Attr:$n_heads, I64Attr:$head_dim);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v `heads` $n_heads `head_dim` $head_dim attr-dict `:`
    type($result)
  }];
  let hasVerifier = 1;
}

def Loom_AddPositionsOp : Loom_WeightUserOp<"add_positions", [Pure, SameOperandsAndResultType]> {
  let summary = "Adds learned position embeddings to rows 0, 1, 2, ...";
  let description = [{
    `result[t] = input[t] + table[t]`; `table` is `[max_rows, D]`.

    ```mlir
    %y = loom.add_positions %x, @encoder.pos_emb : tensor<?x32xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, FlatSymbolRefAttr:$table);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$input `,` $table attr-dict `:` type($result)";
}

def Loom_TakeRowOp : Loom_Op<"take_row", [Pure]> {
  let summary = "One row of a row tensor (an encoder's CLS output)";
  let description = [{
    ```mlir
    %cls = loom.take_row %x row 0 : tensor<?x32xf32> -> tensor<1x32xf32>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$input, I64Attr:$row);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$input `row` $row attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def Loom_ChunkPlaceholderOp : Loom_Op<"chunk_placeholder", [
    DeclareOpInterfaceMethods<SymbolUserOpInterface>, Pure]> {
  let summary = "One decoder position standing for a compressed chunk of k tokens";
  let description = [{
    The embedding of a compressed chunk: `projector(encoder(tokens))`, where
    `encoder` and `projector` name functions of the module
    (`(tensor<?xi32>) -> tensor<1x E x f32>` and
    `(tensor<?xExf32>) -> tensor<?xDxf32>`). The chunk has at most `k`
    tokens (the last chunk of a context may be shorter). In the decoder it
    takes one position and one KV slot, like a token.

    ```mlir
    %p = loom.chunk_placeholder %ids k 8 encoder @encode_chunk projector @project_chunk
         : tensor<?xi32> -> tensor<1x64xf32>
    ```
  }];
  let arguments = (ins Loom_IdTensor:$tokens, I64Attr:$k,
                       FlatSymbolRefAttr:$encoder, FlatSymbolRefAttr:$projector);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = [{
    $tokens `k` $k `encoder` $encoder `projector` $projector attr-dict `:`
    type($tokens) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Loom_ExpansionPolicyOp : Loom_Op<"expansion_policy", [Pure]> {
  let summary = "Which chunks to expand back to tokens: the top ceil(p n) scores";
  let description = [{
    `scores` has one row per chunk (the policy head's output). The result
    marks the `ceil(fraction * n)` highest-scoring chunks (ties: the lower
    chunk index), which the sequence then feeds as their raw tokens.

    ```mlir
    %expand = loom.expansion_policy %scores fraction 2.5e-01 : tensor<?x1xf32> -> tensor<?xi1>
    ```
  }];
  let arguments = (ins Loom_RowTensor:$scores, F32Attr:$fraction);
  let results = (outs TensorRankOf<[I1], [1]>:$expand);
  let assemblyFormat = [{
    $scores `fraction` $fraction attr-dict `:` type($scores) `->` type($expand)
  }];
  let hasVerifier = 1;
}

def Loom_AssembleSequenceOp : Loom_Op<"assemble_sequence", [Pure]> {
  let summary = "Decoder input rows from token, placeholder and expanded pieces";
  let description = [{
    Concatenates rows in order: embedded plain tokens (BOS, the question),
    compressed chunks (one `loom.chunk_placeholder` row each) and expanded
    chunks (their tokens' embeddings). Row `i` of the result is position `i`.

    ```mlir
    %seq = loom.assemble_sequence %bos, %c0, %c1_tokens, %question
         : tensor<1x64xf32>, tensor<1x64xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Variadic<Loom_RowTensor>:$pieces);
  let results = (outs Loom_RowTensor:$result);
  let assemblyFormat = "$pieces attr-dict `:` type($pieces) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Dispatch form
//===----------------------------------------------------------------------===//

def Loom_ProgramOp : Loom_Op<"program", [Symbol, NoTerminator, SingleBlock,
    IsolatedFromAbove, HasParent<"::mlir::ModuleOp">]> {
  let summary = "A scheduled list of kernel dispatches over one arena";
  let description = [{
    The form the artifact stores: buffers (arena slices of `max_tokens` rows),
    KV cache slots and dispatches, run in order by the runtime. `logits`
    names the output buffer; `input`, when present, the buffer the caller's
    rows are copied into (programs whose function takes rows, not token ids).

    ```mlir
    loom.program @forward arena 4096 max_tokens 8 logits 3 {
      loom.buffer 0 offset 0 row_elems 64
      loom.kv_slot 0 layer 0 max_seq 512 kv_heads 4 head_dim 8
      loom.dispatch "embed" ins [] outs [0] weights [@tok_embeddings]
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, I64Attr:$arena_bytes,
                       I64Attr:$max_tokens, I64Attr:$logits_buffer,
                       OptionalAttr<I64Attr>:$input_buffer);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $sym_name `arena` $arena_bytes `max_tokens` $max_tokens `logits`
    $logits_buffer (`input` $input_buffer^)? attr-dict-with-keyword $body
  }];
  let hasRegionVerifier = 1;
}

def Loom_BufferOp : Loom_Op<"buffer", [HasParent<"ProgramOp">]> {
  let summary = "An activation buffer: max_tokens rows at an arena offset";
  let arguments = (ins I64Attr:$id, I64Attr:$offset, I64Attr:$row_elems);
  let assemblyFormat = "$id `offset` $offset `row_elems` $row_elems attr-dict";
}

def Loom_KvSlotOp : Loom_Op<"kv_slot", [HasParent<"ProgramOp">]> {
  let summary = "A KV cache the runtime allocates per session";
  let description = [{
    `loop_layer` is -1 for an ordinary layer, or the index `j` of a core
    layer of the program's looped block, whose physical cache per iteration
    the session picks by the KV policy.
  }];
  let arguments = (ins I64Attr:$id, I64Attr:$layer, I64Attr:$max_seq,
                       I64Attr:$kv_heads, I64Attr:$head_dim,
                       DefaultValuedAttr<I64Attr, "-1">:$loop_layer);
  let assemblyFormat = [{
    $id `layer` $layer `max_seq` $max_seq `kv_heads` $kv_heads `head_dim`
    $head_dim attr-dict
  }];
}

def Loom_LoopDescOp : Loom_Op<"loop_desc", [HasParent<"ProgramOp">]> {
  let summary = "The looped block of a program, in dispatch form";
  let description = [{
    Dispatches `[body_begin, body_end)` are one iteration over the state in
    buffer `state` (the body leaves the next state in `next_state`, which the
    runtime copies back); `[body_end, tail_end)` compute the logits from the
    state (run after the last iteration, or after each one when `exit` needs
    logits); `latent` holds the normalised state (warm starts).
    `layers_before` attention layers precede the loop, `layers_per_iteration`
    are inside it. `count` says the iteration count is a run-time choice.

    ```mlir
    loom.loop_desc body [20, 66) tail 90 state 3 next_state 7 latent 8
        layers 2 + 4 default 32 max 32 exit "none" threshold 0.0
        init_std 8.7e-03 init_scale 8.0 count
    ```
  }];
  let arguments = (ins I64Attr:$body_begin, I64Attr:$body_end,
                       I64Attr:$tail_end, I64Attr:$state, I64Attr:$next_state,
                       I64Attr:$latent, I64Attr:$layers_before,
                       I64Attr:$layers_per_iteration,
                       I64Attr:$default_iterations, I64Attr:$max_iterations,
                       StrAttr:$exit, F32Attr:$threshold, F32Attr:$init_std,
                       F32Attr:$init_scale, UnitAttr:$count);
  let hasVerifier = 1;
  let assemblyFormat = [{
    `body` `[` $body_begin `,` $body_end `)` `tail` $tail_end `state` $state
    `next_state` $next_state `latent` $latent `layers` $layers_before `+`
    $layers_per_iteration `default` $default_iterations `max` $max_iterations
    `exit` $exit `threshold` $threshold `init_std` $init_std `init_scale`
    $init_scale (`count` $count^)? attr-dict
  }];
}

def Loom_DispatchOp : Loom_WeightUserOp<"dispatch", [HasParent<"ProgramOp">]> {
  let summary = "One kernel launch over arena buffers";
  let description = [{
    `kernel` is one of `embed`, `rms_norm`, `matmul`, `rope`, `attention`,
    `silu_mul`, `add`, `logits`, `fused_qkv_attention`. Operand lists are
    buffer ids, KV slot ids and weight names; the parameters follow the
    kernel table in `docs/artifact-format.md`.

    ```mlir
    loom.dispatch "matmul" ins [1] outs [2] weights [@layers.0.wq] iparams [0]
    ```
  }];
  let arguments = (ins StrAttr:$kernel, DenseI64ArrayAttr:$inputs,
                       DenseI64ArrayAttr:$outputs,
                       OptionalAttr<DenseI64ArrayAttr>:$scratch,
                       OptionalAttr<FlatSymbolRefArrayAttr>:$weights,
                       OptionalAttr<DenseI64ArrayAttr>:$iparams,
                       OptionalAttr<DenseF32ArrayAttr>:$fparams);
  let assemblyFormat = [{
    $kernel `ins` $inputs `outs` $outputs (`scratch` $scratch^)?
    (`weights` $weights^)? (`iparams` $iparams^)? (`fparams` $fparams^)?
    attr-dict
  }];
  let hasVerifier = 1;
}

#endif // LOOM_OPS_TD
