#!/usr/bin/env python3
"""Golden outputs from HuggingFace transformers' BitNetForCausalLM itself.

    hf_golden.py MODEL_DIR --ids 1,2,3 [--greedy N] [--hidden] [--device cpu|cuda]
                 [--torch-compile] --out OUT.json

Writes the same JSON as reference_numpy.py ("source": "transformers <version>"):
logits of every prompt position from one forward pass (float32 weights, eager
attention, no KV cache), and N greedy tokens from a manual argmax loop that
recomputes the full sequence each step (ties -> lowest id). model.generate() is run
as well; its tokens are recorded as "generate_ids" and "generate_matches_manual".
"hidden" (with --hidden) is the residual stream after each decoder layer at the
last prompt position, captured with forward hooks.

torch.compile (used by transformers' bitnet integration) is disabled unless
--torch-compile is given, so the run is eager and needs no C++ toolchain.
Needs torch, transformers (BitNet support) and accelerate; runs offline.
"""
import argparse
import json
import os
import sys


def fail(msg):
    sys.exit(f"hf_golden: error: {msg}")


def parse_ids(text):
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ids must be comma-separated integers, got {text!r}")
    if not ids:
        raise argparse.ArgumentTypeError("--ids is empty")
    return ids


def config_summary(config):
    """Same keys and types as reference_numpy.summary()."""
    q = config.quantization_config
    q = q if isinstance(q, dict) else q.to_dict()
    rope = getattr(config, "rope_parameters", None) or {}
    theta = getattr(config, "rope_theta", None) or rope.get("rope_theta", 500000.0)
    return {
        "vocab_size": int(config.vocab_size),
        "hidden_size": int(config.hidden_size),
        "intermediate_size": int(config.intermediate_size),
        "num_hidden_layers": int(config.num_hidden_layers),
        "num_attention_heads": int(config.num_attention_heads),
        "num_key_value_heads": int(config.num_key_value_heads),
        "head_dim": int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads),
        "rope_theta": float(theta),
        "rms_norm_eps": float(config.rms_norm_eps),
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "quantization_mode": q.get("quantization_mode", "offline"),
        "linear_class": q.get("linear_class", "bitlinear"),
    }


def load_model(model_dir, device):
    import torch
    import transformers
    from transformers import BitNetForCausalLM

    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        fail(f"{model_dir}: config.json not found (expected a HF model directory)")
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda given but torch.cuda.is_available() is False")
    # transformers 5 renamed torch_dtype to dtype.
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        loaded = BitNetForCausalLM.from_pretrained(
            model_dir, attn_implementation="eager", output_loading_info=True, **{dtype_kw: torch.float32})
    except Exception as e:  # the bitnet quantizer raises several kinds of errors
        fail(f"transformers {transformers.__version__} could not load {model_dir}: {type(e).__name__}: {e}\n"
             "  hints: the bitnet quantizer needs `accelerate`; some transformers versions refuse to load "
             "a quantized (packed, quantization_mode=offline) checkpoint without a GPU (try --device cuda)")
    model, info = loaded if isinstance(loaded, tuple) else (loaded, {})
    missing = [k for k in info.get("missing_keys", [])
               if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing:
        fail(f"checkpoint is missing tensors (transformers would use random weights): {sorted(missing)}")
    for key in ("unexpected_keys", "mismatched_keys"):
        if info.get(key):
            print(f"hf_golden: warning: {key}: {sorted(map(str, info[key]))}", file=sys.stderr)

    # Make sure every decoder linear really is a ternary BitLinear/AutoBitLinear.
    kinds = {}
    for module in model.model.layers.modules():
        name = type(module).__name__
        if name in ("BitLinear", "AutoBitLinear", "Linear"):
            kinds[name] = kinds.get(name, 0) + 1
    if kinds.get("Linear") or sum(kinds.values()) != 7 * model.config.num_hidden_layers:
        fail(f"decoder linears were not all replaced by BitNet linears: {kinds} "
             "(is quantization_config present in config.json?)")
    try:
        model.to(device)
    except Exception as e:
        fail(f"could not move the model to {device}: {type(e).__name__}: {e}")
    model.eval()
    return model, kinds


def argmax_lowest(row):
    """argmax with ties resolved to the lowest token id."""
    import torch

    if torch.isnan(row).any():
        fail("NaN in logits")
    return int(torch.nonzero(row == row.max())[0, 0])


def manual_greedy(model, ids, first_logits, n):
    """n greedy tokens; each step after the first recomputes the full sequence without cache."""
    import torch

    seq, logits, out = ids, first_logits, []
    for step in range(n):
        if step:
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False).logits[0, -1]
        token = argmax_lowest(logits)
        out.append(token)
        seq = torch.cat([seq, seq.new_tensor([[token]])], dim=1)
    return out


def generate_greedy(model, ids, n):
    """model.generate() with a clean greedy config (no EOS stop, no penalties); None on failure."""
    import torch
    from transformers import GenerationConfig

    eos = model.config.eos_token_id
    pad = model.config.pad_token_id
    if pad is None:
        pad = (eos[0] if isinstance(eos, (list, tuple)) else eos) or 0
    config = GenerationConfig(max_new_tokens=n, do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=pad)
    model.generation_config = config
    try:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    except Exception as e:
        print(f"hf_golden: warning: model.generate failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return out[0, ids.shape[1]:].tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--ids", type=parse_ids, required=True, help="prompt token ids, e.g. 1,2,3")
    ap.add_argument("--greedy", type=int, default=0, metavar="N", help="greedy tokens to generate")
    ap.add_argument("--hidden", action="store_true", help="add the residual stream after each layer (last prompt position)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--torch-compile", action="store_true", help="keep transformers' torch.compile decorators")
    ap.add_argument("--out", required=True, help="output JSON path")
    args = ap.parse_args()
    if not args.torch_compile:
        os.environ["TORCHDYNAMO_DISABLE"] = "1"  # must be set before torch is imported

    import torch
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)

    model, kinds = load_model(args.model_dir, args.device)
    summary = config_summary(model.config)
    bad = [i for i in args.ids if not 0 <= i < summary["vocab_size"]]
    if bad:
        fail(f"token ids out of range [0, {summary['vocab_size']}): {bad}")
    ids = torch.tensor([args.ids], dtype=torch.long, device=args.device)

    hidden = []
    hooks = [layer.register_forward_hook(
        lambda module, inputs, output: hidden.append((output[0] if isinstance(output, tuple) else output)[0, -1]))
        for layer in model.model.layers] if args.hidden else []
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0]
    for hook in hooks:
        hook.remove()

    greedy_ids = manual_greedy(model, ids, logits[-1], args.greedy)
    generate_ids = generate_greedy(model, ids, args.greedy) if args.greedy else []
    if generate_ids != greedy_ids:
        print(f"hf_golden: warning: generate() gave {generate_ids}, manual loop {greedy_ids}", file=sys.stderr)

    result = {"source": f"transformers {transformers.__version__}", "model": summary, "prompt_ids": args.ids,
              "logits": logits.double().cpu().tolist(), "greedy_ids": greedy_ids,
              "generate_ids": generate_ids, "generate_matches_manual": generate_ids == greedy_ids,
              "torch": torch.__version__, "device": args.device, "torch_compile": args.torch_compile,
              "linear_modules": kinds}
    if args.hidden:
        result["hidden"] = [h.double().cpu().tolist() for h in hidden]
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"hf_golden: {len(args.ids)} positions, greedy {greedy_ids} -> {args.out}")


if __name__ == "__main__":
    main()
