# Shared by the CPU experiment scripts (source it after setting LOGS): two lanes of one thread each use both
# cores without the slowdown of two processes both asking for two threads on a machine someone else also
# uses; the wall time of each phase goes to timing.json.
export OMP_NUM_THREADS=1
TIMING=()
start=$(date +%s)
phase_start=$start
phase() {  # record the wall time of the phase that just ended
  local now; now=$(date +%s)
  TIMING+=("\"$1\": $(( now - phase_start ))")
  phase_start=$now
}
lanes() {  # run two commands side by side, each logging to $LOGS/NAME_{a,b}.log; fail if either fails
  local name=$1 a=$2 b=$3
  bash -c "$a" > "$LOGS/${name}_a.log" 2>&1 & local pa=$!
  bash -c "$b" > "$LOGS/${name}_b.log" 2>&1 & local pb=$!
  local status=0
  wait "$pa" || status=$?
  wait "$pb" || status=$?
  if [ "$status" != 0 ]; then echo "error: a lane of '$name' failed; see $LOGS/${name}_*.log" >&2; exit 2; fi
  grep -h "accuracy\|wrote\|step [0-9]*:" "$LOGS/${name}_a.log" "$LOGS/${name}_b.log" | grep -v "it/s" || true
}
write_timing() {  # FILE: the phases' wall times and the total
  local total=$(( $(date +%s) - start ))
  printf '{"seconds": {%s}, "total_seconds": %d, "machine": "shared 2-core CPU, two 1-thread lanes"}\n' \
      "$(IFS=,; echo "${TIMING[*]}")" "$total" > "$1"
  echo "experiment finished in $total s"
}
