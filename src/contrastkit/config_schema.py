"""The sections of a run configuration and their defaults (the recipe's schema; :mod:`contrastkit.config` reads,
overrides and checks them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class DataConfig:
    source: str = "synthetic:shapes"  # data spec: synthetic:shapes, csv:PATH, folder:DIR, wds:SHARDS, ...
    train_size: int = 20000  # records in the training split (synthetic world)
    eval_size: int = 2000  # records in the evaluation splits (synthetic world); the cap of val/test elsewhere
    image_size: int = 64  # rendered / resized image side in pixels
    seed: int = 0  # world seed (independent of the training seed)
    neg_per_image: int = 4  # hard-negative captions per image when a term needs them
    neg_categories: str | list[str] = ""  # draw hard negatives only from these categories ("a,b"); "": all
    image_augment: str = "none"  # train augmentation of the main image: none | clip | cl2l_weak | cl2l_strong | ...
    views: int = 0  # extra augmented views per record, for terms that read image_views / text_views
    view_image_augment: str = "shapes_safe"  # augmentation preset of the extra image views
    view_text_augment: str = "eda"  # augmentation of the extra caption views: none | stopword_drop | eda
    workers: int = 0  # data-loading worker processes
    on_error: Literal["raise", "skip"] = "raise"  # bad records: stop naming the record, or skip and count
    # Manifest / Hugging Face columns (docs: contrastkit.data.sources). Lists may be written "a,b".
    image_column: str = "image"  # column with the image path (relative to the manifest) or image data
    caption_columns: str | list[str] = "caption"  # caption column(s); every non-empty one is a correct caption
    anchor_column: str = "anchor"  # text pairs (pairs:FILE): the anchor; the positive is the first caption column
    neg_caption_columns: str | list[str] = ""  # hard-negative caption column(s); the column name is the category
    tag_column: str = ""  # short tags true for the image
    neg_tag_column: str = ""  # short tags false for the image
    rewrite_column: str = ""  # rewritten captions (LaCLIP)
    label_column: str = ""  # class label (name or integer); defines a zero-shot task
    class_template: str = "a photo of a {}."  # caption of image-folder records and zero-shot prompt; {} = class
    val_fraction: float = 0.0  # hash split: share of records in val when the source has no val file
    test_fraction: float = 0.0  # hash split: share of records in test when the source has no test file
    val_source: str | None = None  # data spec of the val split (default: from data.source)
    test_source: str | None = None  # data spec of the test split (default: from data.source)
    resample: bool = False  # webdataset: draw shards with replacement (an endless stream)
    shuffle_buffer: int = 1000  # webdataset: records shuffled in a buffer of this size per worker
    rewrite_sampling: bool = False  # LaCLIP: draw the caption uniformly from {caption, its rewrites}
    synonyms: str = ""  # EDA synonym lexicon: a JSON file word -> [synonyms], "builtin", or "" (none)


@dataclass
class ModelConfig:
    image_tower: str = "tiny_cnn"  # tiny_cnn | tiny_vit | open_clip:<model-name> | none (a text model: text pairs)
    text_tower: str = "tiny_transformer"  # tiny_transformer | open_clip:<model-name> | hf:minilm | hf:<folder>
    embed_dim: int = 128  # joint embedding size (projection output)
    width: int = 128  # width of the built-in tiny towers
    text_layers: int = 2  # layers of the built-in text transformer
    # pooled text feature of the built-in tower: mean over words (a bag of contextualised words), eot (the
    # end-of-text token, as CLIP), mean_eot (their sum), attention (a learned query); all but mean see word order
    text_pooling: Literal["mean", "eot", "mean_eot", "attention"] = "mean"
    # causal self-attention in the built-in text tower (as CLIP's): each word sees only the words before it, so
    # even mean pooling binds an attribute to the noun it precedes ("red circle" is not "circle ... red")
    text_causal: bool = False
    context_length: int = 24  # tokens per caption for the built-in tokenizer
    vocab_size: int = 8192  # hashed-word vocabulary of the built-in tokenizer
    pretrained: str | None = None  # local path to pretrained weights (open_clip checkpoint)
    logit_scale_init: float | None = None  # initial t = 1/tau; null: the objective's choice, else 1/0.07
    logit_bias_init: float | None = None  # initial bias (sigmoid losses); null: the objective's choice
    logit_scale_max: float = 100.0  # t is clamped to [1, max] after each step, as CLIP does
    learn_logit_scale: bool = True  # false keeps t fixed (e.g. the contrastive-gap recipe's tau = 0.01)
    lock_image: bool = False  # freeze the image tower (its projection trains, or is dropped when widths match)
    lock_text: bool = False  # freeze the text tower (LiT); with embed_dim = tower width its space is kept as is
    init_from: str | None = None  # start from a contrastkit run directory's latest weights (fine-tuning)


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 128  # global batch size
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.1  # AdamW weight decay (not applied to biases, norms, temperature)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    warmup_steps: int = 50  # linear warmup steps, then cosine decay to 0
    grad_clip: float = 1.0  # max global gradient norm (0 disables)
    log_every: int = 10  # steps between metric lines in metrics.jsonl
    log: list[Literal["jsonl", "tensorboard", "wandb"]] = field(default_factory=lambda: ["jsonl"])  # + sinks
    eval_every: int = 0  # steps between quick validation evaluations (0: only at the end)
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    seed: int = 0  # training seed (init, sampling, augmentation)
    teacher_momentum: float = 0.9996  # EMA momentum of the teacher, for terms that read teacher_* fields
    accum_steps: int = 1  # micro-batches per step; exact large-batch gradients (GradCache), not loss summing
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16 autocast (CPU/GPU) or fp16 + grad scaler (GPU)
    grad_checkpointing: bool = False  # recompute tower activations in backward (open_clip / hf towers)
    compile: bool = False  # torch.compile the towers
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0: torch's default)
    progress: bool = True  # show a progress bar


@dataclass
class ClusterConfig:
    """k-means assignments of the training records, for terms that read cluster ids (meow, ProtoNCE)."""

    sizes: list[int] = field(default_factory=list)  # k of each clustering, e.g. [100, 300]; empty: no clustering
    every: int = 0  # steps between re-clusterings (0: once, before the first step)
    embed: Literal["model", "teacher", "reference"] = "model"  # whose embeddings are clustered
    modality: Literal["image", "text", "joint"] = "joint"  # joint: normalize(image + text)
    iters: int = 20  # Lloyd iterations per clustering
    phi_mean: float = 0.1  # mean of the per-cluster ProtoNCE temperatures (PCL scales phi to the temperature)


@dataclass
class EvalConfig:
    split: Literal["train", "val", "test"] = "test"  # split evaluated at the end of training
    max_records: int = 2000  # records evaluated (0: all)
    batch_size: int = 256  # images / texts per forward pass


@dataclass
class LoraConfig:
    """LoRA adapters (Hu et al. 2022, through peft; :mod:`contrastkit.models.lora`): W' = W + (alpha / r) B A on the
    target modules, every other parameter frozen; the run loads with the adapters merged."""

    rank: int = 0  # adapter rank r; 0: no adapters (every parameter trains)
    alpha: int = 16  # scaling alpha of the update (alpha / r) B A
    # module names as peft matches them (the last part of the path), or re:EXPR over full names
    targets: list[str] = field(default_factory=lambda: ["self_attn", "linear1", "linear2"])
    dropout: float = 0.0  # dropout on the adapters' input


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "clip", "weight": 1.0}])
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    clusters: ClusterConfig = field(default_factory=ClusterConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    name: str = "run"  # run name (default run directory: runs/<name>)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train"]["betas"] = list(self.train.betas)
        return out
