#!/usr/bin/env bash
# Every CUDA figure in one command, on one GPU, in under 10 minutes:
#
#     bash bench/gpu.sh [FIGURES_FILE]
#
# Run from a checkout (it cds to the repository root itself) on a machine with the project's
# dependencies importable, the `bench` extra's stable-baselines3 included (the speed benchmarks run
# CleanRL's scripts, which use its Atari wrappers and replay buffer); no `pip install -e` needed (the
# root goes on PYTHONPATH). Writes every
# figure to FIGURES_FILE (default $OUT/gpu_figures.txt when $OUT is set, else bench/gpu_figures.txt),
# printing as it goes:
#   - the GPU (nvidia-smi -L), torch / CUDA / cuDNN versions;
#   - the CUDA tests (pytest -m cuda tests/test_cuda.py);
#   - each trainer's CUDA path on a short budget: DQN and Rainbow on Breakout, SAC + K-FAC on HalfCheetah
#     (steps/s after learning starts), DQN (one update per step) and PPO on Breakout with --amp off,
#     bf16 and fp16,
#     DCGAN on a 2D mixture and on images (a generated image folder, and generated CIFAR-10-format
#     batches, since there is no download there), with --amp bf16, fp16 and off; images/s
#     is the median of the run's charts/images_per_sec intervals, the first (warm-up) left out;
#   - the speed benchmarks with their CUDA flags (bench/replay_memory.py has none: CPU only), and a
#     replay-memory sampling time to CUDA against the CPU.
# Each step appends a header, its exit code, wall time and figures (a benchmark's last
# machine-readable line) to the file; a failed step records its exit code and last lines and the
# script goes on. Every step runs under `timeout`, and the steps share a budget (GPU_SH_BUDGET
# seconds, default 560): a step never gets more than what is left of it.
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
if [[ $# -ge 1 ]]; then
    FIGURES=$1
elif [[ -n ${OUT:-} ]]; then
    FIGURES=$OUT/gpu_figures.txt
else
    FIGURES=bench/gpu_figures.txt
fi
mkdir -p "$(dirname "$FIGURES")" || exit 1
: > "$FIGURES" || exit 1
FIGURES=$(cd "$(dirname "$FIGURES")" && pwd)/$(basename "$FIGURES")

PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
BUDGET=${GPU_SH_BUDGET:-560}
T_START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlgan_gpu.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
LAST_RC=0
FAILED_STEPS=()

say() { printf '%s\n' "$*" | tee -a "$FIGURES"; }

# run_step NAME LIMIT_S PATTERN NLINES CMD...: run CMD under timeout (at most LIMIT_S, and at most what
# is left of the budget), streaming its output; then record the last NLINES lines matching PATTERN
# (extended regex; empty: none) or, on failure, the exit code and the last lines of its output.
run_step() {
    local name=$1 limit=$2 pattern=$3 nlines=$4
    shift 4
    local left=$((BUDGET - (SECONDS - T_START)))
    say ""
    say "== $name: $*"
    if ((left < 20)); then
        say "SKIPPED: ${left}s left of the script's ${BUDGET}s budget"
        LAST_RC=125
        FAILED_STEPS+=("$name(skipped)")
        return
    fi
    ((limit > left)) && limit=$left
    local log=$WORK/$name.log t0=$SECONDS
    timeout -k 15 "$limit" "$@" 2>&1 | tee "$log"
    LAST_RC=${PIPESTATUS[0]}
    local wall=$((SECONDS - t0))
    if ((LAST_RC == 124 || LAST_RC == 137)); then
        say "FAILED: exit $LAST_RC, timed out after ${limit}s (wall ${wall}s); last lines:"
    elif ((LAST_RC != 0)); then
        say "FAILED: exit $LAST_RC (wall ${wall}s); last lines:"
    else
        say "ok (wall ${wall}s, limit ${limit}s)"
    fi
    local figures=""
    if [[ -n $pattern ]]; then
        figures=$(grep -E -- "$pattern" "$log" | tail -n "$nlines")
    fi
    if ((LAST_RC != 0)); then
        FAILED_STEPS+=("$name(exit $LAST_RC)")
        tail -n 15 "$log" | sed 's/^/  | /' | tee -a "$FIGURES"
        [[ -n $figures ]] && say "figures before it failed:" && say "$figures"
    elif [[ -n $pattern && -z $figures ]]; then
        say "no line matched /$pattern/; last lines:"
        tail -n 5 "$log" | sed 's/^/  | /' | tee -a "$FIGURES"
    elif [[ -n $figures ]]; then
        say "$figures"
    fi
}

# tb_figure LOGDIR TAG: median of TAG over the run's log intervals (the first left out: cuDNN
# autotuning, workers starting), from the one run folder under LOGDIR.
tb_figure() {
    timeout 60 "$PY" - "$1" "$2" <<'EOF' 2>&1 | tail -n 3 | tee -a "$FIGURES"
import statistics, sys
from pathlib import Path
from common.events import read_scalars
logdir, tag = Path(sys.argv[1]), sys.argv[2]
runs = [p for p in logdir.iterdir() if p.is_dir()] if logdir.is_dir() else []
if len(runs) != 1:
    sys.exit(f"{tag}: expected one run folder under {logdir}, found {len(runs)}")
values = [v for _, _, v in read_scalars(runs[0], tag)]
if not values:
    sys.exit(f"{tag}: not logged in {runs[0]}")
kept = values[1:] or values
print(f"{tag} median={statistics.median(kept):.1f} min={min(kept):.1f} max={max(kept):.1f} "
      f"over {len(kept)} log intervals (first left out)")
EOF
}

say "rlgan GPU figures, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(hostname 2>/dev/null || echo '?')"
say "figures file: $FIGURES; budget ${BUDGET}s"
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD 2>/dev/null || commit="$commit (working tree differs)"
else
    commit="no git"
fi
say "commit: $commit"

# ---- the machine -----------------------------------------------------------------------------
run_step nvidia_smi 30 "GPU" 16 nvidia-smi -L
run_step versions 60 "." 20 "$PY" - <<'EOF'
import sys, torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device 0:", p.name, f"{p.total_memory / 2**30:.1f} GiB", f"capability {p.major}.{p.minor}",
          "bf16", torch.cuda.is_bf16_supported())
try:
    import ale_py, gymnasium, torchvision
    print("gymnasium", gymnasium.__version__, "ale-py", ale_py.__version__, "torchvision", torchvision.__version__)
except Exception as e:
    print("import failed:", type(e).__name__, e)
EOF
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    say "WARNING: torch sees no CUDA device; the CUDA steps below will fail or skip"
fi

# ---- the CUDA tests --------------------------------------------------------------------------
run_step pytest_cuda 180 "^(FAILED|ERROR)|[0-9]+ (passed|failed|skipped|errors?)" 40 \
    "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py

# ---- trainers on CUDA ------------------------------------------------------------------------
run_step dqn_breakout_cuda 150 "steps/s after learning starts" 1 \
    "$PY" -m agents.dqn --env Breakout --device cuda --total-timesteps 30000 --learning-starts 5000 \
    --buffer-size 100000 --batch-size 32 --checkpoint-interval 0 --eval-interval 0 --logdir "$WORK/dqn"

# --amp on the CNN agents: steps/s with each precision against float32, on short runs
for amp in off bf16 fp16; do
    run_step "dqn_breakout_amp_${amp}_cuda" 45 "steps/s after learning starts" 1 \
        "$PY" -m agents.dqn --env Breakout --device cuda --amp "$amp" --total-timesteps 12000 \
        --learning-starts 4000 --train-frequency 1 --buffer-size 20000 --checkpoint-interval 0 --eval-interval 0 \
        --logdir "$WORK/dqn_amp_$amp"
    run_step "ppo_breakout_amp_${amp}_cuda" 45 "^steps/s" 1 \
        "$PY" -m agents.ppo --env Breakout --device cuda --amp "$amp" --total-timesteps 8192 --eval-interval 0 \
        --checkpoint-interval 0 --logdir "$WORK/ppo_amp_$amp"
done

run_step rainbow_breakout_cuda 90 "steps/s after learning starts" 1 \
    "$PY" -m agents.rainbow --env Breakout --device cuda --total-timesteps 12000 --learning-starts 4000 \
    --buffer-size 100000 --checkpoint-interval 0 --eval-interval 0 --logdir "$WORK/rainbow"

run_step sac_halfcheetah_cuda 90 "steps/s after learning starts" 1 \
    "$PY" -m agents.sac --env HalfCheetah --device cuda --total-timesteps 6000 --learning-starts 2000 \
    --checkpoint-interval 0 --eval-interval 0 --logdir "$WORK/sac"

run_step ppo_breakout_cuda 90 "^steps/s" 1 \
    "$PY" -m agents.ppo --env Breakout --device cuda --total-timesteps 16384 --eval-interval 0 \
    --checkpoint-interval 0 --logdir "$WORK/ppo"

run_step dcgan_ring8_cuda 60 "^done:" 1 \
    "$PY" -m gans.dcgan --dataset ring8 --device cuda --steps 2000 --log-every 100 --sample-every 1000 \
    --save-every 100000 --logdir "$WORK/ring8"
((LAST_RC == 0)) && tb_figure "$WORK/ring8" charts/images_per_sec

# Image data without a download: 1,024 random 32x32 PNGs (numpy + zlib, no imaging library), and
# CIFAR-10-format pickled batches (5 x 2,000 random images) for the GPU-resident CIFAR-10 source.
run_step make_image_data 60 "" 0 "$PY" - "$WORK/images" "$WORK/cifar" <<'EOF'
import pickle, struct, sys, zlib
from pathlib import Path
import numpy as np

def png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))

rng = np.random.default_rng(0)
images = Path(sys.argv[1]); images.mkdir(parents=True)
for i in range(1024):
    png(images / f"{i:04d}.png", rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
cifar = Path(sys.argv[2]) / "cifar-10-batches-py"; cifar.mkdir(parents=True)
for b in range(1, 6):
    data = rng.integers(0, 256, size=(2000, 3 * 32 * 32), dtype=np.uint8)
    with open(cifar / f"data_batch_{b}", "wb") as f:
        pickle.dump({"data": data, "labels": [0] * 2000}, f)
print(f"wrote 1024 PNGs to {images} and 5 CIFAR-10-format batches to {cifar}")
EOF

DCGAN_IMAGES=(--device cuda --steps 600 --log-every 100 --sample-every 100000 --save-every 100000
    --fidelity-every 0)
for src in folder cifar10; do
    if [[ $src == folder ]]; then
        data=(--dataset folder --data-dir "$WORK/images" --workers 8)
    else
        data=(--dataset cifar10 --data-dir "$WORK/cifar")
    fi
    for amp in bf16 fp16 off; do
        run_step "dcgan_${src}_amp_${amp}_cuda" 60 "^done:" 1 \
            "$PY" -m gans.dcgan "${data[@]}" --no-download --amp "$amp" "${DCGAN_IMAGES[@]}" \
            --logdir "$WORK/dcgan_${src}_${amp}"
        ((LAST_RC == 0)) && tb_figure "$WORK/dcgan_${src}_${amp}" charts/images_per_sec
    done
done

# ---- speed benchmarks ------------------------------------------------------------------------
run_step bench_dqn_speed_cuda 180 "^train_sps " 1 \
    "$PY" bench/dqn_speed.py --device cuda --steps 4000 --learning-starts 2000 --rounds 1 --compile
run_step bench_rainbow_speed_cuda 120 "^rainbow_sps=" 1 \
    "$PY" bench/rainbow_speed.py --device cuda --steps 4000 --learning-starts 2000
run_step bench_atari_overlap_cuda 60 "^env_ms=" 1 \
    "$PY" bench/atari_overlap.py --device cuda --rounds 4 --per-round 100
run_step bench_sac_speed_cuda 210 "^sac_kfac_sps=" 1 \
    "$PY" bench/sac_speed.py --device cuda --steps 1500 --learning-starts 1000 --rounds 1 --compile
run_step bench_ppo_speed_cuda 180 "^ppo_sps " 1 \
    "$PY" bench/ppo_speed.py --device cuda --updates 2 --compile
run_step bench_dcgan_throughput_cuda 150 "^\{" 1 \
    "$PY" bench/dcgan_throughput.py --devices cuda --rounds 10 --compile
run_step bench_optim_step_cuda 90 "^ratio_vs_adam " 1 \
    "$PY" bench/optim_step.py --device cuda --rounds 10
run_step bench_replay_memory 60 "^bytes_per_transition=|us/step" 2 \
    "$PY" bench/replay_memory.py --fill 5000
# sample() of a 20k-transition Atari memory to the CPU and to CUDA (pinned, double-buffered copies)
run_step replay_sample_to_cuda 60 "^replay_sample_ms " 1 "$PY" - <<'EOF'
import time
import numpy as np
import torch
from agents.replay import ReplayMemory

rng = np.random.default_rng(0)
mems = {d: ReplayMemory(20_000, 1, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8, device=d)
        for d in ("cpu", "cuda")}
for _ in range(20_000):
    obs = rng.integers(0, 256, size=(1, 4, 84, 84), dtype=np.uint8)
    end = rng.random(1) < 0.01
    action, reward = rng.integers(0, 4, size=1), rng.random(1)
    for m in mems.values():
        m.add(obs, action, reward, end, end)
ms = {}
for d, m in mems.items():
    for _ in range(50):
        m.sample(32, rng)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(1000):
        m.sample(32, rng)
    torch.cuda.synchronize()
    ms[d] = (time.perf_counter() - t) / 1000 * 1e3
print(f"replay_sample_ms batch=32 cpu={ms['cpu']:.3f} cuda={ms['cuda']:.3f} "
      f"(ms per batch, 1000 batches; cuda through pinned double-buffered copies)")
EOF

# ---- summary ---------------------------------------------------------------------------------
say ""
say "== done in $((SECONDS - T_START))s"
if ((${#FAILED_STEPS[@]})); then
    say "failed or skipped steps: ${FAILED_STEPS[*]}"
    exit 1
fi
say "every step passed"
