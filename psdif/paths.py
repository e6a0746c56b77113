"""Where the pipeline keeps what it makes: the paths dvc.yaml (``psdif.pipeline``) and the stages share."""

from psdif.config import PRETRAIN_FILES

RAW_MANIFEST = "data/manifests/raw.json"   # the download's record (drives on disk, digests): no stage reads it
RAW_TRAIN = "data/manifests/raw_train.json"  # content hashes of what the labelling / training side reads
RAW_TEST = "data/manifests/raw_test.json"    # content hashes of what the evaluation side reads (test frames)
RAW_STATE = "data/manifests/.raw_state.json"  # the download's hash cache: path -> size, mtime, inode, MD5
LABELS_MANIFEST = "data/manifests/pseudolabels.json"
BOUNDARY_MANIFEST = "data/manifests/boundaries.json"
LABELS, BOUNDARIES = "data/pseudolabels", "data/boundaries"          # the PNG trees of those two stages
PREPARED = "data/prepared"                                           # frames resized once (prepare stage)
PREPARED_MANIFESTS = {kind: f"data/manifests/prepared_{kind}.json" for kind in ("images", "labels", "boundaries")}
INPUTS = "data/manifests/inputs"
INPUT_FINGERPRINTS = {  # params.yaml key -> fingerprint file written by the check stage
    "pseudolabel.checkpoint": f"{INPUTS}/checkpoint.json",
    "model.encoder_weights": f"{INPUTS}/encoder_weights.json",
    "model.pose_weights": f"{INPUTS}/pose_weights.json",
}
VALIDATED_PARAMS = f"{INPUTS}/params.json"                          # the check stage's record of params.yaml
VALIDATED_FILES = f"{INPUTS}/validated.json"                        # files it loaded: key -> value, sha256, target
PARAMS_OK = f"{INPUTS}/params.yaml.ok"                              # the last params.yaml that passed, verbatim
INPUT_LISTS = "${data.splits_dir}/${data.train_split}"             # train (and val) lists read by the filter
TEST_LIST = "${data.splits_dir}/${data.test_split}/test_files.txt"
LISTS = "data/lists"                                                 # the filtered lists training reads
TRAIN_LIST, VAL_LIST = f"{LISTS}/train_files.txt", f"{LISTS}/val_files.txt"
GT_DEPTHS = "data/eval/gt_depths.npz"
PRETRAIN_MSFAN = PRETRAIN_FILES["model.encoder_weights"]             # the pretrain stage's encoder files, what the
PRETRAIN_RESNET = PRETRAIN_FILES["model.pose_weights"]               # params' token `pretrain` names (psdif.config)
DOWNLOADS = "data/downloads"                                        # archives being fetched (never in the KITTI copy)
EXPORT_GT_REPORT = "metrics/export_gt.json"                         # test-list coverage of the GT export
FILTER_REPORT = "metrics/filter.json"
COVERAGE = "metrics/coverage.json"                                  # train / val / test coverage, for the tables

# per (variant, seed): what train_<variant>@<seed> writes; ``seed`` may be DVC's "${item}" in dvc.yaml
MODELS = "models"


def model_path(variant: str, seed) -> str:
    return f"{MODELS}/{variant}/seed{seed}/model.pt"


def train_metrics_path(variant: str, seed) -> str:
    return f"metrics/train/{variant}/seed{seed}.json"


def live_path(variant: str, seed) -> str:
    """The run's DVCLive folder (loss curves); the summary stage averages them over seeds for the plots."""
    return f"dvclive/{variant}/seed{seed}"


EVAL_DIR = "metrics/eval"                  # <variant>.json (mean over seeds), flat.json, untrained.json
SUMMARY = "metrics/summary.json"           # the headline metrics `dvc exp show` / `dvc metrics diff` lead with
PLOT_DATA = "metrics/plots"                # what dvc.yaml's top-level plots draw


def train_inputs(variant) -> list[str]:
    """The data files a train stage reads (its data dependencies in dvc.yaml, and the data part of its run key,
    ``stages/train.py``): the train list and the prepared arrays of its frames (with ``prepare.enabled: false``
    the prepared manifests carry the digest of the PNGs training then decodes), never the whole raw tree; the
    fingerprints of the initial weights it loads and the pretrain stage's files; labels and boundary masks
    for the variants that read them (a :class:`psdif.variants.Variant`)."""
    data = [TRAIN_LIST, PREPARED_MANIFESTS["images"], INPUT_FINGERPRINTS["model.pose_weights"], PRETRAIN_RESNET]
    if variant.msfan:
        data += [INPUT_FINGERPRINTS["model.encoder_weights"], PRETRAIN_MSFAN]
    if variant.seg or variant.metric_loss:
        data += [PREPARED_MANIFESTS["labels"]]
    if variant.metric_loss:
        data += [PREPARED_MANIFESTS["boundaries"]]
    return data
