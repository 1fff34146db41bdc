"""The names the prepare job's steps share: the metrics namespace and the paths of the files the job
writes (relative to the output directory)."""

NAMESPACE = "rnnflow"
VOCAB_FILE = "vocab/tokens.txt"
TAGS_FILE = "vocab/tags.txt"
LABELS_FILE = "vocab/labels.txt"
CHARS_FILE = "vocab/chars.txt"
TARGET_VOCAB_FILE = "vocab/target.txt"
REJECTED_FILE = "rejected/rejected-00000-of-00001.jsonl"
# rejection reasons the tasks name (the others are in pipelines.beam.rejects): labels with no training split
UNKNOWN_TAG, UNKNOWN_LABEL = "unknown_tag", "unknown_label"
