"""Where the pipeline keeps what it makes: the paths dvc.yaml (``psdif.pipeline``) and the stages share."""

RAW_MANIFEST = "data/manifests/raw.json"
LABELS_MANIFEST = "data/manifests/pseudolabels.json"
BOUNDARY_MANIFEST = "data/manifests/boundaries.json"
INPUTS = "data/manifests/inputs"
INPUT_FINGERPRINTS = {  # params.yaml key -> fingerprint file written by the check stage
    "pseudolabel.checkpoint": f"{INPUTS}/checkpoint.json",
    "model.encoder_weights": f"{INPUTS}/encoder_weights.json",
    "model.pose_weights": f"{INPUTS}/pose_weights.json",
    "eval.make3d_root": f"{INPUTS}/make3d.json",
}
VALIDATED_PARAMS = f"{INPUTS}/params.json"                          # the check stage's record of params.yaml
INPUT_LISTS = "${data.splits_dir}/${data.train_split}"             # train (and val) lists read by the filter
TEST_LIST = "${data.splits_dir}/${data.test_split}/test_files.txt"
LISTS = "data/lists"                                                 # the filtered lists training reads
TRAIN_LIST, VAL_LIST = f"{LISTS}/train_files.txt", f"{LISTS}/val_files.txt"
GT_DEPTHS = "data/eval/gt_depths.npz"
PRETRAIN_DIR = "data/pretrain"                                       # the pretrain stage's encoder files
PRETRAIN_MSFAN = f"{PRETRAIN_DIR}/msfan.pt"                          # model.encoder_weights: pretrain
PRETRAIN_RESNET = f"{PRETRAIN_DIR}/resnet18.pt"                      # model.pose_weights: pretrain
