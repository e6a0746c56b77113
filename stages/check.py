"""check stage (runs on every `dvc repro`): validate params.yaml and open every file it names.

It comes first in the pipeline (its output data/manifests/inputs/params.json is a dependency of the download
stage, on which every other stage depends), so a mistake in params.yaml (an unknown key, a value out of
range, a weights file that is missing, unreadable, a crafted pickle or of another layout, `imagenet` weights
on an offline machine) stops the run before any other stage has deleted an output. Every problem is reported
at once. The logic is psdif.inputs: the files are loaded the way their stages load them (once per content:
a file validated before is only hashed), and under `dvc exp run` a refused params.yaml is put back to the
last one that passed. It writes the validated params, one fingerprint per file named in params
(psdif.paths.INPUT_FINGERPRINTS: its SHA-256; a stage that reads the file depends on it, so replacing the
file at the same path reruns that stage and an unchanged file reruns nothing), the record of the files it
loaded and a verbatim copy of params.yaml. (The KITTI copy and the Make3D folder are fingerprinted by the
download stage, in data/manifests/raw.json, after it has fetched what it was asked to.)
"""

from __future__ import annotations

import argparse

from psdif.inputs import check
from psdif.process import start_stage


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="stages/check.py")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    args = parser.parse_args(argv)
    if argv is None:  # its own process: timestamped lines, one line on Ctrl-C (as stage_args sets up the others)
        start_stage("check")
    status = check(args.params)
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
