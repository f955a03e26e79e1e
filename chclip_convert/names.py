"""Names shared by the command line and the library, kept free of heavy imports."""

from pathlib import Path

# The files this package ships (the standard vocabulary, the sample photo): chclip_convert/data.
DATA_DIR = Path(__file__).with_name("data")

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")

# The fate of each key in a conversion report (chclip_convert.mapping.report): source keys, then target keys.
MAPPED, TRANSFORMED, IGNORED, UNUSED = "mapped", "transformed", "ignored", "unused"
FILLED, MISSING, SHAPE_MISMATCH, CONFLICT = "filled", "missing", "shape_mismatch", "conflict"
UNEXPECTED = "unexpected"
PROBLEM_STATUSES = (UNUSED, MISSING, SHAPE_MISMATCH, CONFLICT, UNEXPECTED)
STATUSES = (MAPPED, TRANSFORMED, IGNORED, UNUSED, FILLED, MISSING, SHAPE_MISMATCH, CONFLICT, UNEXPECTED)
STATUS_FILTERS = ("all", "problems", *STATUSES)  # what the key views filter by (inspection.filter_rows)

# The files a converted folder holds, by the names transformers and this tool give them.
CONFIG_FILE = "config.json"
REPORT_FILE = "conversion_report.json"  # what this tool recorded of the conversion
EXPORT_REPORT_FILE = "export_report.json"  # what export-onnx recorded, in the folder's onnx/
CARD_FILE = "README.md"  # the model card
BIN_FILE = "pytorch_model.bin"  # older folders' weights
WEIGHTS_SUFFIX = ".safetensors"
VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"

# cn_clip writes <logs>/<run name>/checkpoints/epoch*.pt.
RUN_SUBFOLDER = "checkpoints"

# The file names a checkpoint may have (what the pickers list and a run folder's checkpoints are).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

# The embedded demo checkpoint's file name (chclip_convert.conversion.demo writes it).
DEMO_FILE = "demo_chinese_clip.pt"
