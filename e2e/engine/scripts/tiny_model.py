"""Generate tiny randomly initialised vision-language models, offline and deterministically.

Runs with the engine venv's python (it needs torch and transformers):

    python e2e/engine/scripts/tiny_model.py qwen2-vl OUT_DIR
    python e2e/engine/scripts/tiny_model.py llava OUT_DIR

Each model directory holds what vLLM loads from a Hugging Face checkpoint: config.json, random
weights in model.safetensors, a byte-level tokenizer (tokenizer.json: 256 byte tokens, no merges,
plus the family's special tokens), a chat template and the processor configs with a small pixel
cap. Nothing is downloaded. The same family and seed always give the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Below the tokenizer's 256 byte tokens and the specials; rounded up like real vocabularies.
VOCAB_SIZE = 512
MAX_POSITIONS = 32768
# Qwen2-VL: 14-px patches merged 2×2, so one image token per 28×28 pixels. The cap of 224×224
# pixels gives at most 64 image tokens per image.
QWEN_MAX_PIXELS = 224 * 224
QWEN_MIN_PIXELS = 56 * 56

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]

# ChatML, the shape Qwen2-VL's own template has: a system turn unless one is given, images and
# videos as a vision_start/pad/end triple where they stand in the content.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] in ('video', 'video_url') %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-1.5's "USER: <image>\n... ASSISTANT:" form.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %}"
    "ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def byte_tokenizer(specials: list[str]) -> Any:
    """A byte-level BPE tokenizer without merges: every byte is a token, ids 0-255; the special
    tokens follow from 256 in the order given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok


def ids(tok: Any, specials: list[str]) -> dict[str, int]:
    return {s: int(tok.token_to_id(s)) for s in specials}


def save_weights(model: Any, out: Path, renames: dict[str, str] | None = None) -> None:
    """model.safetensors with the key names published checkpoints have: transformers maps most
    of its in-memory names back when saving; ``renames`` (prefix → prefix) does the rest."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(out, safe_serialization=True)
    if renames:
        path = out / "model.safetensors"
        tensors = load_file(str(path))
        renamed = {}
        for key, value in tensors.items():
            for old, new in renames.items():
                if key.startswith(old) and not key.startswith(new):
                    key = new + key[len(old) :]
            renamed[key] = value
        save_file(renamed, str(path), metadata={"format": "pt"})


def qwen2_vl(out: Path, seed: int) -> None:
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = byte_tokenizer(QWEN_SPECIALS)
    special = ids(tok, QWEN_SPECIALS)
    head_dim = 32  # vLLM's CPU attention kernels take 32 and up, not 16
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": MAX_POSITIONS,
            "max_window_layers": 2,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                # multimodal rotary sections (time, height, width): head_dim / 2 in all
                "mrope_section": [4, 6, 6],
            },
            "bos_token_id": special["<|endoftext|>"],
            "eos_token_id": special["<|im_end|>"],
            "dtype": "bfloat16",
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 1,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=special["<|image_pad|>"],
        video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"],
        vision_end_token_id=special["<|vision_end|>"],
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|im_end|>"],
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2VLForConditionalGeneration"]
    assert head_dim * 2 == config.text_config.hidden_size
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)
    config.dtype = "bfloat16"
    config.save_pretrained(out)
    save_weights(model, out)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=MAX_POSITIONS,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    size = {"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS}
    image_processor = Qwen2VLImageProcessor(size=size)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    # Published checkpoints also carry preprocessor_config.json; mmop's catalog reads it.
    image_processor.save_pretrained(out)


def llava(out: Path, seed: int) -> None:
    import torch
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    tok = byte_tokenizer(LLAVA_SPECIALS)
    special = ids(tok, LLAVA_SPECIALS)
    image_size, patch_size = 112, 14  # (112/14)² = 64 image tokens per image
    config = LlavaConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,  # head_dim 32, the smallest vLLM's CPU attention takes
            "num_key_value_heads": 1,
            "max_position_embeddings": MAX_POSITIONS,
            "bos_token_id": special["<s>"],
            "eos_token_id": special["</s>"],
            "pad_token_id": special["<pad>"],
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "image_size": image_size,
            "patch_size": patch_size,
            "projection_dim": 32,
        },
        image_token_id=special["<image>"],
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    config.dtype = "bfloat16"
    config.save_pretrained(out)
    # llava-hf checkpoints keep CLIPVisionModel's own prefix, which vLLM's loader expects.
    save_weights(model, out, renames={"vision_tower.": "vision_tower.vision_model."})

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    image_processor.save_pretrained(out)


FAMILIES = {"qwen2-vl": qwen2_vl, "llava": llava}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("out", type=Path, help="directory to write (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    out: Path = ns.out
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        parser.error(f"{out} is not empty")
    FAMILIES[ns.family](out, ns.seed)
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir())
    print(json.dumps({"family": ns.family, "path": str(out), "bytes": size, "files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
