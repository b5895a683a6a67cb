"""One unlearning request on 7B-sized LLaVA-1.5 and Qwen2-VL architectures with random weights, built from
configs directly on the GPU in bf16 (nothing downloaded), and what it cost (issue 9): per-phase seconds,
s/step, the re-projection's share of a step, peak GPU memory, memory with 1 and 4 sessions, and the step
memory the engine estimated beforehand.

    python scripts/gpu_check.py --json runs/gpu_check.json [--arch llava|qwen2vl|both] [--steps 20]
    python scripts/gpu_check.py --dry-run-cpu [--size small|tiny]   # the same code path, small models, CPU float32

The request: 8 forget renders, 30 retain renders (upscaled to 448 px: Qwen2-VL sees them at its unlearning
cap, LLaVA at 336 px), the default ``UnlearnConfig`` except ``steps`` fixed, ``stop_when_forgotten=False``,
``evaluate="none"``. Sessions: three more chains restore the request's adapter (what the app does when a
visitor's session replays a request); each should cost its adapter only. A request refused by the memory
check (fake free memory) must leave allocated memory as it was.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nscvf import world
from nscvf.cache import Cache
from nscvf.errors import ResourceError
from nscvf.method import UnlearnConfig, UnlearningChain, memory
from nscvf.models import embedded, tiny, wrap_model

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30

# Real sizes (LLaVA-1.5-7B: CLIP ViT-L/14-336 + 2-layer GELU MLP + Llama-2-7B; Qwen2-VL-7B-Instruct), and small
# versions of the same architectures for the CPU dry run (the test suite runs "tiny").
SIZES = {
    "full": {
        "clip": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336),
        "llama": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32064),
        "qwen_vision": dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4),
        "qwen_text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, vocab_size=152064),
        "mrope": [16, 24, 24],
    },
    "small": {
        "clip": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, image_size=112),
        "llama": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=32064),
        "qwen_vision": dict(depth=4, embed_dim=64, num_heads=4, mlp_ratio=4),
        "qwen_text": dict(hidden_size=128, intermediate_size=592, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=32064),
        "mrope": [4, 6, 6],
    },
    "tiny": {
        "clip": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28),
        "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1024),
        "qwen_vision": dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2),
        "qwen_text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=1024),
        "mrope": [2, 3, 3],
    },
}  # fmt: skip
PATCH, MERGE = 14, 2


def build_llava(size: str):
    """LLaVA-1.5 layout (CLIP vision tower at its penultimate layer, CLS dropped -> GELU MLP -> Llama)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    s = SIZES[size]
    px = s["clip"]["image_size"]
    ip = CLIPImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    processor = tiny.llava_processor(ip, num_additional_image_tokens=1)
    processor.patch_size = PATCH  # our own processor object: the image-token count follows the real patch size
    tok = processor.tokenizer
    vision = CLIPVisionConfig(**s["clip"], patch_size=PATCH, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(**s["llama"], max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(embedded.IMAGE_TOKEN),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_seq_length=(px // PATCH) ** 2, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    return LlavaForConditionalGeneration, config, processor, tok


def build_qwen2vl(size: str):
    """Qwen2-VL layout (ViT with a 2 x 2 patch merger inside ``model.visual`` -> Qwen2 LLM with M-RoPE)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    s = SIZES[size]
    processor = tiny.qwen_processor()
    processor.image_processor = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2)
    tok = processor.tokenizer
    text = dict(**s["qwen_text"], max_position_embeddings=32768, rms_norm_eps=1e-6, bos_token_id=None,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": s["mrope"]})  # fmt: skip
    vision = dict(**s["qwen_vision"], hidden_size=text["hidden_size"], patch_size=PATCH, spatial_merge_size=MERGE,
                  temporal_patch_size=2, in_channels=3)  # fmt: skip
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}  # fmt: skip
    return Qwen2VLForConditionalGeneration, Qwen2VLConfig(text_config=text, vision_config=vision, **ids), processor, tok


BUILDERS = {"llava": build_llava, "qwen2vl": build_qwen2vl}


def build(arch: str, size: str, device: str, dtype: torch.dtype):
    """The model with random weights, created on ``device`` in ``dtype`` (no host copy), wrapped."""
    cls, config, processor, tok = BUILDERS[arch](size)
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype)
    model = tiny.finish(model, tok)
    return wrap_model(model, processor, f"random {arch} ({size})")


def _images(n_forget: int, n_retain: int, px: int):
    target = world.get_character("Dravik")
    others = [c for c in world.CHARACTERS if c.name != target.name]
    forget = [im.resize((px, px)) for im in world.forget_examples(target, n_forget)]
    retain = [world.render(others[i % len(others)], 200 + i).resize((px, px)) for i in range(n_retain)]
    return forget, retain


def _allocated(device: str) -> int | None:
    return torch.cuda.memory_allocated() if device == "cuda" else None


def _gib(b) -> float | None:
    return None if b is None else round(b / GIB, 3)


def _adapter_bytes(vlm) -> int:
    return sum(p.numel() * p.element_size() for n, p in vlm.model.named_parameters() if "lora_" in n)


def zerogpu_shaped(vlm, cache, chain, forget, retain, cfg, device: str) -> dict:
    """The same request as ZeroGPU runs it (nscvf.zerogpu): weights on the device since start-up, the
    session's chain passed in as CPU data and rebuilt inside the call, the adapter returned on the CPU.
    One call per request, in this process (a ZeroGPU worker is a fork of it)."""
    from nscvf import zerogpu
    from nscvf.method import UnlearningChain

    zerogpu.register_base(vlm)
    session = UnlearningChain(vlm, cache)
    state = zerogpu.chain_state(session)
    job = zerogpu.ForgetJob(tuple(forget), cfg, retain=tuple(retain), target="Dravik")
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    out = zerogpu.run("forget", state, job)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t
    direct = chain.steps[0].adapter_state
    same = all(torch.equal(direct[k], out.adapter_state[k]) for k in direct)
    session.close()
    return {"request_s": round(seconds, 2), "duration_asked_s": zerogpu.duration("forget")(state, job),
            "same_weights_as_direct": same, "on_cpu": all(v.device.type == "cpu" for v in out.adapter_state.values())}  # fmt: skip


def check(arch: str, size: str, device: str, dtype: torch.dtype, steps: int, n_forget: int, n_retain: int, px: int) -> dict:
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.time()
    vlm = build(arch, size, device, dtype)
    build_s, weights = time.time() - t, _allocated(device)
    forget, retain = _images(n_forget, n_retain, px)
    cfg = UnlearnConfig(steps=steps, stop_when_forgotten=False, evaluate="none")
    tmp = tempfile.TemporaryDirectory()  # a cold cache: the null space is computed, not reused from a run before
    cache = Cache(tmp.name)
    chain = UnlearningChain(vlm, cache)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.time()
    r = chain.forget(forget, retain, cfg, target="Dravik")
    if cuda:
        torch.cuda.synchronize()
    request_s = time.time() - t
    peak = torch.cuda.max_memory_allocated() if cuda else None
    gc.collect()
    after1, lora1 = _allocated(device), _adapter_bytes(vlm)
    sessions = [UnlearningChain(vlm, cache) for _ in range(3)]
    for c in sessions:
        c.restore(r, chain.adapter_state(), forget)
    gc.collect()
    after4, lora4 = _allocated(device), _adapter_bytes(vlm)
    extra = (after4 - after1) / 3 if cuda else (lora4 - lora1) / 3  # CPU: the adapter's bytes
    # A request refused before its first step (fake 1 MiB card) leaves allocated memory as it was.
    real_free = memory.free_memory
    memory.free_memory = lambda _device: 2**20
    try:
        before = _allocated(device)
        chain.forget(forget, retain, cfg, target="Dravik")
        refused = "not refused"
    except ResourceError as e:
        gc.collect()
        refused = {"message": str(e), "leak_gib": None if before is None else _gib(_allocated(device) - before)}
    finally:
        memory.free_memory = real_free
    zg = zerogpu_shaped(vlm, cache, chain, forget, retain, cfg, device)
    tm = r.timings
    out = {
        "card": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "size": size,
        "peak_gib": _gib(peak),
        "extra_session_gib": round(extra / GIB, 6),
        "null_space_s": tm.get("null_space"),
        "s_per_step": tm.get("seconds_per_step"),
        "reprojection_share": round(tm.get("projection", 0) / max(tm.get("optimise", 1e-9), 1e-9), 4),
        "request_s": round(request_s, 2),
        "steps": r.steps_run,
        "weights_gib": _gib(weights),
        "after_1_session_gib": _gib(after1),
        "after_4_sessions_gib": _gib(after4),
        "step_memory_estimate_gib": tm.get("step_memory_estimate_gib"),
        "build_s": round(build_s, 2),
        "timings": tm,
        "config": {k: r.config[k] for k in ("micro_batches", "checkpointing", "retain_batch", "answer_weight", "energy")},
        "n_forget": r.n_forget,
        "n_retain": r.n_retain,
        "visual_tokens": int(vlm.image_features(forget[:1])[0][0].shape[0]),
        "refused_request": refused,
        "zerogpu": zg,
    }
    for c in [chain, *sessions]:
        c.close()
    del chain, sessions, vlm, r
    gc.collect()
    tmp.cleanup()
    if cuda:
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["llava", "qwen2vl", "both"], default="both")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--forget", type=int, default=8)
    p.add_argument("--retain", type=int, default=30)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--dry-run-cpu", action="store_true", help="small versions of the architectures on the CPU (float32)")
    p.add_argument("--size", choices=list(SIZES), help="model sizes (default: full on a GPU, small for --dry-run-cpu)")
    args = p.parse_args(argv)

    if args.dry_run_cpu:
        device, dtype, size = "cpu", torch.float32, args.size or "small"
    else:
        if not torch.cuda.is_available():
            p.error("no CUDA device: run with --dry-run-cpu to check the script on the CPU")
        device, dtype, size = "cuda", torch.bfloat16, args.size or "full"
    # Qwen2-VL keeps an image's resolution within its pixel budget: the dry run's images are small on purpose.
    px = 448 if size == "full" else SIZES[size]["clip"]["image_size"] * 2
    archs = ["llava", "qwen2vl"] if args.arch == "both" else [args.arch]
    results = {}
    for arch in archs:
        results[arch] = check(arch, size, device, dtype, args.steps, args.forget, args.retain, px)
        print(json.dumps({arch: results[arch]}, indent=1, default=str), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = {
        "gpu": results,
        "command": "python scripts/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit or None,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "cuda": torch.version.cuda},
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
