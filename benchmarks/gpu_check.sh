#!/usr/bin/env bash
# The GPU check of eor in one command, for a machine with a CUDA GPU (issue 15).
#
#   bash benchmarks/gpu_check.sh [--quick] [--dry-run] [--require-cuda] [--budget S] [--out-dir DIR]
#
# Parts, in order, each under its own `timeout` (capped by what is left of the budget, default
# 570 s: the whole run fits in 10 minutes, compilation included); a part that fails or hangs is
# recorded and the next one runs:
#   setup                  only if eor is not importable yet: pip install -e . from this checkout
#                          into the chosen Python, offline (--no-index --no-build-isolation
#                          --no-deps); wheels in $GPU_CHECK_WHEELS (default build/gpu-wheels)
#                          first when gymnasium or mujoco is missing (the simulator parts need it)
#   compile_check          python -m eor.kernels.compile_check --targets <this GPU's> (skipped
#                          if the module is absent; its JSON report goes into compile_check.json)
#   pytest_gpu             EOR_BACKEND=triton pytest -m gpu -q
#   ensemble               benchmarks/bench_ensemble.py --device cuda
#   agent                  benchmarks/bench_agent.py --device cuda (updates/s at N = 10, 50
#                          against eor.ref.RAVLRef, and the rollout phase)
#   train_data             eor collect (20,000 simulator steps) + eor train-model (3 epochs)
#   train_agent            eor train-agent --device cuda, 2 epochs x 1,000 updates
#   train_agent_cuda_graph the same with --cuda_graph (skipped if train-agent lacks the flag)
#
# Python: $EOR_PYTHON if set, else the first of .venv/bin/python, python3, python whose torch
# sees a CUDA device. With none, if nvidia-smi sees a GPU, the Makefile's setup builds
# build/venv-gpu with $TORCH_SPEC (this needs the internet; nothing else does).
#
# Results: DIR (default benchmarks/results/gpu/): one JSON per part (keys machine, git_sha,
# results, speedups, as every benchmarks/results file), summary.json, summary.md (the table:
# which parts ran, passed, failed or were skipped) and logs.tar.gz (every part's log). All of
# them are copied to $OUT when that variable is set.
#
# Exit status: 0 every part that ran passed (also when no CUDA device is visible: then nothing
# runs and the summary says so), 1 a part failed, timed out or was not started for want of
# budget, 2 bad arguments, 3 no CUDA device visible with --require-cuda.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

usage() {
    sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    cat <<'EOF'
Options:
  --quick         the benchmarks' --quick sizes (same keys, fewer repeats)
  --dry-run       print the plan (Python, parts, commands, timeouts); run and write nothing
  --require-cuda  exit 3 when no CUDA device is visible (default: exit 0 with a summary)
  --budget S      seconds for all parts together (default 570)
  --out-dir DIR   where results go (default benchmarks/results/gpu)
  -h, --help      this text
Environment: EOR_PYTHON, GPU_CHECK_WHEELS, TORCH_SPEC (fallback setup only), OUT, and
GPU_CHECK_PART_TIMEOUT (seconds: one timeout for every part, for tests).
EOF
}

QUICK=0
DRY=0
REQUIRE=0
BUDGET=570
DIR=benchmarks/results/gpu
while (($#)); do
    case $1 in
    --quick) QUICK=1 ;;
    --dry-run) DRY=1 ;;
    --require-cuda) REQUIRE=1 ;;
    --budget | --out-dir)
        if (($# < 2)); then
            echo "gpu_check.sh: $1 needs a value" >&2
            exit 2
        fi
        if [[ $1 == --budget ]]; then
            if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1)); then
                echo "gpu_check.sh: --budget must be a positive number of seconds, got '$2'" >&2
                exit 2
            fi
            BUDGET=$2
        else
            DIR=$2
        fi
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

START=$(date +%s)
RESERVE=15 # seconds kept for the summary and the copies
DEADLINE=$((START + BUDGET - RESERVE))
MIN_PART=20 # a part with less time than this left is not started
WORK=${TMPDIR:-/tmp}/eor-gpu-check.$$
WHEELS=${GPU_CHECK_WHEELS:-build/gpu-wheels}
QUICK_FLAG=()
((QUICK)) && QUICK_FLAG=(--quick)

# ------------------------------------------------------------------------------ the Python
# Prints why a Python cannot run the GPU parts, or the GPU it sees; status 0 when it can.
probe() {
    "$1" - 2>/dev/null <<'EOF'
import sys
try:
    import torch
except Exception as exc:
    print(f"no torch ({type(exc).__name__})")
    sys.exit(1)
if torch.version.cuda is None:
    print(f"torch {torch.__version__} is built without CUDA")
    sys.exit(1)
if not torch.cuda.is_available():
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
    sys.exit(1)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
EOF
}

PY=""
PROBES=()
if [[ -n ${EOR_PYTHON:-} ]]; then
    CANDIDATES=("$EOR_PYTHON")
else
    CANDIDATES=(.venv/bin/python python3 python)
fi
for cand in "${CANDIDATES[@]}"; do
    if ! command -v "$cand" >/dev/null 2>&1; then
        PROBES+=("$cand: not found")
        continue
    fi
    if out=$(probe "$cand"); then
        PY=$cand
        PROBES+=("$cand: $out")
        break
    fi
    PROBES+=("$cand: ${out:-cannot run}")
done

GPU_SEEN=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    GPU_SEEN=1
fi
FALLBACK_VENV=build/venv-gpu
NEED_FALLBACK=0
if [[ -z $PY ]] && ((GPU_SEEN)) && [[ -z ${EOR_PYTHON:-} ]]; then
    NEED_FALLBACK=1
fi

# Any Python runs the summary helper (standard library only; torch and triton if importable).
SUMPY=${PY:-$(command -v python3 || command -v python || echo python3)}

if ((DRY)); then
    echo "gpu_check.sh --dry-run: nothing is run or written"
    for p in "${PROBES[@]}"; do echo "  probe  $p"; done
    if [[ -n $PY ]]; then
        echo "  python $PY"
    elif ((NEED_FALLBACK)); then
        echo "  python $FALLBACK_VENV/bin/python after: make setup VENV=$FALLBACK_VENV TORCH_SPEC=${TORCH_SPEC:-<the Makefile default>}"
    else
        echo "  no CUDA device visible: every part would be skipped"
    fi
fi

# ------------------------------------------------------------------------------ parts
FAILED=0
run_part() { # name limit_s command... ; records the part, never stops the script
    local name=$1 limit=${GPU_CHECK_PART_TIMEOUT:-$2}
    shift 2
    local now left log rc status t0 ms secs
    now=$(date +%s)
    left=$((DEADLINE - now))
    if ((DRY)); then
        printf '  part   %-24s timeout %4ss  %s\n' "$name" "$limit" "$*"
        return 0
    fi
    if ((left < MIN_PART)); then
        echo "== $name: not run, ${left}s of the budget left"
        FAILED=1
        record "$name" not_run 0 0 "$*" "" "not started: ${left}s of the ${BUDGET}s budget left"
        return 0
    fi
    ((limit > left)) && limit=$left
    log=$DIR/logs/$name.log
    echo "== $name (timeout ${limit}s): $*"
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    secs=$((ms / 1000)).$(printf '%03d' $((ms % 1000)))
    case $rc in
    0) status=passed ;;
    77) status=skipped ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
    esac
    [[ $status == failed || $status == timeout ]] && FAILED=1
    echo "   $status (rc $rc, $secs s)"
    record "$name" "$status" "$rc" "$secs" "$*" "$log" ""
}

record() { # name status rc seconds command log detail
    "$SUMPY" benchmarks/gpu_summary.py part --dir "$DIR" --name "$1" --status "$2" --rc "$3" \
        --seconds "$4" --command "$5" --log "$6" --detail "$7" "${RECORD_ARGS[@]}" ||
        echo "gpu_check.sh: could not record part $1" >&2
    RECORD_ARGS=()
}
RECORD_ARGS=()

skip_part() { # name reason
    if ((DRY)); then
        printf '  part   %-24s skipped: %s\n' "$1" "$2"
        return 0
    fi
    echo "== $1: skipped: $2"
    record "$1" skipped 0 0 "" "" "$2"
}

finish() {
    local rc
    if ((DRY)); then
        exit 0
    fi
    "$SUMPY" benchmarks/gpu_summary.py finish --dir "$DIR" --seconds $(($(date +%s) - START)) \
        --budget "$BUDGET"
    rc=$?
    tar -czf "$DIR/logs.tar.gz" -C "$DIR" logs 2>/dev/null
    if [[ -n ${OUT:-} ]]; then
        mkdir -p "$OUT"
        for f in summary.md summary.json compile_check.json pytest_gpu.json ensemble.json \
            agent.json train_agent.json logs.tar.gz; do
            [[ -f $DIR/$f ]] && cp "$DIR/$f" "$OUT/"
        done
        echo "copied the results to \$OUT ($OUT)"
    fi
    rm -rf "$WORK"
    if ((rc != 0)); then
        FAILED=1
    fi
    echo "results: $DIR/summary.md"
    exit $((FAILED ? 1 : 0))
}

if ((!DRY)); then
    mkdir -p "$DIR/logs" || exit 2
fi

# No CUDA at all: say so, write the summary, skip everything (a dry run lists the plan anyway).
if [[ -z $PY ]] && ((!NEED_FALLBACK)); then
    reason="Pythons tried: $(
        IFS=';'
        echo "${PROBES[*]}"
    )"
    if ((DRY)); then
        PY="<a python whose torch sees CUDA>"
    else
        echo "gpu_check.sh: no CUDA device visible; every part is skipped. $reason"
        "$SUMPY" benchmarks/gpu_summary.py start --dir "$DIR" --cuda no --reason "$reason" \
            --python "" --budget "$BUDGET" --quick "$QUICK" || exit 1
        for part in compile_check pytest_gpu ensemble agent train_data train_agent \
            train_agent_cuda_graph; do
            record "$part" skipped 0 0 "" "" "no CUDA device visible"
        done
        if ((REQUIRE)); then
            "$SUMPY" benchmarks/gpu_summary.py finish --dir "$DIR" --seconds \
                $(($(date +%s) - START)) --budget "$BUDGET" >/dev/null
            echo "gpu_check.sh: --require-cuda: no CUDA device visible, exit 3" >&2
            exit 3
        fi
        finish
    fi
fi

if ((!DRY)); then
    "$SUMPY" benchmarks/gpu_summary.py start --dir "$DIR" --cuda yes --clean \
        --reason "$(
            IFS=';'
            echo "${PROBES[*]}"
        )" --python "${PY:-$FALLBACK_VENV/bin/python}" --budget "$BUDGET" --quick "$QUICK" ||
        exit 1
    mkdir -p "$WORK"
fi

# Fallback: a GPU but no CUDA torch: the Makefile's setup in a venv of its own.
if ((NEED_FALLBACK)); then
    run_part setup_venv 300 make setup VENV="$FALLBACK_VENV" ${TORCH_SPEC:+TORCH_SPEC="$TORCH_SPEC"}
    PY=$FALLBACK_VENV/bin/python
    SUMPY=$PY
    if ((!DRY)) && ! probe "$PY" >/dev/null; then
        echo "gpu_check.sh: $PY still sees no CUDA device; the other parts are skipped"
        for part in compile_check pytest_gpu ensemble agent train_data train_agent \
            train_agent_cuda_graph; do
            skip_part "$part" "no CUDA-capable torch after the fallback setup"
        done
        FAILED=1
        finish
    fi
fi

# eor itself: installed into $PY from this checkout when it does not import yet, offline.
if ((!DRY)) && ! "$PY" -c "import gymnasium, mujoco" >/dev/null 2>&1; then
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if ((${#wheels[@]})); then
        run_part setup_wheels 120 "$PY" -m pip install --no-index --no-deps --no-build-isolation \
            "${wheels[@]}"
    fi
fi
if ((DRY)) || ! "$PY" -c "import eor._core, eor.kernels, eor.ops" >/dev/null 2>&1; then
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc 2>/dev/null || echo 4)
    export CMAKE_BUILD_PARALLEL_LEVEL
    run_part setup 240 "$PY" -m pip install --no-index --no-deps --no-build-isolation -e .
fi
SIM=1
if ((!DRY)) && ! "$PY" -c "import gymnasium, mujoco" >/dev/null 2>&1; then
    SIM=0 # no simulator: the parts that collect data or evaluate are skipped
fi

# 1. The kernels' compile check, when the module exists: for this GPU's compute capability.
if [[ -f kernels/compile_check.py ]]; then
    CC=()
    if ((!DRY)); then
        cap=$("$PY" -c "import torch; print('%d%d' % torch.cuda.get_device_capability())" 2>/dev/null)
        [[ $cap =~ ^[0-9]+$ ]] && CC=(--targets "$cap")
    fi
    RECORD_ARGS=(--json compile_check.json --attach "$WORK/compile_check.json")
    run_part compile_check 150 "$PY" -m eor.kernels.compile_check "${CC[@]}" \
        --json "$WORK/compile_check.json"
else
    RECORD_ARGS=(--json compile_check.json)
    skip_part compile_check "eor.kernels.compile_check does not exist in this checkout"
fi

# 2. The GPU-marked tests at real sizes, Triton forced.
RECORD_ARGS=(--json pytest_gpu.json --junit "$WORK/pytest_gpu.xml")
run_part pytest_gpu 180 env EOR_BACKEND=triton "$PY" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml="$WORK/pytest_gpu.xml"

# 3, 4. The benchmarks on CUDA (they write their own JSON).
RECORD_ARGS=(--result ensemble.json)
run_part ensemble 180 "$PY" benchmarks/bench_ensemble.py --device cuda "${QUICK_FLAG[@]}" \
    --out "$DIR/ensemble.json"
RECORD_ARGS=(--result agent.json)
run_part agent 150 "$PY" benchmarks/bench_agent.py --device cuda "${QUICK_FLAG[@]}" \
    --out "$DIR/agent.json"

# 5. A short eor train-agent on CUDA, plain and with --cuda_graph, as `make demo` runs it.
ENV_NAME=halfcheetah-random-v2
AGENT_ARGS=(--env_name "$ENV_NAME" --seed 0 --load_model_dir "$WORK/model" --epochs 2
    --updates_per_epoch 1000 --rollouts_per_epoch 10000 --eval_episodes 2 --device cuda -q)
if ((SIM)); then
    RECORD_ARGS=(--json train_agent.json)
    run_part train_data 150 env EOR_DATA_DIR="$WORK/data" bash -c \
        "'$PY' -m eor collect $ENV_NAME --steps 20000 --seed 0 --overwrite -q && \
         '$PY' -m eor train-model --env_name $ENV_NAME --seed 0 --save_path '$WORK/model' \
         --max_epochs 3 --device cuda"
    RECORD_ARGS=(--json train_agent.json --run-dir "$WORK/run")
    run_part train_agent 150 env EOR_DATA_DIR="$WORK/data" "$PY" -m eor train-agent \
        "${AGENT_ARGS[@]}" --run_dir "$WORK/run"
    if ((DRY)) || "$PY" -m eor train-agent --help 2>/dev/null | grep -q -- '--cuda_graph'; then
        RECORD_ARGS=(--json train_agent.json --run-dir "$WORK/run_graph")
        run_part train_agent_cuda_graph 150 env EOR_DATA_DIR="$WORK/data" "$PY" -m eor \
            train-agent "${AGENT_ARGS[@]}" --run_dir "$WORK/run_graph" --cuda_graph
    else
        RECORD_ARGS=(--json train_agent.json)
        skip_part train_agent_cuda_graph "eor train-agent --help has no --cuda_graph"
    fi
else
    why="no simulator: gymnasium or mujoco does not import in $PY (carry their wheels in $WHEELS)"
    for part in train_data train_agent train_agent_cuda_graph; do
        RECORD_ARGS=(--json train_agent.json)
        skip_part "$part" "$why"
    done
fi
RECORD_ARGS=()
finish
