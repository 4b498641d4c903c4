"""Synthetic Wan2.2 checkpoints in the official folder layout at real dimensions (random weights).

No real weights are reachable from the GPU machines, so this writes what the Hugging Face repos
hold, file for file, through upstream's own module classes:

    <out>/config.json + diffusion_pytorch_model-0000i-of-0000N.safetensors + .index.json
        (TI2V-5B: N=3 at the top; A14B: N=6 under high_noise_model/ and low_noise_model/),
        config from WanModel.save_config, shards and index in save_pretrained's format
    <out>/models_t5_umt5-xxl-enc-bf16.pth   umt5-xxl encoder (wan.modules.t5.umt5_xxl), bf16
    <out>/Wan2.2_VAE.pth or Wan2.1_VAE.pth  WanVAE_ of vae2_2 / vae2_1, float32
    <out>/google/umt5-xxl/                  a tokenizer that AutoTokenizer loads offline

Differences from the real repos, on purpose: the DiT shards are bf16 (the official ones are
float32; Wan casts to bf16 with --convert_model_dtype either way), which halves disk and load
time; with --link-experts the A14B low-noise expert's files are hard links to the high-noise
expert's (the GPU machine has 64 GiB of disk, two bf16 experts plus T5 need ~69 GB); the
tokenizer is a small Unigram vocabulary built here (the umt5 SentencePiece model is not
downloadable), so token ids differ from the real tokenizer's but shapes, padding and special
tokens match.

    python3 benchmarks/synth_checkpoints.py --model ti2v-5b --out /tmp/ckpt/Wan2.2-TI2V-5B
    python3 benchmarks/synth_checkpoints.py --model t2v-a14b --out /tmp/ckpt/Wan2.2-T2V-A14B --link-experts \
        --lightning-loras /tmp/ckpt/loras/lightning-t2v/Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1
    python3 benchmarks/synth_checkpoints.py --model s2v-14b --out /tmp/ckpt/Wan2.2-S2V-14B --reuse-t5 DIR
    python3 benchmarks/synth_checkpoints.py --model animate-14b --out /tmp/ckpt/Wan2.2-Animate-14B --reuse-t5 DIR

S2V-14B and Animate-14B: the DiT is upstream's own class built from upstream's config
(`WanModel_S2V(**wan_s2v_14B.transformer)`, `WanAnimateModel()` whose defaults are the 14B
model), in 4 bf16 shards at the top of the folder. S2V adds `wav2vec2-large-xlsr-53-english/`:
a Wav2Vec2ForCTC of the large XLSR shape with random weights, its feature extractor and a small
CTC vocabulary. Animate adds the open-clip XLM-RoBERTa ViT-H/14 (`wan.modules.animate.clip`),
`xlm-roberta-large/` (the same synthetic tokenizer as T5's), and `relighting_lora.ckpt` (the
rank-128 LoRA `get_loraconfig` describes, small random weights, in `{"state_dict": ...}`).

`--lightning-loras DIR` also writes a pair of LoRAs in the Wan2.2-Lightning layout (DIR/
high_noise_model.safetensors + low_noise_model.safetensors; keys `diffusion_model.blocks.N.<module>
.lora_down.weight / .lora_up.weight / .alpha`, float32, rank --lora-rank, every attention and FFN
projection of every block), the file layout `generate --preset lightning` loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

import torch

DIT = {
    "ti2v-5b": dict(model_type="ti2v", dim=3072, ffn_dim=14336, freq_dim=256, num_heads=24, num_layers=30,
                    in_dim=48, out_dim=48, text_len=512, shards=3, vae="2.2"),
    "t2v-a14b": dict(model_type="t2v", dim=5120, ffn_dim=13824, freq_dim=256, num_heads=40, num_layers=40,
                     in_dim=16, out_dim=16, text_len=512, shards=6, vae="2.1"),
    "i2v-a14b": dict(model_type="i2v", dim=5120, ffn_dim=13824, freq_dim=256, num_heads=40, num_layers=40,
                     in_dim=36, out_dim=16, text_len=512, shards=6, vae="2.1"),
}


# s2v-14b / animate-14b: upstream's own classes and configs (see the module docstring).
FAMILY = {"s2v-14b": dict(shards=4, vae="2.1"), "animate-14b": dict(shards=4, vae="2.1")}


def bare_wan_packages(wan_dir: str) -> None:
    """Register `wan` and `wan.modules` as bare packages, so that upstream's module files import
    without running wan/__init__.py (which imports every pipeline)."""
    for name, path in (("wan", os.path.join(wan_dir, "wan")), ("wan.modules", os.path.join(wan_dir, "wan", "modules")),
                       ("wan.configs", os.path.join(wan_dir, "wan", "configs"))):
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__path__ = [path]
            sys.modules[name] = m


def wan_modules(wan_dir: str):
    """Upstream's DiT, T5 and VAE module files (wan/__init__.py not run)."""
    bare_wan_packages(wan_dir)
    import wan.modules.model as model
    import wan.modules.t5 as t5
    import wan.modules.vae2_1 as vae21
    import wan.modules.vae2_2 as vae22

    return model, t5, vae21, vae22


def write_dit(M, key: str, out: str) -> None:
    cfg = {k: v for k, v in DIT[key].items() if k not in ("shards", "vae")}
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = M.WanModel(**cfg).eval()
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():  # keep activations bounded through 30-40 random blocks
        for b in model.blocks:
            b.self_attn.o.weight.mul_(0.05)
            b.cross_attn.o.weight.mul_(0.05)
            b.ffn[2].weight.mul_(0.05)
        torch.nn.init.normal_(model.head.head.weight, std=0.02)
    os.makedirs(out, exist_ok=True)
    model.save_config(out)
    save_shards(model.state_dict(), out, DIT[key]["shards"])
    del model
    torch.cuda.empty_cache()


def save_shards(state: dict, out: str, count: int) -> None:
    """save_pretrained's sharded safetensors layout with exactly `count` shards."""
    from safetensors.torch import save_file

    names = list(state)
    total = sum(t.numel() * t.element_size() for t in state.values())
    per = total / count
    groups, current, size = [], [], 0
    for name in names:
        current.append(name)
        size += state[name].numel() * state[name].element_size()
        if size >= per * (len(groups) + 1) and len(groups) < count - 1:
            groups.append(current)
            current = []
    groups.append(current)
    weight_map = {}
    for i, group in enumerate(groups, 1):
        fname = f"diffusion_pytorch_model-{i:05d}-of-{count:05d}.safetensors"
        save_file({n: state[n].detach().contiguous().cpu() for n in group}, os.path.join(out, fname),
                  metadata={"format": "pt"})
        weight_map.update({n: fname for n in group})
    with open(os.path.join(out, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_lightning_loras(key: str, folder: str, rank: int) -> None:
    """Random rank-`rank` LoRAs (small updates) for both experts, in the Wan2.2-Lightning layout."""
    from safetensors.torch import save_file

    dim, ffn, layers = DIT[key]["dim"], DIT[key]["ffn_dim"], DIT[key]["num_layers"]
    os.makedirs(folder, exist_ok=True)
    for seed, name in ((11, "high_noise_model.safetensors"), (12, "low_noise_model.safetensors")):
        g = torch.Generator(device="cuda").manual_seed(seed)
        tensors = {}
        for i in range(layers):
            shapes = {f"{a}.{p}": (dim, dim) for a in ("self_attn", "cross_attn") for p in "qkvo"}
            shapes.update({"ffn.0": (dim, ffn), "ffn.2": (ffn, dim)})
            for module, (fan_in, fan_out) in shapes.items():
                base = f"diffusion_model.blocks.{i}.{module}"
                tensors[f"{base}.lora_down.weight"] = (torch.randn(rank, fan_in, device="cuda", generator=g)
                                                       / fan_in ** 0.5).cpu()
                tensors[f"{base}.lora_up.weight"] = (torch.randn(fan_out, rank, device="cuda", generator=g)
                                                     * 0.01 / rank ** 0.5).cpu()
                tensors[f"{base}.alpha"] = torch.tensor(float(rank))
        save_file(tensors, os.path.join(folder, name))


def write_t5(T5, out: str) -> None:
    torch.manual_seed(1)
    model = T5.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=torch.bfloat16, device="cuda")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, os.path.join(out, "models_t5_umt5-xxl-enc-bf16.pth"))
    del model
    torch.cuda.empty_cache()


def write_vae(V21, V22, version: str, out: str) -> None:
    torch.manual_seed(2)
    if version == "2.2":
        cfg = dict(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)
        model, name = V22.WanVAE_(**cfg), "Wan2.2_VAE.pth"
    else:
        cfg = dict(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)
        model, name = V21.WanVAE_(**cfg), "Wan2.1_VAE.pth"
    torch.save(model.state_dict(), os.path.join(out, name))


def write_tokenizer(folder: str) -> None:
    """A Unigram tokenizer (tokenizers library) with T5's special tokens; AutoTokenizer loads it offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<pad>", "</s>", "<unk>"]
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()"
    words = ("a the of and in on with at to from by for is are cat dog city night sunset camera slow motion "
             "walking running street light rain water sky cloud tree forest ocean wave car road people "
             "close up shot wide cinematic video realistic beautiful style color red blue green").split()
    vocab = [(s, 0.0) for s in specials]
    vocab += [("\u2581" + w, -5.0) for w in words]
    vocab += [("\u2581", -8.0)] + [(ch, -10.0) for ch in letters] + [("\u2581" + ch, -9.0) for ch in letters]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
              "unk_token": "<unk>", "model_max_length": 512, "padding_side": "right",
              "note": "synthetic stand-in for google/umt5-xxl (wan22ctl benchmarks/synth_checkpoints.py)"}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}, f, indent=2)
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(folder)
    ids = t(["a cat walking in the rain"], padding="max_length", truncation=True, max_length=512, return_tensors="pt")
    assert ids.input_ids.shape == (1, 512) and int(ids.attention_mask.sum()) > 2, ids


def _tame(model) -> None:
    """Keep activations bounded through 40 random blocks, as write_dit does."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith((".o", "ffn.2")):
                module.weight.mul_(0.05)


def write_family_dit(key: str, out: str):
    """S2V's or Animate's DiT through upstream's class and config; returns the model (on the GPU)."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        if key == "s2v-14b":
            from wan.configs.wan_s2v_14B import s2v_14B
            from wan.modules.s2v.model_s2v import WanModel_S2V

            cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in s2v_14B.transformer.items()
                   if not k.startswith("__")}
            model = WanModel_S2V(**cfg).eval()
        else:
            from wan.modules.animate.model_animate import WanAnimateModel

            model = WanAnimateModel().eval()
        torch.set_default_dtype(torch.float32)
    _tame(model)
    os.makedirs(out, exist_ok=True)
    model.save_config(out)
    save_shards(model.state_dict(), out, FAMILY[key]["shards"])
    return model


def write_wav2vec(folder: str) -> None:
    """wav2vec2-large-xlsr-53-english's shape (24 layers of 1024) with random weights, loadable offline."""
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    os.makedirs(folder, exist_ok=True)
    letters = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdefghijklmnopqrstuvwxyz'")
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({c: i for i, c in enumerate(letters)}, f)
    Wav2Vec2CTCTokenizer(os.path.join(folder, "vocab.json")).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    config = Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                            feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                            vocab_size=len(letters))
    torch.manual_seed(3)
    Wav2Vec2ForCTC(config).save_pretrained(folder, safe_serialization=True)


def write_animate_extras(model, out: str) -> None:
    """CLIP ViT-H/14 (open-clip XLM-R), its tokenizer folder, and the relighting LoRA."""
    from peft import get_peft_model_state_dict
    from wan.modules.animate.animate_utils import get_loraconfig
    from wan.modules.animate.clip import clip_xlm_roberta_vit_h_14

    torch.manual_seed(4)
    clip = clip_xlm_roberta_vit_h_14(pretrained=False, return_transforms=False, return_tokenizer=False,
                                     dtype=torch.float16, device="cuda")
    torch.save({k: v.cpu() for k, v in clip.state_dict().items()},
               os.path.join(out, "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"))
    del clip
    write_tokenizer(os.path.join(out, "xlm-roberta-large"))
    model.add_adapter(get_loraconfig(transformer=model, rank=128, alpha=128))
    lora = {k: (v * 0.01).cpu() for k, v in get_peft_model_state_dict(model).items()}
    torch.save({"state_dict": lora}, os.path.join(out, "relighting_lora.ckpt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted([*DIT, *FAMILY]), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--link-experts", action="store_true",
                        help="A14B: low_noise_model files are hard links to high_noise_model's (saves ~29 GB)")
    parser.add_argument("--reuse-t5", metavar="DIR",
                        help="hard-link T5 and tokenizer from another synthetic checkpoint folder (same files in every repo)")
    parser.add_argument("--wan-dir", default=os.environ.get("WAN22_DIR", ".devcarry/wan2.2"))
    parser.add_argument("--lightning-loras", metavar="DIR", help="also write a Lightning-layout LoRA pair here (A14B)")
    parser.add_argument("--lora-rank", type=int, default=64)
    args = parser.parse_args()
    M, T5, V21, V22 = wan_modules(args.wan_dir)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    write_vae(V21, V22, {**DIT, **FAMILY}[args.model]["vae"], args.out)
    if args.reuse_t5:
        os.makedirs(os.path.join(args.out, "google", "umt5-xxl"), exist_ok=True)
        for rel in ("models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json",
                    "google/umt5-xxl/tokenizer_config.json", "google/umt5-xxl/special_tokens_map.json"):
            os.link(os.path.join(args.reuse_t5, rel), os.path.join(args.out, rel))
    else:
        write_tokenizer(os.path.join(args.out, "google", "umt5-xxl"))
        write_t5(T5, args.out)
    if args.model in FAMILY:
        model = write_family_dit(args.model, args.out)
        if args.model == "s2v-14b":
            write_wav2vec(os.path.join(args.out, "wav2vec2-large-xlsr-53-english"))
        else:
            write_animate_extras(model, args.out)
        del model
        torch.cuda.empty_cache()
    elif args.model == "ti2v-5b":
        write_dit(M, args.model, args.out)
    else:
        high, low = os.path.join(args.out, "high_noise_model"), os.path.join(args.out, "low_noise_model")
        write_dit(M, args.model, high)
        if args.link_experts:
            os.makedirs(low, exist_ok=True)
            for name in os.listdir(high):
                os.link(os.path.join(high, name), os.path.join(low, name))
        else:
            write_dit(M, args.model, low)
    if args.lightning_loras:
        write_lightning_loras(args.model, args.lightning_loras, args.lora_rank)
    sizes = {}
    for root, _, files in os.walk(args.out):
        for name in files:
            sizes[os.path.relpath(os.path.join(root, name), args.out)] = os.path.getsize(os.path.join(root, name))
    print(json.dumps({"model": args.model, "out": args.out, "seconds": round(time.time() - t0, 1),
                      "files": len(sizes), "gb": round(sum(sizes.values()) / 1e9, 1)}))


if __name__ == "__main__":
    main()
