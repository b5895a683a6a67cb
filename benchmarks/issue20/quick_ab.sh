#!/bin/bash
# Issue 20: the quick bench's subset (nscvf + cvf, 1 seed, 4 targets, no continual) by the code of BENCHMARKS.md's
# quick run (b437a6b) and by this branch (one thread per model call / torch's own), one after the other.
O=$(realpath -m "${OUT:-runs/ab}")  # where the three runs go
OLD=$(realpath "${OLD:-/tmp/old}")  # git archive b437a6b | tar -x -C /tmp/old
NEW=$(realpath "${NEW:-.}")  # this checkout
mkdir -p $O
run() {  # name pythonpath extra-env...
  name=$1; pp=$2; shift 2
  rm -rf $O/$name $O/cache_$name; mkdir -p $O/cache_$name
  echo "== $name start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  s=$(date +%s.%N)
  if [ "$name" = old ]; then
    (cd $OLD && env "$@" NSCVF_CACHE_DIR=$O/cache_$name PYTHONPATH=$pp python -m nscvf.cli bench --quick --methods nscvf,cvf --seeds 1 --continual 0 --json $O/$name.json --md $O/$name.md > $O/$name.log 2>&1)
  else
    (cd $NEW && env "$@" NSCVF_CACHE_DIR=$O/cache_$name PYTHONPATH=$pp python -m nscvf.cli bench --quick --methods nscvf,cvf --seeds 1 --continual 0 --json $O/$name.json --md $O/$name.md --out $O/$name > $O/$name.log 2>&1)
  fi
  e=$(date +%s.%N)
  echo "== $name wall $(python -c "print(round($e-$s,1))") s end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
}
for order in "$@"; do
  case $order in
    old) run old $OLD ;;
    one) run one $NEW NSCVF_CPU_THREADS=1 ;;
    own) run own $NEW NSCVF_CPU_THREADS=0 ;;
  esac
done
