"""The testbed's arms and the papers' claims it checks, each against a control that differs only in the method.

Every arm runs with the testbed's common settings (model size, data, batch, schedule; ``COMMON``,
``SCRATCH``, ``FINETUNE``), so an arm and its control differ only where the claim says: the
objective, or the one setting that is the method (augmentation, rewrites, fixed temperature).
Fine-tuning arms start from the testbed's base model (``configs/base.yaml``, trained once).
Claims about equal compute (CL2L's extra views cost three forward passes per record) give the
method the same number of image forward passes as the control.

Metric keys are ``<evaluation>/<task>/<name>`` (testbed_runs.py); a claim's conditions name the
direction the paper expects and the margin (docs/methods.md has each paper's claim).
"""

from __future__ import annotations

from dataclasses import dataclass

from contrastkit.evaluate.verdicts import Condition
from testbed_runs import Arm, Schedule

ZS = "shapes-test/zeroshot/shape"  # held-out shape-colour combinations
R1 = "shapes-test/retrieval/image_retrieval_recall@1"
SWAP_A_VAL, SWAP_O_VAL = "shapes-val/compositional/swap_attributes", "shapes-val/compositional/swap_objects"
SWAP_A, SWAP_O = "shapes-test/compositional/swap_attributes", "shapes-test/compositional/swap_objects"
REPLACE_A = "shapes-test/compositional/replace_attribute"
REPLACE_O = "shapes-test/compositional/replace_object"
SEP = "shapes-test/geometry/linear_separability"
GAP = "shapes-test/geometry/modality_gap"
UNIFORMITY = "shapes-test/geometry/uniformity_image"
TOLERANCE = "shapes-test/geometry/tolerance_image"
TARGET_ZS = "clutter-test/zeroshot/shape"
DENSE = "shapes-dense/dense/shape_miou"  # the dense probe's mIoU over shape classes and background
NOISE = 0.02  # a loss smaller than 2 points of accuracy counts as "kept"
LONG = 5.0  # the long fine-tuning schedule: 1000 steps instead of 200
# the binding claims' conditions: >= 10 points on the seen-combination swaps with zero-shot kept; above the
# control on the held-out combinations
BINDING_SEEN = (
    Condition(SWAP_A_VAL, "higher", 0.10),
    Condition(SWAP_O_VAL, "higher", 0.10),
    Condition(ZS, "not_lower", NOISE),
)
BINDING_HELD_OUT = (Condition(SWAP_A, "higher"), Condition(SWAP_O, "higher"))

SOURCE_AND_TARGET = ("shapes-test", "shapes-val", "clutter-test")
WITH_DENSE = ("shapes-test", "shapes-val", "shapes-dense")
# The dense setting: the demo's image size and width (64 px, 4 x 4 cells of 16 px, objects 11-18 px across), where
# a cell can hold an object; at the testbed's 48 px (3 x 3 cells) no model's cells tell shapes apart.
DENSE_64 = ("data.image_size=64", "model.width=128", "model.embed_dim=128", "train.batch_size=128")
DENSE_64_EVALUATIONS = ("shapes-test", "shapes-dense")
CLUTTER = ("data.source=synthetic:shapes-clutter",)
SWAPS = ("data.neg_categories=swap_attributes,swap_objects",)  # NegCLIP's negatives swap words of the caption
FIXED_T100 = ("model.logit_scale_init=100.0", "model.learn_logit_scale=false")
# CUAXU with the alignment term at weight 10 (the paper: 1). Chosen among 3 / 5 / 10 on seed 0's val split (seen
# combinations): the largest drop of linear separability whose val zero-shot stays within 2 points of the control.
ALIGN_10 = (
    "objective=[{name: clip, weight: 1.0}, {name: uniformity, weight: 1.0}, {name: alignment, weight: 10.0}, "
    "{name: cross_uniformity, weight: 1.0}]",
)


def _fixed_t(t: float) -> tuple[str, ...]:
    return (f"model.logit_scale_init={t}", "model.learn_logit_scale=false")


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        # from scratch
        Arm("clip", "configs/clip.yaml", evaluations=WITH_DENSE),
        Arm("clip_aug", "configs/clip.yaml", ("data.image_augment=shapes_safe",)),
        Arm("cl2l", "configs/cl2l.yaml", steps_factor=1 / 3),  # 3 images per record: equal compute
        Arm("siglip", "configs/siglip.yaml"),
        Arm("align", "configs/align.yaml", steps_factor=2.0),
        Arm("mochi", "configs/mochi.yaml"),
        Arm("coca", "configs/coca.yaml", evaluations=("shapes-test", "shapes-val", "shapes-captions")),
        Arm("hq_clip", "configs/hq_clip.yaml"),
        Arm("hq_negatives_only", "configs/hq_clip.yaml", ("objective=[{name: negclip, weight: 1.0}]",)),
        Arm("laclip", "configs/clip.yaml", ("data.rewrite_sampling=true",)),
        Arm("lit", "configs/lit.yaml", ("model.embed_dim=384",)),  # the locked MiniLM's own space
        Arm("cwcl_lit", "configs/cwcl_lit.yaml", ("model.embed_dim=384",)),
        Arm("pixpro_scratch", "configs/pixpro.yaml", evaluations=WITH_DENSE),
        Arm("tips_patch_scratch", "configs/tips_patch.yaml", evaluations=WITH_DENSE),
        Arm("dense64_clip", "configs/clip.yaml", DENSE_64, steps_factor=1.25, evaluations=DENSE_64_EVALUATIONS),
        Arm("dense64_pixpro", "configs/pixpro.yaml", DENSE_64, steps_factor=1.25, evaluations=DENSE_64_EVALUATIONS),
        Arm("dense64_tips", "configs/tips_patch.yaml", DENSE_64, steps_factor=1.25, evaluations=DENSE_64_EVALUATIONS),
        Arm("temperature_t5", "configs/clip.yaml", _fixed_t(5.0)),
        Arm("temperature_t14", "configs/clip.yaml", _fixed_t(14.3)),
        Arm("temperature_t50", "configs/clip.yaml", _fixed_t(50.0)),
        # fine-tuning the base on the plain world
        Arm("base", "configs/base.yaml", start="own", evaluations=SOURCE_AND_TARGET),
        Arm("clip_ft", "configs/clip.yaml", start="base", evaluations=WITH_DENSE),
        Arm("pixpro", "configs/pixpro.yaml", start="base", evaluations=WITH_DENSE),
        Arm("tips_patch", "configs/tips_patch.yaml", start="base", evaluations=WITH_DENSE),
        Arm("clip_ft_t100", "configs/clip.yaml", FIXED_T100, start="base"),
        Arm("negclip", "configs/negclip.yaml", SWAPS, start="base"),
        Arm("degla", "configs/degla.yaml", SWAPS, start="base"),
        # binding given the steps: ~1000 NegCLIP steps moved an order-aware tower's seen swaps where 200 did not
        Arm("clip_ft_long", "configs/clip.yaml", start="base", steps_factor=LONG),
        Arm("negclip_long", "configs/negclip.yaml", SWAPS, start="base", steps_factor=LONG),
        Arm("gap_cuaxu", "configs/gap_cuaxu.yaml", start="base"),
        Arm("gap_cuaxu_a10", "configs/gap_cuaxu.yaml", ALIGN_10, start="base"),
        Arm("m2mix", "configs/m2mix.yaml", start="base"),
        Arm("meow", "configs/meow.yaml", start="base"),
        # fine-tuning the base on the shifted domain: gain on the target, forgetting of the source
        Arm("clip_ft_clutter", "configs/clip.yaml", CLUTTER, start="base", evaluations=SOURCE_AND_TARGET),
        Arm("clip_refine_clutter", "configs/clip_refine.yaml", CLUTTER, start="base", evaluations=SOURCE_AND_TARGET),
        Arm(
            "ema_distill_clutter",
            "configs/clip.yaml",
            (*CLUTTER, "objective=[{name: clip, weight: 1.0}, {name: ema_distill, weight: 0.005}]"),
            start="base",
            evaluations=SOURCE_AND_TARGET,
        ),
        Arm("m2mix_clutter", "configs/m2mix.yaml", CLUTTER, start="base", evaluations=SOURCE_AND_TARGET),
    )
}


@dataclass(frozen=True)
class Claim:
    """A paper's claim in one line, the arms that test it and the conditions on their paired differences."""

    paper: str
    claim: str
    method: str
    control: str
    conditions: tuple[Condition, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "CL2L (improved baselines)",
        "local views + EDA beat CLIP at equal compute",
        "cl2l",
        "clip",
        (Condition(ZS, "higher"), Condition(R1, "higher")),
    ),
    Claim(
        "CL2L (improved baselines)",
        "augmentation alone carries the gain",
        "clip_aug",
        "clip",
        (Condition(ZS, "higher"),),
    ),
    Claim(
        "Contrastive gap (Fahim et al.)",
        "gap and linear separability fall, zero-shot does not",
        "gap_cuaxu",
        "clip_ft_t100",
        (Condition(SEP, "lower", 0.15), Condition(GAP, "lower"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim(
        "Contrastive gap (Fahim et al.)",
        "with alignment at weight 10: linear separability falls >= 15 points, zero-shot does not",
        "gap_cuaxu_a10",
        "clip_ft_t100",
        (Condition(SEP, "lower", 0.15), Condition(GAP, "lower"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim("CWCL", "beats InfoNCE with a locked text tower", "cwcl_lit", "lit", (Condition(ZS, "higher"),)),
    Claim("MoCHi", "mixed hard negatives improve retrieval", "mochi", "clip", (Condition(R1, "higher"),)),
    Claim(
        "m2-mix",
        "more uniform embeddings, retrieval kept",
        "m2mix",
        "clip_ft_t100",
        (Condition(UNIFORMITY, "lower"), Condition(R1, "not_lower", NOISE)),
    ),
    Claim(
        "Plain fine-tuning (control)",
        "fine-tuning on the shifted domain forgets the source",
        "clip_ft_clutter",
        "base",
        (Condition(ZS, "lower", 0.10), Condition(TARGET_ZS, "not_lower", NOISE)),
    ),
    Claim(
        "CLIP-Refine",
        "source zero-shot kept better than plain fine-tuning",
        "clip_refine_clutter",
        "clip_ft_clutter",
        (Condition(ZS, "higher"),),
    ),
    Claim(
        "DeGLA self-distillation",
        "source zero-shot kept better than plain fine-tuning",
        "ema_distill_clutter",
        "clip_ft_clutter",
        (Condition(ZS, "higher"),),
    ),
    Claim(
        "m2-mix",
        "source zero-shot kept better than plain fine-tuning",
        "m2mix_clutter",
        "clip_ft_clutter",
        (Condition(ZS, "higher"),),
    ),
    Claim(
        "NegCLIP",
        "hard negatives teach binding (seen combinations)",
        "negclip",
        "clip_ft",
        BINDING_SEEN,
    ),
    Claim(
        "NegCLIP",
        "binding carries to held-out combinations",
        "negclip",
        "clip_ft",
        BINDING_HELD_OUT,
    ),
    Claim(
        "NegCLIP",
        "hard negatives teach binding given 1000 steps (seen combinations)",
        "negclip_long",
        "clip_ft_long",
        BINDING_SEEN,
    ),
    Claim(
        "NegCLIP",
        "binding given 1000 steps carries to held-out combinations",
        "negclip_long",
        "clip_ft_long",
        BINDING_HELD_OUT,
    ),
    Claim(
        "DeGLA",
        "compositional accuracy rises while zero-shot is kept",
        "degla",
        "clip_ft",
        BINDING_SEEN,
    ),
    Claim(
        "HQ-CLIP",
        "a negative description raises compositional accuracy",
        "hq_negatives_only",
        "clip",
        (Condition(REPLACE_A, "higher"), Condition(REPLACE_O, "higher")),
    ),
    Claim(
        "HQ-CLIP", "a tag head raises zero-shot accuracy", "hq_clip", "hq_negatives_only", (Condition(ZS, "higher"),)
    ),
    Claim("LaCLIP", "rewritten captions help", "laclip", "clip", (Condition(ZS, "higher"), Condition(R1, "higher"))),
    Claim(
        "ALIGN", "converges from t = 1 when given the steps (2x)", "align", "clip", (Condition(R1, "not_lower", NOISE),)
    ),
    Claim("SigLIP", "at least CLIP's accuracy at small batch", "siglip", "clip", (Condition(ZS, "not_lower", NOISE),)),
    Claim(
        "PixPro",
        "pre-training with pixel propagation improves dense transfer without hurting global zero-shot",
        "pixpro_scratch",
        "clip",
        (Condition(DENSE, "higher"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim(
        "TIPSv2",
        "pre-training with masked patch self-distillation improves dense transfer without hurting zero-shot",
        "tips_patch_scratch",
        "clip",
        (Condition(DENSE, "higher"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim(
        "PixPro",
        "fine-tuning with pixel propagation improves dense transfer without hurting global zero-shot",
        "pixpro",
        "clip_ft",
        (Condition(DENSE, "higher"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim(
        "TIPSv2",
        "fine-tuning with masked patch self-distillation improves dense transfer, zero-shot kept",
        "tips_patch",
        "clip_ft",
        (Condition(DENSE, "higher"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim(
        "PixPro",
        "at 64 px (4 x 4 cells): pixel propagation improves dense transfer without hurting global zero-shot",
        "dense64_pixpro",
        "dense64_clip",
        (Condition(DENSE, "higher"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim(
        "TIPSv2",
        "at 64 px (4 x 4 cells): masked patch self-distillation improves dense transfer, zero-shot kept",
        "dense64_tips",
        "dense64_clip",
        (Condition(DENSE, "higher"), Condition(ZS, "not_lower", NOISE)),
    ),
    Claim("MEOW", "weighted negatives keep zero-shot", "meow", "clip_ft", (Condition(ZS, "not_lower", NOISE),)),
    Claim("CoCa", "a captioning loss keeps contrastive accuracy", "coca", "clip", (Condition(ZS, "not_lower", NOISE),)),
    Claim(
        "Temperature (Wang & Liu)",
        "a larger t (smaller tau) makes embeddings more uniform",
        "temperature_t50",
        "temperature_t5",
        (Condition(UNIFORMITY, "lower"),),
    ),
    Claim(
        "Temperature (Wang & Liu)",
        "a larger t (smaller tau) makes embeddings less tolerant",
        "temperature_t50",
        "temperature_t5",
        (Condition(TOLERANCE, "lower"),),
    ),
)


# The testbed model and schedules (docs/methods.md; RESULTS.md "Claims on the testbed" says how they were sized).
SCHEDULE = Schedule(
    common=(
        "data.image_size=48",
        "model.width=96",
        "model.embed_dim=96",
        "model.text_pooling=mean_eot",
        "data.train_size=20000",
        "data.eval_size=1000",
        "data.workers=1",
        "eval.max_records=1000",
        "train.batch_size=64",
        "train.eval_every=0",
        "train.checkpoint_every=100",
        "train.log_every=20",
    ),
    scratch_steps=400,
    scratch=("train.lr=2e-3", "train.warmup_steps=30"),
    finetune_steps=200,
    finetune=("train.lr=5e-4", "train.warmup_steps=20"),
)
