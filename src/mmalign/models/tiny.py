"""The embedded default model: a tiny LLaVA built offline, saved in standard HF format.

`build_tiny(out_dir)` writes a real `LlavaForConditionalGeneration` (small CLIP vision tower,
small Llama) with randomly initialised weights, a byte-level BPE tokenizer trained with
`tokenizers` on text from the synthetic world (byte-level, so any English, or any UTF-8 text,
still encodes and decodes losslessly), and a `LlavaProcessor`. `AutoModelForImageTextToText`,
`AutoProcessor`, TRL and PEFT load the folder unchanged.

The chat template is LLaVA-1.5's ("USER: ...\\n<image>\\nASSISTANT: ...</s>") except that the
question comes before the image (see CHAT_TEMPLATE), written to take both plain-string and typed
(`[{"type": "image"}, {"type": "text", ...}]`) content, with
`{% generation %}` around assistant text so TRL's `assistant_only_loss` can mask the rest.

A second architecture, `arch="idefics3"` (SmolVLM's: SigLIP-style vision tower, pixel-shuffle
connector, Llama text model, "User:/Assistant:" template), is built the same way, so code and
tests are never tied to one family. (Qwen2-VL cannot be built here: its processor requires a
video processor, which in transformers 5 needs torchvision, and there is no CPU torchvision.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]

# Both templates flatten string or typed content into `text` the same way.
_CONTENT_AS_TEXT = (
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set ns = namespace(text='') %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{% set ns.text = ns.text + '<image>' %}"
    "{% elif part['type'] == 'text' %}{% set ns.text = ns.text + part['text'] %}{% endif %}"
    "{% endfor %}{% set text = ns.text %}{% endif %}"
)
# The tiny LLaVA reads the question before the image: typed user content is rendered as its
# text, then its images ("USER: Is there a star?\n<image>\nASSISTANT:"). Image tokens can then
# attend to the question, so "is the asked shape in this patch?" is computed where the patch
# is, and the answer only has to find a match. With LLaVA-1.5's image-first order the tiny
# model never learned existence questions: the loss stayed at chance for 1500 steps of
# existence-only training, while question-first broke through after ~400 (docs/LOG.md,
# probe 10). Plain-string content is rendered as written.
_CONTENT_QUESTION_FIRST = (
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set ns = namespace(text='', img='') %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{% set ns.img = ns.img + '<image>' %}"
    "{% elif part['type'] == 'text' %}{% set ns.text = ns.text + part['text'] %}{% endif %}"
    "{% endfor %}"
    "{% set text = (ns.text | trim) + ('\n' + ns.img if ns.img else '') %}{% endif %}"
)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + _CONTENT_QUESTION_FIRST +
    "{% else %}" + _CONTENT_AS_TEXT + "{% endif %}"
    "{% if message['role'] == 'system' %}{{ text + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' + text + '\n' }}"
    # The space before the answer belongs to the answer: byte-level BPE glues it to the first
    # word (or makes it a token of its own), and it must be inside the trained span.
    "{% else %}{{ 'ASSISTANT:' }}{% generation %}{{ ' ' + text + '</s>' }}{% endgeneration %}"
    "{{ '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
END_OF_UTTERANCE = "<end_of_utterance>"
IDEFICS3_TOKENS = ["<fake_token_around_image>", "<global-img>", END_OF_UTTERANCE]
IDEFICS3_TEMPLATE = (
    "{% for message in messages %}" + _CONTENT_AS_TEXT +
    "{% if message['role'] == 'assistant' %}{{ 'Assistant:' }}"
    "{% generation %}{{ ' ' + text + '<end_of_utterance>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['role'] | capitalize + ':' + text + '<end_of_utterance>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
ARCHES = ("llava", "idefics3")


@dataclass
class TinyConfig:
    """Sizes of the tiny VLM. Defaults: ~3M parameters, ~12 MB in fp32."""

    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    vision_intermediate: int = 256
    text_hidden: int = 192
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 512
    vocab_size: int = 1024
    max_position: int = 512
    seed: int = 0
    arch: str = "llava"  # or "idefics3"
    scale_factor: int = 2  # idefics3 pixel shuffle: image tokens = patches / scale_factor**2

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHES}")

    @property
    def image_tokens(self) -> int:
        patches = (self.image_size // self.patch_size) ** 2
        return patches if self.arch == "llava" else patches // self.scale_factor ** 2


def tokenizer_corpus(n_scenes: int = 3000, seed: int = 0) -> list[str]:
    """Text to learn BPE merges from: both voices of the world, plus the prompt vocabulary.
    Byte-level BPE never fails on unseen text; this only decides which words are one token."""
    from mmalign.world.corpus import category_items, clean_samples
    from mmalign.world.defects import FILLER
    from mmalign.world.scene import sample_scene

    rng = np.random.default_rng(seed)
    texts = list(FILLER)
    for i in range(n_scenes):
        scene = sample_scene(rng, f"t{i}")
        pairs = [(a.content, b.content) for rec in clean_samples(scene, "x", rng)
                 for a, b in _pairs(rec.turns)]
        for category in ("conversation", "detail", "reasoning"):
            pairs += [(it.question, it.answer) for it in category_items(scene, category, rng)]
        # Learn merges on text laid out as the chat templates lay it out, so words after
        # "ASSISTANT:" / "Assistant:" get the same tokens in training and at inference.
        texts += [f"USER: {q}\nASSISTANT: {a}\nUser:{q}\nAssistant: {a}\n" for q, a in pairs]
    return texts


def _pairs(turns):
    return zip(turns[0::2], turns[1::2], strict=False)


def build_tokenizer(cfg: TinyConfig):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(seed=cfg.seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=cfg.max_position, padding_side="right")
    if cfg.arch == "idefics3":
        fast.add_special_tokens({"additional_special_tokens": IDEFICS3_TOKENS})
    fast.chat_template = CHAT_TEMPLATE if cfg.arch == "llava" else IDEFICS3_TEMPLATE
    return fast


def build_processor(cfg: TinyConfig, tokenizer):
    if cfg.arch == "idefics3":
        return _idefics3_processor(cfg, tokenizer)
    from transformers import CLIPImageProcessor, LlavaProcessor

    images = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        do_center_crop=True, do_resize=True, do_normalize=True, do_convert_rgb=True)
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=cfg.patch_size,
                          vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)


def _idefics3_processor(cfg: TinyConfig, tokenizer):
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    # No image splitting: one 64x64 image is one tile, like the LLaVA default.
    images = Idefics3ImageProcessor(do_image_splitting=False,
                                    size={"longest_edge": cfg.image_size},
                                    max_image_size={"longest_edge": cfg.image_size})
    return Idefics3Processor(image_processor=images, tokenizer=tokenizer,
                             image_seq_len=cfg.image_tokens, chat_template=IDEFICS3_TEMPLATE)


def _text_config(cfg: TinyConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate, num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_position, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


def build_model(cfg: TinyConfig, tokenizer):
    import torch

    torch.manual_seed(cfg.seed)
    build = _llava_model if cfg.arch == "llava" else _idefics3_model
    model = build(cfg, tokenizer)
    eos = tokenizer.eos_token_id
    if cfg.arch == "idefics3":  # its template ends every turn with <end_of_utterance>
        eos = [tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE), eos]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = eos
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _llava_model(cfg: TinyConfig, tokenizer):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_intermediate,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.vision_hidden)
    config = LlavaConfig(
        vision_config=vision, text_config=_text_config(cfg, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        # "default" drops CLIP's CLS token: one LLM token per patch.
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=cfg.image_tokens, projector_hidden_act="gelu")
    return LlavaForConditionalGeneration(config)


def _idefics3_model(cfg: TinyConfig, tokenizer):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    vision = Idefics3VisionConfig(
        hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_intermediate,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size, patch_size=cfg.patch_size)
    config = Idefics3Config(vision_config=vision, text_config=_text_config(cfg, tokenizer),
                            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                            scale_factor=cfg.scale_factor, pad_token_id=tokenizer.pad_token_id)
    return Idefics3ForConditionalGeneration(config)


def build_tiny(out_dir: str | Path, cfg: TinyConfig | None = None) -> Path:
    """Build tokenizer, processor and randomly initialised model; save them to `out_dir`."""
    import json

    from mmalign.io.atomic import atomic_path

    cfg = cfg or TinyConfig()
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(cfg)
    processor = build_processor(cfg, tokenizer)
    model = build_model(cfg, tokenizer)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "mmalign_tiny.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return out_dir
