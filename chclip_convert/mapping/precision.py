"""cn_clip's float16 layout by tensor name: which original tensors its ``convert_weights`` casts to float16.

cn_clip's ``--precision fp16`` training, and its fp16 models, run ``cn_clip.clip.model.convert_weights``. It casts
the weights and biases of every ``Conv1d``, ``Conv2d`` and ``Linear``, the in-projection of every
``MultiheadAttention``, the whole ``BertModel`` (``.to(torch.half)``: its LayerNorms and embeddings too), and the
``text_projection`` and ``proj`` parameters. Everything else stays float32: the vision tower's LayerNorms (a
ResNet's BatchNorms and their running statistics), its class and position embeddings, and ``logit_scale``.

cn_clip decides by module type; a checkpoint holds only names, so this module says the same by the names of
cn_clip's modules, in either layout (standard or flash-attention) and for both vision towers (ViT and ResNet).
tests/test_sharing.py holds it against ``convert_weights`` run on cn_clip's own models.
"""

from __future__ import annotations

# The Conv2d and Linear modules of cn_clip's vision towers, by their attribute names: the ViT's patch
# convolution, MLP and attention output (and the flash-attention layout's fused ``Wqkv``); the ResNet's
# convolutions and attention-pool projections. A ResNet block's ``downsample`` is a Sequential of ``-1``
# (AvgPool2d), ``0`` (Conv2d) and ``1`` (BatchNorm2d), so its ``downsample.0`` is cast and ``downsample.1`` not.
VISION_FP16_MODULES = frozenset(
    {"conv1", "conv2", "conv3", "c_fc", "c_proj", "out_proj", "Wqkv", "q_proj", "k_proj", "v_proj"}
)
DOWNSAMPLE_CONV = ("downsample", "0")
# Parameters cast by name: MultiheadAttention's in-projection, and the two projections to the shared space.
FP16_PARAMETERS = frozenset({"in_proj_weight", "in_proj_bias", "text_projection", "proj"})
FP16_TOWER = "bert."  # all of the text tower


def in_fp16_layout(name: str) -> bool:
    """Whether cn_clip's fp16 layout holds the original tensor ``name`` (no ``module.`` prefix) in float16.

    ``False`` means float32 for a floating-point tensor; tensors of other dtypes (a BatchNorm's count) are never
    cast. A name of no cn_clip model gives ``False``.
    """
    if name.startswith(FP16_TOWER):
        return True
    *modules, parameter = name.split(".")
    if parameter in FP16_PARAMETERS:
        return True
    if parameter not in ("weight", "bias") or not modules:
        return False
    return modules[-1] in VISION_FP16_MODULES or tuple(modules[-2:]) == DOWNSAMPLE_CONV
