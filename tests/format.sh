#!/bin/sh
# format.sh SOURCE_ROOT — the C sources follow .clang-format (skipped without clang-format).
set -eu
cd "$1"
command -v clang-format >/dev/null || exit 77
clang-format --dry-run -Werror src/*.c src/*.h src/nn/*.c src/nn/*.h src/dist/*.c src/dist/*.h \
    ops/*.c ops/*.h include/*.h include/tapegrad/*.h tests/*.c tests/*.h tests/*.cpp examples/*.c \
    examples/*.h bench/*.c bench/*.h bench/*.cpp tests/fuzz/*.c tests/fuzz/*.h
