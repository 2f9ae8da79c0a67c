"""Preference data for our trainer: records -> rows -> padded batches (our column contract).

A row (one `PreferencePair`, images resolved under the image root):

    {"id", "images": [abs paths], "rejected_images": [abs paths] | None, "prompt": [turns],
     "chosen", "rejected", "chosen_key", "rejected_key",        # reference-cache keys
     "ref_chosen_logps", "ref_rejected_logps",                  # sums, once precomputed
     "ref_chosen_tokens", "ref_rejected_tokens"}                # token counts (for means)

A batch of B rows (`PreferenceCollator`), rows 0..B-1 chosen and B..2B-1 rejected:

    input_ids, attention_mask, response_mask          [2B, T]  prompt + response, right-padded
    vision_chosen / vision_rejected                   processor image tensors of each side
    ref_chosen_logps, ref_rejected_logps, ...         [B]      when the rows carry them

Text is split the way TRL splits it: the prompt is the chat template with the generation
prompt, the response is what the full conversation adds after it (for LLaVA-1.5's template,
" answer</s>\\n"); prompt and response are tokenised separately, so the prompt's tokens are
identical on both sides. Images are decoded and processed once per side; when a pair has no
`rejected_images` the rejected side reuses the chosen side's pixels (TRL processes them twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmalign.io.formats import read_records
from mmalign.io.images import image_hash, load_image, resolve_image
from mmalign.io.messages import typed_messages
from mmalign.records import PreferencePair, RecordError, Sample, Turn
from mmalign.train.ref_cache import entry_key

REF_FIELDS = ("ref_chosen_logps", "ref_rejected_logps", "ref_chosen_tokens",
              "ref_rejected_tokens")


def load_pairs(paths: list[str], image_root: str | None, fmt: str | None = None,
               limit: int | None = None) -> list[tuple[PreferencePair, Path]]:
    """Read preference pairs from any format `mmalign.io` reads; images are checked (inside
    the root, readable, within size limits). A bad record stops the run, named by file,
    record and field; a file of samples (no chosen/rejected) is refused by name."""
    out: list[tuple[PreferencePair, Path]] = []
    for p in paths:
        root = Path(image_root) if image_root else Path(p).parent
        for r in read_records(p, fmt, image_root=root, check_images=True):
            if not isinstance(r, PreferencePair):
                raise RecordError("preference training needs pairs (prompt, chosen, rejected); "
                                  "this is an SFT sample", file=str(p), record_id=r.id)
            out.append((r, root))
            if limit is not None and len(out) >= limit:
                return out
    return out


class PreferenceDataset(torch.utils.data.Dataset):
    """List-backed rows; `__getitem__` returns a row dict (the collator does the rest)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[PreferencePair, Path]], max_length: int | None
                   ) -> PreferenceDataset:
        hashes: dict[Path, str] = {}

        def content_hashes(paths: list[Path]) -> list[str]:
            for p in paths:
                if p not in hashes:
                    hashes[p] = image_hash(p)
            return [hashes[p] for p in paths]

        rows = []
        for pair, root in pairs:
            images = [resolve_image(root, rel, field=f"images[{i}]")
                      for i, rel in enumerate(pair.images)]
            rejected_images = None
            if pair.rejected_images is not None:
                rejected_images = [resolve_image(root, rel, field=f"rejected_images[{i}]")
                                   for i, rel in enumerate(pair.rejected_images)]
            prompt = [t.to_dict() for t in pair.prompt]
            chosen_hashes = content_hashes(images)
            rejected_hashes = (content_hashes(rejected_images) if rejected_images is not None
                               else chosen_hashes)
            rows.append({
                "id": pair.id,
                "images": [str(p) for p in images],
                "rejected_images": (None if rejected_images is None
                                    else [str(p) for p in rejected_images]),
                "prompt": prompt,
                "chosen": pair.chosen,
                "rejected": pair.rejected,
                "chosen_key": entry_key(chosen_hashes, prompt, pair.chosen, max_length),
                "rejected_key": entry_key(rejected_hashes, prompt, pair.rejected, max_length),
            })
        return cls(rows)

    def attach_reference(self, values: dict[str, tuple[float, int]]) -> None:
        """Write cached (sum, tokens) reference values into every row."""
        for row in self.rows:
            for side in ("chosen", "rejected"):
                logp, tokens = values[row[f"{side}_key"]]
                row[f"ref_{side}_logps"] = logp
                row[f"ref_{side}_tokens"] = tokens


def preflight_samples(pairs: list[tuple[PreferencePair, Path]]) -> list[Sample]:
    """Each pair as an SFT sample with its longer response, for `sft.preflight_lengths`."""
    out = []
    for pair, _ in pairs:
        longer = max(pair.chosen, pair.rejected, key=len)
        out.append(Sample(pair.id, list(pair.images), [*pair.prompt, Turn("assistant", longer)]))
    return out


@dataclass
class PreferenceCollator:
    """Rows -> one padded batch (see the module docstring for the layout)."""

    processor: Any
    max_length: int | None = None

    def __post_init__(self) -> None:
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def split_texts(self, row: dict[str, Any]) -> tuple[str, str, str]:
        """(prompt text, chosen text, rejected text) rendered by the chat template."""
        prompt_msgs = typed_messages(row["prompt"])
        prompt = self.processor.apply_chat_template(prompt_msgs, tokenize=False,
                                                    add_generation_prompt=True)
        responses = []
        for side in ("chosen", "rejected"):
            full = self.processor.apply_chat_template(
                prompt_msgs + typed_messages([{"role": "assistant", "content": row[side]}]),
                tokenize=False)
            responses.append(full)
        # The response starts where the prompt (with its generation prompt) and the full
        # conversation part ways; for most templates that is the whole prompt.
        for full in responses:
            prompt = prompt[:_common_prefix(prompt, full)]
        return prompt, responses[0][len(prompt):], responses[1][len(prompt):]

    def encode_prompts(self, prompts: list[str], images: list[list[str]]
                       ) -> tuple[list[list[int]], dict[str, torch.Tensor], dict[str, list]]:
        """Prompt token ids per row (image placeholders expanded), the processor's image
        tensors, and any per-token extras (token_type_ids, ...) as lists per row."""
        loaded = [[load_image(p) for p in row] for row in images]
        has_images = any(loaded)
        enc = self.processor(text=prompts, images=loaded if has_images else None,
                             padding=True, return_tensors="pt", add_special_tokens=False)
        mask = enc["attention_mask"].bool()
        ids = [enc["input_ids"][i][mask[i]].tolist() for i in range(len(prompts))]
        per_token, vision = {}, {}
        for key, value in enc.items():
            if key in ("input_ids", "attention_mask"):
                continue
            if isinstance(value, torch.Tensor) and value.shape == enc["input_ids"].shape:
                per_token[key] = [value[i][mask[i]].tolist() for i in range(len(prompts))]
            else:
                vision[key] = value
        return ids, vision, per_token

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [self.split_texts(r) for r in rows]
        prompts = [t[0] for t in texts]
        chosen_ids, chosen_vision, chosen_extra = self.encode_prompts(
            prompts, [r["images"] for r in rows])
        if any(r.get("rejected_images") is not None for r in rows):
            rej_images = [r["rejected_images"] if r.get("rejected_images") is not None
                          else r["images"] for r in rows]
            rejected_ids, rejected_vision, rejected_extra = self.encode_prompts(prompts,
                                                                                rej_images)
        else:
            rejected_ids, rejected_vision, rejected_extra = chosen_ids, chosen_vision, chosen_extra
        responses = self.tokenizer([t[1] for t in texts] + [t[2] for t in texts],
                                   add_special_tokens=False)["input_ids"]

        sequences, response_masks = [], []
        extras: dict[str, list[list[int]]] = {k: [] for k in chosen_extra}
        for side, (prompt_ids, extra) in enumerate(((chosen_ids, chosen_extra),
                                                    (rejected_ids, rejected_extra))):
            for i, row in enumerate(rows):
                response = responses[side * len(rows) + i]
                seq = prompt_ids[i] + response
                resp = [0] * len(prompt_ids[i]) + [1] * len(response)
                for k in extras:  # per-token extras are 0 over the response (text tokens)
                    extras[k].append((extra[k][i] + [0] * len(response))[:self.max_length])
                if self.max_length is not None:  # keep the start: image tokens sit there
                    seq, resp = seq[:self.max_length], resp[:self.max_length]
                if not any(resp):
                    raise ValueError(f"record {row['id']!r}: the prompt alone fills "
                                     f"max_length={self.max_length}; no response token is left")
                sequences.append(seq)
                response_masks.append(resp)

        t = max(len(s) for s in sequences)
        batch: dict[str, Any] = {
            "input_ids": _pad(sequences, t, self.pad_id),
            "attention_mask": _pad([[1] * len(s) for s in sequences], t, 0),
            "response_mask": _pad(response_masks, t, 0),
            "vision_chosen": chosen_vision,
            "vision_rejected": rejected_vision,
        }
        for k, v in extras.items():
            batch[k] = _pad(v, t, 0)
        if all(f in rows[0] for f in REF_FIELDS):
            for f in REF_FIELDS:
                batch[f] = torch.tensor([r[f] for r in rows], dtype=torch.float32)
        return batch


def _pad(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
