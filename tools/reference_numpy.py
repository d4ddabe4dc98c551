#!/usr/bin/python3
"""Independent numpy reference for BitNet b1.58 (HuggingFace BitNetForCausalLM).

    reference_numpy.py MODEL_DIR --ids 1,2,3 [--greedy N] [--hidden] --out OUT.json

Reads a HF model directory (config.json + model.safetensors or a sharded index) with
numpy only, computes the logits of every prompt position in one causal pass (no KV
cache), then N greedy tokens by recomputing the whole sequence each step (argmax,
ties -> lowest id). Arithmetic is float32, as transformers' float32 model computes it
(RMSNorm, RoPE, softmax, residuals); ternary matmuls accumulate integer products exactly.

It also reports, per position, the smallest distance of any activation-quantizer input
x*s to a rounding tie (k + 0.5). Two correct float32 implementations that sum in different
orders can round such near-ties differently, and one flipped int8 step moves a small
model's logits by about a percent, so comparisons are strict only where that margin is
comfortably large (see tests/test_model.cpp).
"""
import argparse
import json
import os
import sys

import numpy as np

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "U8": np.uint8, "I8": np.int8}


class ModelError(Exception):
    pass


# ----------------------------------------------------------------- safetensors

def read_header(path):
    """{name: (path, dtype, shape, absolute byte offset)} for one safetensors file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > size - 8:
            raise ModelError(f"{path}: not a safetensors file (header length {n}, file size {size})")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ModelError(f"{path}: bad safetensors JSON header: {e}")
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dtype not in DTYPES:
            raise ModelError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        if end - begin != int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize or 8 + n + end > size:
            raise ModelError(f"{path}: tensor {name} has inconsistent data_offsets {begin}..{end}")
        entries[name] = (path, dtype, shape, 8 + n + begin)
    return entries


class Checkpoint:
    """Tensors of model.safetensors or of every shard listed in model.safetensors.index.json."""

    def __init__(self, model_dir):
        single = os.path.join(model_dir, "model.safetensors")
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(single):
            files = [single]
        elif os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f).get("weight_map", {})
            files = sorted({os.path.join(model_dir, v) for v in weight_map.values()})
            missing = [p for p in files if not os.path.exists(p)]
            if missing:
                raise ModelError(f"shards listed in {index} are missing: {missing}")
        else:
            raise ModelError(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")
        self.entries = {}
        for path in files:
            self.entries.update(read_header(path))

    def has(self, name):
        return name in self.entries

    def dtype(self, name):
        return self.entries[name][1]

    def get(self, name, shape=None):
        """Tensor as stored (BF16/F16 upcast to float32), with an optional shape check."""
        if name not in self.entries:
            raise ModelError(f"tensor {name} not found in checkpoint")
        path, dtype, stored_shape, offset = self.entries[name]
        if shape is not None and stored_shape != tuple(shape):
            raise ModelError(f"tensor {name} has shape {list(stored_shape)}, expected {list(shape)}")
        arr = np.fromfile(path, dtype=DTYPES[dtype], count=int(np.prod(stored_shape)), offset=offset)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            arr = arr.astype(np.float32)
        return arr.reshape(stored_shape)


# ----------------------------------------------------------------- config

def load_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise ModelError(f"{model_dir}: config.json not found (expected a HF model directory)")
    with open(path) as f:
        try:
            raw = json.load(f)
        except ValueError as e:
            raise ModelError(f"{path}: invalid JSON: {e}")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ModelError(f"{path}: missing keys {missing}")
    cfg = {k: int(raw[k]) for k in required}
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    cfg["head_dim"] = int(raw.get("head_dim") or cfg["hidden_size"] // heads)
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelError(f"{path}: only default RoPE is supported, got {rope}")
    cfg["rope_theta"] = float(raw.get("rope_theta", rope.get("rope_theta", 500000.0)))
    cfg["rms_norm_eps"] = float(raw.get("rms_norm_eps", 1e-5))
    cfg["tie_word_embeddings"] = bool(raw.get("tie_word_embeddings", False))
    cfg["max_position_embeddings"] = int(raw.get("max_position_embeddings", 2048))
    if raw.get("hidden_act", "relu2") != "relu2":
        raise ModelError(f"{path}: hidden_act must be relu2, got {raw.get('hidden_act')}")
    if raw.get("attention_bias") or raw.get("mlp_bias"):
        raise ModelError(f"{path}: biases are not supported")
    if heads % kv or heads * cfg["head_dim"] != cfg["hidden_size"]:
        raise ModelError(f"{path}: need heads % kv_heads == 0 and heads * head_dim == hidden_size")
    q = raw.get("quantization_config")
    if not q or q.get("quant_method", "bitnet") != "bitnet":
        raise ModelError(f"{path}: no bitnet quantization_config")
    cfg["quantization_mode"] = q.get("quantization_mode", "offline")
    cfg["linear_class"] = q.get("linear_class", "bitlinear")
    if (cfg["quantization_mode"], cfg["linear_class"]) not in (
            ("online", "autobitlinear"), ("offline", "autobitlinear"), ("offline", "bitlinear")):
        raise ModelError(f"{path}: unsupported quantization_config {q}")
    if q.get("use_rms_norm"):
        raise ModelError(f"{path}: quantization_config.use_rms_norm is not supported")
    return cfg


def summary(cfg):
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
            "quantization_mode", "linear_class")
    return {k: cfg[k] for k in keys}


# ----------------------------------------------------------------- weights

class BitLinear:
    """Ternary weight t [out, in] (int8) and the float32 factor applied to (q @ t^T) / s_x."""

    def __init__(self, t, factor):
        self.t, self.factor = t, np.float32(factor)


def ternarize(w):
    """transformers WeightQuant: s = 1/max(mean|W|, 1e-5), t = clamp(round(W*s), -1, 1), float32."""
    mean = np.float32(np.abs(w).mean(dtype=np.float64))
    s = np.float32(1.0) / max(mean, np.float32(1e-5))
    return np.clip(np.rint(w * s), -1, 1).astype(np.int8), s


def unpack(packed, name):
    """[out/4, in] uint8 -> [out, in] ternary; row i*(out/4)+p sits in bits 2i..2i+1 of row p."""
    codes = np.concatenate([(packed >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)])
    if (codes == 3).any():
        raise ModelError(f"{name}: packed weight contains the invalid 2-bit code 3")
    return codes.astype(np.int8) - 1


def load_bitlinear(ckpt, cfg, name, out_f, in_f):
    if cfg["quantization_mode"] == "online":
        if ckpt.dtype(name) not in ("BF16", "F16", "F32"):
            raise ModelError(f"{name}: online mode expects float master weights, got {ckpt.dtype(name)}")
        t, s = ternarize(ckpt.get(name, (out_f, in_f)))
        return BitLinear(t, np.float32(1.0) / s)  # effective weight t/s, as float32
    if ckpt.dtype(name) != "U8" or out_f % 4:
        raise ModelError(f"{name}: offline mode expects packed U8 weights and out_features % 4 == 0")
    t = unpack(ckpt.get(name, (out_f // 4, in_f)), name)
    scale = ckpt.get(name + "_scale")
    if scale.size != 1:
        raise ModelError(f"{name}_scale: expected one value, got shape {list(scale.shape)}")
    scale = float(scale.reshape(-1)[0])
    # AutoBitLinear multiplies the output by weight_scale, BitLinear divides by it.
    return BitLinear(t, scale if cfg["linear_class"] == "autobitlinear" else np.float32(1.0) / np.float32(scale))


def load_model(model_dir):
    if not os.path.isdir(model_dir):
        raise ModelError(f"{model_dir}: not a directory")
    cfg = load_config(model_dir)
    ckpt = Checkpoint(model_dir)
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q_dim, kv_dim = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    if max(h, f) * 128 >= 2 ** 24:
        raise ModelError("input width too large for exact float32 integer accumulation")
    dims = {"self_attn.q_proj": (q_dim, h), "self_attn.k_proj": (kv_dim, h), "self_attn.v_proj": (kv_dim, h),
            "self_attn.o_proj": (h, q_dim), "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h),
            "mlp.down_proj": (h, f)}
    norm = lambda name, n: ckpt.get(name, (n,)).astype(np.float32)
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layer = {lin.split(".")[1]: load_bitlinear(ckpt, cfg, p + lin + ".weight", *dims[lin]) for lin in LINEARS}
        layer["input_layernorm"] = norm(p + "input_layernorm.weight", h)
        layer["post_attention_layernorm"] = norm(p + "post_attention_layernorm.weight", h)
        layer["attn_sub_norm"] = norm(p + "self_attn.attn_sub_norm.weight", h)
        layer["ffn_sub_norm"] = norm(p + "mlp.ffn_sub_norm.weight", f)
        layers.append(layer)
    embed = ckpt.get("model.embed_tokens.weight", (v, h)).astype(np.float32)
    if ckpt.has("lm_head.weight"):
        lm_head = ckpt.get("lm_head.weight", (v, h)).astype(np.float32)
    elif cfg["tie_word_embeddings"]:
        lm_head = embed
    else:
        raise ModelError("tie_word_embeddings is false but the checkpoint has no lm_head.weight")
    return {"cfg": cfg, "embed": embed, "layers": layers,
            "norm": norm("model.norm.weight", h), "lm_head": lm_head}


# ----------------------------------------------------------------- math

def rms_norm(x, weight, eps):
    x = x.astype(np.float32)
    variance = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    return weight * (x * (np.float32(1.0) / np.sqrt(variance + np.float32(eps))))


def bitlinear(x, lin, margin):
    """Per-token absmax int8 activation quantization, in float32 like torch; ternary matmul.
    Lowers margin[i] to the distance of row i's closest quantizer input to a rounding tie."""
    x32 = x.astype(np.float32)
    s_x = np.float32(127.0) / np.maximum(np.abs(x32).max(axis=-1, keepdims=True), np.float32(1e-5))
    v = x32 * s_x
    np.minimum(margin, np.abs(v - np.floor(v) - np.float32(0.5)).min(axis=-1), out=margin)
    q = np.clip(np.rint(v), -128, 127)
    acc = q @ lin.t.T.astype(np.float32)  # integer products and sums < 2**24: exact
    return (acc / s_x * lin.factor).astype(np.float32)


def rope_tables(cfg, n):
    """cos/sin [n, head_dim]; angles pos * inv_freq rounded to float32 as in HF's rotary embedding."""
    hd = cfg["head_dim"]
    inv_freq = np.float32(1.0) / (np.float32(cfg["rope_theta"]) **
                                  (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))
    angles = np.arange(n, dtype=np.float32)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x, cos, sin):
    """Rotate-half (NEOX) RoPE on [heads, n, head_dim]: pairs (i, i + head_dim/2)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def attention(x, layer, cfg, cos, sin, margin):
    n, heads, kv, hd = len(x), cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    q = bitlinear(x, layer["q_proj"], margin).reshape(n, heads, hd).transpose(1, 0, 2)
    k = bitlinear(x, layer["k_proj"], margin).reshape(n, kv, hd).transpose(1, 0, 2)
    v = bitlinear(x, layer["v_proj"], margin).reshape(n, kv, hd).transpose(1, 0, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = np.repeat(k, heads // kv, axis=0), np.repeat(v, heads // kv, axis=0)  # head h -> kv h // group
    scores = q @ k.transpose(0, 2, 1) * np.float32(hd ** -0.5)
    scores[:, np.triu(np.ones((n, n), dtype=bool), 1)] = -np.inf
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    out = (probs @ v).transpose(1, 0, 2).reshape(n, heads * hd)
    out = rms_norm(out, layer["attn_sub_norm"], cfg["rms_norm_eps"])
    return bitlinear(out, layer["o_proj"], margin)


def mlp(x, layer, cfg, margin):
    gate, up = bitlinear(x, layer["gate_proj"], margin), bitlinear(x, layer["up_proj"], margin)
    act = np.square(np.maximum(gate, np.float32(0.0))) * up
    act = rms_norm(act, layer["ffn_sub_norm"], cfg["rms_norm_eps"])
    return bitlinear(act, layer["down_proj"], margin)


def forward(model, ids):
    """Final-norm hidden states [n, hidden], the residual stream after each layer, and each
    position's tie margin (a position's margin also covers every earlier position, whose
    keys and values it reads)."""
    cfg = model["cfg"]
    x = model["embed"][ids].astype(np.float32)
    cos, sin = rope_tables(cfg, len(ids))
    margin = np.full(len(ids), np.inf, dtype=np.float32)
    after_layer = []
    for layer in model["layers"]:
        x = x + attention(rms_norm(x, layer["input_layernorm"], cfg["rms_norm_eps"]), layer, cfg, cos, sin, margin)
        x = x + mlp(rms_norm(x, layer["post_attention_layernorm"], cfg["rms_norm_eps"]), layer, cfg, margin)
        after_layer.append(x)
    return rms_norm(x, model["norm"], cfg["rms_norm_eps"]), after_layer, np.minimum.accumulate(margin)


def lm_head(model, h, chunk=16384):
    """Unquantized output projection in float32, in vocab chunks to bound memory."""
    w = model["lm_head"]
    return np.concatenate([h @ w[i:i + chunk].T for i in range(0, len(w), chunk)], axis=1)


def greedy(model, ids, first_logits, n):
    """n greedy tokens and the tie margin of each step's forward pass; each step after the
    first recomputes the full sequence."""
    seq, logits, out, margins = list(ids), first_logits, [], []
    for step in range(n):
        if step:
            final, _, margin = forward(model, seq)
            logits = lm_head(model, final[-1:])[0]
            margins.append(float(margin[-1]))
        token = int(np.argmax(logits))  # first maximum = lowest id on ties
        out.append(token)
        seq.append(token)
    return out, margins


# ----------------------------------------------------------------- CLI

def parse_ids(text):
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ids must be comma-separated integers, got {text!r}")
    if not ids:
        raise argparse.ArgumentTypeError("--ids is empty")
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--ids", type=parse_ids, required=True, help="prompt token ids, e.g. 1,2,3")
    ap.add_argument("--greedy", type=int, default=0, metavar="N", help="greedy tokens to generate")
    ap.add_argument("--hidden", action="store_true", help="add the residual stream after each layer (last prompt position)")
    ap.add_argument("--out", required=True, help="output JSON path")
    args = ap.parse_args()
    try:
        model = load_model(args.model_dir)
        cfg = model["cfg"]
        bad = [i for i in args.ids if not 0 <= i < cfg["vocab_size"]]
        if bad:
            raise ModelError(f"token ids out of range [0, {cfg['vocab_size']}): {bad}")
    except ModelError as e:
        sys.exit(f"reference_numpy: error: {e}")
    if len(args.ids) + args.greedy > cfg["max_position_embeddings"]:
        print("reference_numpy: warning: sequence longer than max_position_embeddings", file=sys.stderr)

    final, after_layer, margin = forward(model, args.ids)
    logits = lm_head(model, final)
    greedy_ids, greedy_margins = greedy(model, args.ids, logits[-1], args.greedy)
    result = {"source": "numpy-reference", "model": summary(cfg), "prompt_ids": args.ids,
              "logits": logits.tolist(), "tie_margin": margin.tolist(), "greedy_ids": greedy_ids,
              "greedy_tie_margin": greedy_margins}
    if args.hidden:
        result["hidden"] = [x[-1].tolist() for x in after_layer]
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"reference_numpy: {len(args.ids)} positions, greedy {result['greedy_ids']} -> {args.out}")


if __name__ == "__main__":
    main()
