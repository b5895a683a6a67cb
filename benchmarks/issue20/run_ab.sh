#!/bin/bash
# Back-to-back A/B of main and the fast branch: the library's warm request (profile_request.py, memo on, no
# profiled request) and the app end to end (bench_app.py), alternating which goes first.
OUT=/work/wt-fast/runs/ab
lib() { # $1 = main|fast  $2 = pair
  root=/work/main; [ "$1" = fast ] && root=/work/wt-fast
  echo "lib $1 $2 $(git -C $root rev-parse --short HEAD) start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd $root && PYTHONPATH=$root python /work/wt-fast/scripts/profile_request.py --modes on --profile-target "" \
     --warmup Mirel --target Dravik --json $OUT/lib_$1_$2.json > $OUT/lib_$1_$2.txt 2>&1)
}
app() {
  root=/work/main; [ "$1" = fast ] && root=/work/wt-fast
  echo "app $1 $2 $(git -C $root rev-parse --short HEAD) start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd /work/wt-fast && PYTHONPATH=/work/wt-fast python scripts/bench_app.py --app-root $root --json $OUT/app_$1_$2.json > $OUT/app_$1_$2.txt 2>&1)
}
for i in 1 2 3; do
  if [ $((i % 2)) = 1 ]; then a=main; b=fast; else a=fast; b=main; fi
  lib $a $i; lib $b $i; app $a $i; app $b $i
done
echo "done $(date -u +%T)"
