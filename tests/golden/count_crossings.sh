#!/bin/sh
# How many non-test .py files in jobs/, pipeline/, codec/ name the identifier that carries a job flag's value
# on its way to the codec (issue 22's "how many files --model, --target-psnr and nodata cross").
cd "$(dirname "$0")/../.."
count() {
  files=$(grep -rlE --include='*.py' "$2" jobs pipeline codec)
  echo "$1: $(echo "$files" | grep -c .) files: $(echo $files)"
}
count "--model" '(raster_model|\.model\b|model=|\bmodel: str|model_for)'
count "--target-psnr" 'target_psnr'
count "nodata" '\bnodata\b'
