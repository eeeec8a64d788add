#!/usr/bin/env bash
# Every check that needs a GPU, in one short run (a lent GPU machine's time is scarce):
#   1. the CUDA tests (tests/test_gpu.py: GPU results against the CPU's;
#      tests/test_decode_device.py: nvJPEG decoding against the CPU decoder and the PIL path);
#   2. scoring speed at N=100k with heads on the GPU, and on the CPU of the same machine;
#   3. embedding throughput of ViT-B-32 (random weights) on the GPU, 256 and 1024 px JPEGs,
#      end-to-end vs bare forward, for the PIL path (draft and full-size decoding) and the
#      tensor decode path (embed_images(decode="device"), nvJPEG) in the same run.
# 2 and 3 write their own sections of docs/benchmarks.md. Run from the repository root:
#   bash benchmarks/gpu_check.sh [LOG_DIR]        (SKIP_SCORE_SPEED=1 leaves out step 2)
# Logs and the updated docs/benchmarks.md are copied to LOG_DIR (default: $OUT, else /tmp).
set -u -o pipefail
logs=${1:-${OUT:-/tmp}}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; \
print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
status=0
CLIPSEI_TEST_GPU=1 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py \
  tests/test_decode_device.py 2>&1 \
  | tee "$logs/gpu_tests.log" || status=1
if [ "${SKIP_SCORE_SPEED:-0}" != 1 ]; then
  python3 benchmarks/score_speed.py --device cuda --write 2>&1 | tee "$logs/score_speed.log" \
    || status=1
fi
python3 benchmarks/embed_throughput.py --device cuda --n-images 1024 --batch-size 128 \
  --repeats 3 --image-size 256 1024 --no-jpeg-draft --decode cpu device --write 2>&1 \
  | tee "$logs/embed_throughput.log" || status=1
cp docs/benchmarks.md "$logs/benchmarks.md"
exit $status
