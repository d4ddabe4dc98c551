#!/usr/bin/env python3
"""Decode speed of HuggingFace transformers' BitNetForCausalLM on a GPU, for comparison with
`bitnet bench --device cuda` on the same model directory.

    hf_bench.py MODEL_DIR [--prompt 128] [--gen 128] [--batch 1] [--dtype bfloat16]

Greedy generate() from a random prompt, timed after a warm-up; prints one line of JSON with
tokens/s. torch.compile is disabled (eager), as in hf_golden.py. Needs torch, transformers with
BitNet support, and a CUDA device; runs offline.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    ap.add_argument("--gen", type=int, default=128, help="generated tokens")
    ap.add_argument("--batch", type=int, default=1, help="sequences generated together")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = ap.parse_args()
    os.environ["TORCHDYNAMO_DISABLE"] = "1"

    import torch
    import transformers
    from transformers import BitNetForCausalLM, GenerationConfig

    if not torch.cuda.is_available():
        sys.exit("hf_bench: error: no CUDA device")
    dtype = getattr(torch, args.dtype)
    model = BitNetForCausalLM.from_pretrained(args.model_dir, dtype=dtype).to("cuda").eval()
    vocab = model.config.vocab_size
    generator = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.prompt), device="cuda", generator=generator)
    mask = torch.ones_like(ids)

    def config(n):
        return GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                                eos_token_id=None, pad_token_id=0)

    with torch.no_grad():
        model.generate(ids, attention_mask=mask, generation_config=config(8))  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, generation_config=config(args.gen))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    generated = (out.shape[1] - args.prompt) * args.batch
    print(json.dumps({"source": f"transformers {transformers.__version__}", "torch": torch.__version__,
                      "device": torch.cuda.get_device_name(), "dtype": args.dtype, "batch": args.batch,
                      "n_prompt": args.prompt, "n_gen": args.gen, "seconds": seconds,
                      "tokens_per_s": generated / seconds}))


if __name__ == "__main__":
    main()
