#!/bin/bash
# usage: arm.sh NAME [overrides...]  (model from $M)
NAME=$1; shift
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p ${OUT:-runs}
reasonrl demo model.path=$M run.name=$NAME run.out_dir=${OUT:-runs} run.threads=1 \
  trainer.progress=false trainer.tensorboard=false "$@" > ${OUT:-runs}/$NAME.log 2>&1
echo "exit $?" >> ${OUT:-runs}/$NAME.log
