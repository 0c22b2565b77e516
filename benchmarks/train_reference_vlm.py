"""Train vlq's reference VLM (a small LLaVA that sees and reads), write its held-out set, measure it.

    # GPU: the checkpoint folder, its tarball and training_log.json
    python benchmarks/train_reference_vlm.py train --out OUT [--steps N] [--budget-minutes 3.5]
    # the shipped vlq/reference/shapes-llava, two stages on one H100 (244 s + 311 s):
    # 1. a per-patch perception loss on the vision tower, wider sizes, descriptions and short answers
    python benchmarks/train_reference_vlm.py train --out OUT --eval --wide --aux-weight 1 --steps 1591 \
        --describe-rate 0.2 --short-rate 0.15 --weights shape=1.5,color=0.75,position=1.5,relation=2,ocr=2
    # 2. multiple-choice questions only, from stage 1 (it sees after stage 1, but answers "B" to
    #    everything), with the subject probe (without it, relations between two objects stay at chance)
    python benchmarks/train_reference_vlm.py train --out OUT2 --init OUT/shapes-llava --seed 1 --steps 1684 \
        --lr 5e-4 --warmup 50 --describe-rate 0 --short-rate 0 --aux-weight 1 --subject-weight 1 --eval
    # the held-out MMBench TSV (CPU, seconds; needs Pillow for the PNGs)
    python benchmarks/train_reference_vlm.py heldout --out vlq/reference/shapes_mmbench_test.tsv
    # fp16 vs RTN vs AWQ (w4a16 g128) vs kv8/kv4: circular accuracy and wikitext-2 test perplexity
    python benchmarks/train_reference_vlm.py measure --model vlq/reference/shapes-llava --out measure.json

The model is `LlavaForConditionalGeneration` (CLIP ViT 64 px / patch 8 + MLP projector + Llama,
hidden 256, intermediate 768 (1024 with `--wide`), 6 layers, 4 heads / 2 KV heads), trained from scratch on
generated scenes (MMBench-format questions about shapes, colors, counts, positions, spatial
relations, comparisons and short words, plus descriptions; `--short-rate`: questions answered
with the option's text) and on language modeling of the
shipped ptb and wikitext-2 `valid.txt` (never `test.txt`). The data is a pure function of
(seed, batch number), so the data of a run is reproducible given `--seed` and `--steps`; with no
`--steps` the step count is sized to the time budget after 40 timed steps and printed (pass it
back to repeat the run). CUDA is put in deterministic mode where torch offers it (warn-only: ops
without a deterministic kernel still run, so GPU runs need not be bit-identical).

`--aux-weight W` adds a training-only loss (`PerceptionHeads`, not saved: the checkpoint stays a
plain LLaVA): linear heads on the vision features the projector reads classify every patch
(shape, color, grid row/column, object centre, character, its place in the word; labels from
`vlq.reference.scenes.patch_targets`). Without it the vision tower learns colors only, because
the answer tokens alone teach shapes, places and characters too slowly.

`--subject-weight W` adds a second training-only loss (`SubjectHeads`, not saved either): a linear
head on the language model's middle layer, at the last token of each object a question names
("the red square", "the object at the top left"), classifies that object's grid cell
(`Question.subjects`). Without it, a model that sees every patch still answered "is A left of,
right of, above or below B?" at chance on the direction (4% circular): the answer letter alone
never taught it to find A and B from their names first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import tarfile
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset  # noqa: E402

from vlq.calib.data import shipped_text_path  # noqa: E402
from vlq.reference import MODEL_NAME  # noqa: E402
from vlq.reference.data import TRAINING_WEIGHTS, heldout_items, training_example, write_mmbench_tsv  # noqa: E402
from vlq.reference.evaluate import chat_text, mcq_accuracy, normalize_images, perplexity  # noqa: E402
from vlq.reference.scenes import GRID, IMAGE_SIZE, TARGET_CLASSES, patch_targets, render_batch  # noqa: E402
from vlq.tiny import CHAT_TEMPLATE, IMAGE_TOKEN, build_tokenizer  # noqa: E402

PATCH = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
TEXT = dict(
    hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2
)
VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4)
#: --wide: the 2026-11-23 perception-loss trial (9.78M parameters, 18.7 MiB in float16; every size a
#: multiple of 128, the vision tower's too)
WIDE_TEXT = dict(TEXT, intermediate_size=1024)
WIDE_VISION = dict(VISION, hidden_size=256, intermediate_size=1024)
#: --tiny: a CPU smoke-test size (same code path, seconds per step)
TINY_TEXT = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
LM_CORPORA = ("wikitext2", "ptb")
MONITOR_TOKENS = 16_384
MONITOR_SEED, MONITOR_QUESTIONS = 7, 48
MAX_SUBJECTS = 2  # objects a question names (relation and compare questions name two)


def build_model(tokenizer, tiny: bool = False, max_positions: int = 2048, wide: bool = False):
    """A freshly initialized LLaVA and its processor (the `vlq.tiny.build_tiny_llava` pattern, 64 px)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    text = TINY_TEXT if tiny else WIDE_TEXT if wide else TEXT
    vision = TINY_VISION if tiny else WIDE_VISION if wide else VISION
    config = LlavaConfig(
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=max_positions,
            rope_theta=10000.0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
            **text,
        ),
        vision_config=CLIPVisionConfig(
            image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=vision["hidden_size"], **vision
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=IMAGE_TOKENS,
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def lm_token_ids(tokenizer) -> torch.Tensor:
    """The shipped validation text of every LM corpus, tokenized and concatenated."""
    ids: list[int] = []
    for name in LM_CORPORA:
        ids += tokenizer(shipped_text_path(name, "valid").read_text(), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


class Batches(IterableDataset):
    """Batch `b` is a pure function of (seed, b); worker w makes batches w, w + W, ... (order kept)."""

    def __init__(
        self,
        seed: int,
        tokenizer,
        lm_ids: torch.Tensor,
        batch: int,
        lm_batch: int,
        lm_seqlen: int,
        describe_rate: float = 0.25,
        short_rate: float = 0.0,
        weights: dict[str, float] | None = None,
        targets: bool = True,
    ):
        self.seed, self.tokenizer, self.lm_ids, self.targets = seed, tokenizer, lm_ids, targets
        self.batch, self.lm_batch, self.lm_seqlen = batch, lm_batch, lm_seqlen
        self.describe_rate, self.short_rate, self.weights = describe_rate, short_rate, weights
        self.excluded = {scene for scene, _ in heldout_items()}

    def __iter__(self):
        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        number = worker
        while True:
            yield self.make(number)
            number += workers

    def make(self, number: int) -> dict[str, torch.Tensor]:
        rng = random.Random(f"{self.seed}:{number}")
        examples = [
            training_example(rng, self.excluded, self.describe_rate, self.short_rate, self.weights)
            for _ in range(self.batch)
        ]
        eos = self.tokenizer.eos_token_id
        rows, labels = [], []
        subject_at = torch.full((len(examples), MAX_SUBJECTS), -1, dtype=torch.long)
        subject_cell = torch.full((len(examples), MAX_SUBJECTS), -100, dtype=torch.long)
        for i, ex in enumerate(examples):
            text = chat_text(self.tokenizer, ex.prompt, IMAGE_TOKENS)
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            prompt = encoded["input_ids"]
            for j, (token, cell) in enumerate(subject_tokens(ex, text, encoded["offset_mapping"])):
                subject_at[i, j], subject_cell[i, j] = token, cell
            answer = self.tokenizer.encode(ex.answer, add_special_tokens=False) + [eos]
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        target = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            ids[i, : len(r)] = torch.tensor(r)
            target[i, : len(lab)] = torch.tensor(lab)
        usable = self.lm_ids.numel() - MONITOR_TOKENS - self.lm_seqlen - 1
        starts = [rng.randrange(usable) for _ in range(self.lm_batch)]
        lm = torch.stack([self.lm_ids[s : s + self.lm_seqlen + 1] for s in starts])
        scenes = [ex.scene for ex in examples]
        targets = patch_targets(scenes, PATCH) if self.targets else {}
        return {
            "images": render_batch(scenes),
            **{f"target_{name}": value for name, value in targets.items()},
            "ids": ids,
            "labels": target,
            "mask": ids != self.tokenizer.pad_token_id,
            "lm": lm,
            "subject_at": subject_at,
            "subject_cell": subject_cell,
        }


def subject_tokens(example, text: str, offsets) -> list[tuple[int, int]]:
    """(token index, grid cell) of the last token of each object the example's question names.

    `text` is the templated turn that holds `example.prompt`, `offsets` its tokens' character
    spans; each reference is looked up after the previous one, in the question's own text.
    """
    question = example.question
    if question is None or not question.subjects:
        return []
    at = text.index(example.prompt) + example.prompt.index(question.question)
    out = []
    for reference, cell in question.subjects:
        at = text.index(reference, at) + len(reference)
        out.append((next(t for t, (_, end) in enumerate(offsets) if end >= at), cell))
    return out


class SubjectHeads(nn.Module):
    """Training-only probe (not saved): from the language model's middle layer, at the last token
    of each object a question names, classify that object's grid cell.

    It teaches the first hop of a relation question, finding the named object, at the words
    that name it; the answer letter alone gives that step no direct signal.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        text = model.config.text_config
        self.layer = text.num_hidden_layers // 2
        self.head = nn.Linear(text.hidden_size, GRID * GRID)

    def forward(self, hidden_states, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over the named objects in the batch, and its accuracy."""
        at, cell = batch["subject_at"], batch["subject_cell"]
        rows = torch.arange(at.shape[0], device=at.device)[:, None].expand_as(at)
        picked = hidden_states[self.layer][rows, at.clamp(min=0)]
        logits = self.head(picked).float()
        named = cell != -100
        nll = nn.functional.cross_entropy(logits.flatten(0, 1), cell.flatten(), ignore_index=-100, reduction="sum")
        loss = nll / named.sum().clamp(min=1)
        accuracy = ((logits.argmax(-1) == cell) & named).sum() / named.sum().clamp(min=1)
        return loss, accuracy


class PerceptionHeads(nn.Module):
    """Training-only linear probes on the vision features the projector reads (not saved).

    A forward hook keeps the output of the vision layer that `vision_feature_layer` selects; each
    head classifies every patch token into one of `patch_targets`' labels (what shape, color, grid
    cell, character, ...). This dense signal teaches the vision tower to see shapes, places and
    characters directly, which the answer tokens alone teach slowly (the 3.5-minute model learned
    colors and counts but stayed at chance on shapes, positions, relations and reading).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        vision = model.config.vision_config
        layers = [
            module
            for name, module in model.named_modules()
            if "vision_tower" in name and name.rsplit(".", 2)[-2:-1] == ["layers"]
        ]
        layer = model.config.vision_feature_layer
        if not isinstance(layer, int) or not layers:
            raise SystemExit("PerceptionHeads needs one integer vision_feature_layer and a CLIP-like tower")
        self.features: list[torch.Tensor] = []
        (layers[layer] if layer < 0 else layers[layer - 1]).register_forward_hook(self._keep)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(vision.hidden_size, n) for name, n in TARGET_CLASSES.items()}
        )

    def _keep(self, module, inputs, output) -> None:
        self.features.append(output[0] if isinstance(output, tuple) else output)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per head: mean cross-entropy over all patches plus over the patches that show something.

        The second term keeps the few object/character patches from drowning in background ones.
        Also returns each head's accuracy on the patches that show something.
        """
        features = self.features.pop()[:, 1:]  # the patch tokens ("default" strategy drops CLS)
        self.features.clear()
        losses, accuracy = [], {}
        for name, head in self.heads.items():
            target = batch[f"target_{name}"]
            logits = head(features).float()
            shown = target != 0
            nll = nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
            nll = nll.view(target.shape)
            losses.append(nll.mean() + (nll * shown).sum() / shown.sum().clamp(min=1))
            accuracy[name] = ((logits.argmax(-1) == target) & shown).sum() / shown.sum().clamp(min=1)
        return torch.stack(losses).mean(), accuracy


def parse_weights(text: str) -> dict[str, float]:
    """`position=2,ocr=2` -> {"position": 2.0, "ocr": 2.0} (question kinds' training weights)."""
    pairs = [item.split("=") for item in text.split(",") if item.strip()]
    unknown = [k for k, _ in pairs if k not in TRAINING_WEIGHTS]
    if unknown:
        raise SystemExit(f"--weights: unknown kind(s) {unknown}; kinds: {', '.join(TRAINING_WEIGHTS)}")
    return {k: float(v) for k, v in pairs}


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def vqa_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged per example first, so one-letter answers weigh as much as descriptions."""
    shifted = labels[:, 1:]
    nll = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), shifted, ignore_index=-100, reduction="none"
    )
    per_example = nll.sum(1) / (shifted != -100).sum(1).clamp(min=1)
    return per_example.mean()


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.init:  # a second stage: continue from a saved checkpoint, its own tokenizer and processor
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(args.init)
        tokenizer = processor.tokenizer
    else:
        tokenizer = build_tokenizer()
        model, processor = build_model(tokenizer, args.tiny, wide=args.wide)
    model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    lm_ids = lm_token_ids(tokenizer)
    monitor = lm_ids[-MONITOR_TOKENS:]  # held back from training: a ppl curve that is not the test set
    # an accuracy curve that is not the held-out set (other seed)
    monitor_items = heldout_items(MONITOR_QUESTIONS, MONITOR_SEED)
    print(f"device {device}, {params / 1e6:.2f}M parameters, {lm_ids.numel()} LM tokens", flush=True)

    weights = {**TRAINING_WEIGHTS, **parse_weights(args.weights)}
    data = Batches(
        args.seed,
        tokenizer,
        lm_ids,
        args.batch,
        args.lm_batch,
        args.lm_seqlen,
        args.describe_rate,
        args.short_rate,
        weights,
        targets=args.aux_weight > 0,
    )
    loader = DataLoader(
        data,
        batch_size=None,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if args.workers else None,
        persistent_workers=False,
    )
    probes = PerceptionHeads(model).to(device) if args.aux_weight > 0 else None
    subjects = SubjectHeads(model).to(device) if args.subject_weight > 0 else None
    named = list(model.named_parameters())
    for extra in (probes, subjects):
        named += list(extra.named_parameters()) if extra is not None else []
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in named if p.ndim < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
        fused=device.type == "cuda",
    )
    mean, std = processor.image_processor.image_mean, processor.image_processor.image_std
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    total = args.steps or 10**9
    curve, window = [], {"vqa": [], "lm": [], "aux": [], "subject": []}
    start = time.perf_counter()
    probe_start = None
    step = 0
    for step, batch in enumerate(loader):
        if step >= total:
            break
        if not args.steps and step == 10:
            probe_start = time.perf_counter()
        if not args.steps and step == 50:
            rate = 40 / (time.perf_counter() - probe_start)
            remaining = args.budget_minutes * 60 - (time.perf_counter() - start)
            total = 50 + int(remaining * rate)
            print(
                f"{rate:.1f} steps/s -> {total} steps (rerun with --steps {total} to reproduce)", flush=True
            )
        lr = lr_at(step, total, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        pixels = normalize_images(batch["images"], mean, std)
        with autocast:
            output = model(
                input_ids=batch["ids"],
                pixel_values=pixels,
                attention_mask=batch["mask"].long(),
                use_cache=False,
                output_hidden_states=subjects is not None,
            )
            loss_vqa = vqa_loss(output.logits, batch["labels"])
            lm = batch["lm"]
            lm_logits = model(input_ids=lm[:, :-1], use_cache=False).logits
            loss_lm = nn.functional.cross_entropy(lm_logits.float().flatten(0, 1), lm[:, 1:].flatten())
            loss = loss_vqa + args.lm_weight * loss_lm
            if probes is not None:
                loss_aux, aux_accuracy = probes(batch)
                loss = loss + args.aux_weight * loss_aux
                window["aux"].append(loss_aux.detach())
            if subjects is not None:
                loss_subject, subject_accuracy = subjects(output.hidden_states, batch)
                loss = loss + args.subject_weight * loss_subject
                window["subject"].append(subject_accuracy.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], 1.0)
        optimizer.step()
        window["vqa"].append(loss_vqa.detach())
        window["lm"].append(loss_lm.detach())
        if (step + 1) % args.log_every == 0 or step + 1 == total:
            point = {
                "step": step + 1,
                "seconds": round(time.perf_counter() - start, 1),
                "lr": lr,
                "vqa_loss": float(torch.stack(window["vqa"]).mean()),
                "lm_loss": float(torch.stack(window["lm"]).mean()),
            }
            if probes is not None:
                point["aux_loss"] = float(torch.stack(window["aux"]).mean())
                point["aux_accuracy"] = {k: round(float(v), 3) for k, v in aux_accuracy.items()}
            if subjects is not None:
                point["subject_accuracy"] = round(float(torch.stack(window["subject"]).mean()), 3)
            if (step + 1) % (args.log_every * 10) == 0 or step + 1 == total:
                model.eval()
                point["monitor_ppl"] = perplexity(model, monitor, min(2048, args.lm_seqlen))
                monitor_acc = mcq_accuracy(model, processor, monitor_items)
                point["monitor_circular"] = monitor_acc.circular
                point["monitor_per_category"] = {k: round(v, 3) for k, v in monitor_acc.per_category.items()}
                model.train()
                if probes is not None:
                    probes.features.clear()
            curve.append(point)
            window = {"vqa": [], "lm": [], "aux": [], "subject": []}
            print(json.dumps(point), flush=True)
    seconds = time.perf_counter() - start
    steps_done = min(step + 1, total)
    model.eval()
    folder = save_model(model, processor, out / MODEL_NAME)
    log = {
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "steps": steps_done,
        "train_seconds": round(seconds, 1),
        "parameters": params,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "examples_seen": steps_done * args.batch,
        "lm_tokens_seen": steps_done * args.lm_batch * args.lm_seqlen,
        "curve": curve,
    }
    if args.eval:
        log["fp16"] = quick_eval(folder, device, args.eval_windows)
        print(json.dumps(log["fp16"]), flush=True)
    (out / "training_log.json").write_text(json.dumps(log, indent=2))
    with tarfile.open(out / f"{MODEL_NAME}.tar", "w") as tar:
        tar.add(folder, arcname=MODEL_NAME)
    print(f"saved {folder} ({seconds:.0f}s of training, {steps_done} steps)", flush=True)


def save_model(model: nn.Module, processor, folder: Path) -> Path:
    """float16 weights in one safetensors file, processor and tokenizer files beside them."""
    if folder.exists():
        shutil.rmtree(folder)
    model.to(torch.float16)
    for config in (model.config, model.config.text_config, model.config.vision_config):
        config.dtype = "float16"  # a second stage loads in float32: don't save that into the sub-configs
    model.save_pretrained(folder, max_shard_size="1GB")
    processor.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    return folder


def quick_eval(folder: Path, device: torch.device, windows: int | None) -> dict:
    """Reload the saved folder in float16 and measure held-out circular accuracy and wikitext-2 ppl."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(folder)
    acc = mcq_accuracy(model, processor, heldout_items())
    test_ids = processor.tokenizer(
        shipped_text_path("wikitext2", "test").read_text(), add_special_tokens=False
    )["input_ids"]
    return {
        "circular": acc.circular,
        "vanilla": acc.vanilla,
        "per_category": acc.per_category,
        "wikitext2_test_ppl": perplexity(model, test_ids, 2048, windows),
    }


def _evaluate(model, processor, test_ids, windows: int | None, kv_bits: int = 16) -> dict:
    """Circular accuracy and wikitext-2 test ppl; kv8/kv4 through the split-prefill / chunked paths."""
    factory, chunk = None, None
    if kv_bits != 16:
        from vlq.kv import make_quantized_cache

        factory, chunk = (lambda: make_quantized_cache(kv_bits, model.config)), 256
    acc = mcq_accuracy(model, processor, heldout_items(), cache_factory=factory)
    return {
        "circular": acc.circular,
        "vanilla": acc.vanilla,
        "per_category": acc.per_category,
        "wikitext2_test_ppl": perplexity(model, test_ids, 2048, windows, chunk, factory),
    }


def measure(args: argparse.Namespace) -> None:
    """fp16, RTN w4 g128, AWQ w4 g128 (`vlq auto-awq --search-scale` and without), kv8, kv4."""
    import copy
    import tempfile

    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vlq.awq.pipeline import AutoAwqOptions, auto_awq
    from vlq.loading import load_vlm
    from vlq.reference.evaluate import rtn_quantize_

    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    processor = AutoProcessor.from_pretrained(args.model)
    test_ids = processor.tokenizer(
        shipped_text_path("wikitext2", "test").read_text(), add_special_tokens=False
    )["input_ids"]
    results: dict = {
        "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "compute_dtype": str(dtype),
        "ppl_windows": args.ppl_windows,
        "calib": f"ptb (shipped valid.txt), {args.calib_samples} x {args.calib_seqlen}",
    }
    out = Path(args.out)

    def record(name: str, run) -> None:
        start = time.perf_counter()
        try:
            results[name] = run()
            results[name]["seconds"] = round(time.perf_counter() - start, 1)
        except Exception as exc:  # keep the other rows: one failure should not lose the whole table
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, json.dumps(results[name]), flush=True)
        out.write_text(json.dumps(results, indent=2))

    fp16 = LlavaForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(device).eval()
    record("fp16", lambda: _evaluate(fp16, processor, test_ids, args.ppl_windows))

    def rtn() -> dict:
        model = copy.deepcopy(fp16)
        rtn_quantize_(model, 4, 128)
        return _evaluate(model, processor, test_ids, args.ppl_windows)

    record("rtn_w4g128", rtn)
    with tempfile.TemporaryDirectory() as tmp:
        for name, search in (("awq_w4g128", True), ("awq_w4g128_no_search", False)):

            def awq(search: bool = search, name: str = name) -> dict:
                options = AutoAwqOptions(
                    model=args.model,
                    work_dir=f"{tmp}/{name}",
                    w_group_size=128,
                    search_scale=search,
                    calib_samples=args.calib_samples,
                    calib_seqlen=args.calib_seqlen,
                    device=str(device.type),
                )
                result = auto_awq(options)
                loaded = load_vlm(result.output_dir, device=str(device.type))
                row = _evaluate(loaded.model.eval(), processor, test_ids, args.ppl_windows)
                row["awq_seconds"] = round(result.seconds, 1)
                return row

            record(name, awq)
    for bits in (8, 4):
        record(f"kv{bits}", lambda bits=bits: _evaluate(fp16, processor, test_ids, args.ppl_windows, bits))


def heldout(args: argparse.Namespace) -> None:
    path = write_mmbench_tsv(heldout_items(args.questions), args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and save the reference model")
    t.add_argument("--out", required=True, help="output folder (model folder, its .tar, training_log.json)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=0, help="optimizer steps; 0: sized to --budget-minutes")
    t.add_argument("--budget-minutes", type=float, default=3.5, help="training time when --steps is 0")
    t.add_argument("--batch", type=int, default=256, help="image-question examples per step")
    t.add_argument("--lm-batch", type=int, default=2, help="text windows per step")
    t.add_argument("--lm-seqlen", type=int, default=2048)
    t.add_argument("--lm-weight", type=float, default=1.0)
    t.add_argument(
        "--aux-weight", type=float, default=0.0, help="weight of the per-patch perception loss (0: off)"
    )
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--workers", type=int, default=min(10, max(0, (os.cpu_count() or 2) - 4)))
    t.add_argument("--device", default="auto")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--eval", action="store_true", help="after saving: held-out accuracy and wikitext-2 ppl")
    t.add_argument("--eval-windows", type=int, default=None, help="limit the ppl windows (smoke tests)")
    t.add_argument("--init", default=None, help="continue from this checkpoint folder (a second stage)")
    t.add_argument("--describe-rate", type=float, default=0.25, help="share of description examples")
    t.add_argument(
        "--short-rate", type=float, default=0.0, help="share of short-answer (option text) examples"
    )
    t.add_argument("--weights", default="", help="question-kind training weights, e.g. position=2,ocr=2")
    t.add_argument(
        "--subject-weight",
        type=float,
        default=0.0,
        help="weight of the training-only SubjectHeads loss (where each object a question names is)",
    )
    t.add_argument("--tiny", action="store_true", help="a tiny model (CPU smoke test of the script)")
    t.add_argument("--wide", action="store_true", help="the --wide sizes (vision 256/1024, text MLP 1024)")
    t.set_defaults(func=train)
    h = sub.add_parser("heldout", help="write the held-out MMBench TSV")
    h.add_argument("--out", required=True)
    h.add_argument("--questions", type=int, default=200)
    h.set_defaults(func=heldout)
    m = sub.add_parser("measure", help="fp16 vs RTN vs AWQ (w4a16 g128) vs kv8/kv4: accuracy and ppl")
    m.add_argument("--model", required=True, help="the 16-bit reference folder")
    m.add_argument("--out", required=True, help="JSON results (rewritten after every row)")
    m.add_argument("--device", default="auto")
    m.add_argument("--calib-samples", type=int, default=128)
    m.add_argument("--calib-seqlen", type=int, default=2048)
    m.add_argument("--ppl-windows", type=int, default=None, help="limit the 2048-token ppl windows")
    m.set_defaults(func=measure)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
