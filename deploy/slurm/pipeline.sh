#!/bin/bash
# Submit every stage, each starting when the one before has succeeded (all tasks of an array):
# extraction (array) -> merge -> training (torchrun on one node) -> prediction (array).
#
#   DATA=/shared/vidtempo deploy/slurm/pipeline.sh
set -euo pipefail
here=$(dirname "$0")
extract=$(sbatch --parsable "$here/extract.sbatch")
merge=$(sbatch --parsable --dependency="afterok:$extract" "$here/merge.sbatch")
train=$(sbatch --parsable --dependency="afterok:$merge" "$here/train.sbatch")
predict=$(sbatch --parsable --dependency="afterok:$train" "$here/predict.sbatch")
echo "submitted: extract $extract, merge $merge, train $train, predict $predict"
