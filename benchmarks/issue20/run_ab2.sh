#!/bin/bash
# After run_ab.sh: the library's warm request with one torch thread and passive OpenMP waits (CPU seconds that
# the machine's load moves least: no thread spins waiting for a descheduled one), 3 pairs alternating; then a
# single bench cell (base + the first nscvf cell of the quick grid) per checkout, numbers compared.
while ! grep -q '^done' /work/wt-fast/runs/ab/driver.txt; do sleep 5; done
OUT=/work/wt-fast/runs/ab
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
lib() {
  root=/work/main; [ "$1" = fast ] && root=/work/wt-fast
  echo "lib1t $1 $2 $(git -C $root rev-parse --short HEAD) start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd $root && PYTHONPATH=$root python /work/wt-fast/scripts/profile_request.py --modes on --profile-target "" \
     --warmup Mirel --target Dravik --json $OUT/lib1t_$1_$2.json > $OUT/lib1t_$1_$2.txt 2>&1)
}
for i in 1 2 3; do
  if [ $((i % 2)) = 1 ]; then lib main $i; lib fast $i; else lib fast $i; lib main $i; fi
done
# Pairs 4 and 5 ran afterwards, beside the bench cells below, by the same lib(): lib fast 4; lib main 4; lib main 5; lib fast 5
unset OMP_NUM_THREADS
for side in main fast; do
  root=/work/main; [ "$side" = fast ] && root=/work/wt-fast
  echo "cell $side $(git -C $root rev-parse --short HEAD) start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  rm -rf /tmp/ab/cell_$side
  (cd $root && PYTHONPATH=$root python -m nscvf.cli bench --quick --methods nscvf --seeds 1 --continual 0 --max-jobs 2 \
     --workers 1 --out /tmp/ab/cell_$side > $OUT/cell_$side.txt 2>&1)
done
echo "done2 $(date -u +%T)"
