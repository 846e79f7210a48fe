#!/bin/sh
# static_program.sh SOURCE_ROOT COMPILER_ID CC... — a fully static program, as the README's
# "Linking" section builds one: tapegrad configured without SLEEF and MPI (Debian ships no
# static SLEEF or MPI) and, with clang, without OpenMP (Debian ships no static libomp),
# installed with its shared library beside the archive, then `cc -static` with
# `pkg-config --static`. The program runs, and has neither a program interpreter nor a dynamic
# section.
set -eu
src=$1
compiler=$2
shift 2
[ $# -gt 0 ] || set -- cc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

options="-Dsleef=disabled -Dmpi=disabled"
[ "$compiler" != clang ] || options="$options -Dopenmp=disabled"
# shellcheck disable=SC2086 # options is a list of words
CC="$*" meson setup "$work/build" "$src" $options -Dprefix=/usr/local -Dbuildtype=release \
    -Db_sanitize=none -Dtests=false -Dexamples=false -Dbench=false >/dev/null
meson compile -C "$work/build" >/dev/null
meson install -C "$work/build" --destdir "$work/stage" >/dev/null

cat >"$work/main.c" <<'C'
#include <stdio.h>
#include <tapegrad.h>
int main(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp))
        return 1;
    tg_tensor x = tg_requires_grad(tg_full(tp, TG_F32, 1, (int64_t[]){100}, 0.5));
    tg_tensor w = tg_full(tp, TG_F32, 2, (int64_t[]){100, 100}, 0.01);
    tg_tensor y = tg_sum_all(tg_tanh(tg_matmul(tg_reshape(x, 2, (int64_t[]){1, 100}), w)));
    tg_status st = tg_backward(y);
    const float *g = tg_data(tg_tensor_grad(x));
    if (st || !g)
        return 1;
    printf("static: %s, %s, dy/dx[0] = %.6f\n", tg_status_name(st), tg_build_info(), g[0]);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return 0;
}
C
pc=$(find "$work/stage" -name tapegrad.pc | head -n 1)
sed "s|^prefix=.*|prefix=$work/stage/usr/local|" "$pc" >"$work/tapegrad.pc"
export PKG_CONFIG_PATH="$work"
ls "$(dirname "$(dirname "$pc")")"/libtapegrad.so >/dev/null # the shared library is there too
"$@" -static -std=c11 "$work/main.c" $(pkg-config --cflags --static --libs tapegrad) \
    -o "$work/prog"
"$work/prog" | tee "$work/out.txt"
grep -Eq "static: TG_OK, vmath=scalar gemm=(avx512f|avx2|scalar) " "$work/out.txt"
if readelf -l "$work/prog" | grep -q INTERP || readelf -d "$work/prog" | grep -q NEEDED; then
    echo "the program is not fully static"
    exit 1
fi
