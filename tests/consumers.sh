#!/bin/sh
# consumers.sh SOURCE_ROOT BUILD_ROOT CC... — tapegrad as its users take it, built with the C
# compiler the build was configured with (CC..., its command words):
#   1. a Meson project with tapegrad as a subproject (dependency('tapegrad') resolved through
#      meson.override_dependency);
#   2. an installed tapegrad (meson install into a staging prefix) found through pkg-config,
#      linked shared (tapegrad.pc: the program needs libtapegrad.so) and static
#      (tapegrad-static.pc: it does not), with Cflags that carry only the include directory
#      (and MPI's flags in a build with MPI, which <tapegrad/dist.h> needs);
#   3. in a build with MPI, a program of tapegrad/dist.h through the same pkg-config file.
set -eu
src=$1
build=$2
shift 2
[ $# -gt 0 ] || set -- cc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/main.c" <<'C'
#include <stdio.h>
#include <tapegrad.h>
int main(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp))
        return 1;
    tg_tensor x = tg_requires_grad(tg_full(tp, TG_F64, 1, (int64_t[]){2}, 0.5));
    tg_status st = tg_backward(tg_sum_all(tg_tanh(tg_mul(x, x))));
    double g = ((const double *)tg_data(tg_tensor_grad(x)))[0];
    printf("consumer: %s, d/dx = %.6f\n", tg_status_name(st), g);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return st != TG_OK;
}
C

# 1. Subproject.
mkdir -p "$work/sub/subprojects"
cp "$work/main.c" "$work/sub/"
ln -s "$src" "$work/sub/subprojects/tapegrad"
cat >"$work/sub/meson.build" <<'M'
project('consumer', 'c', default_options: ['c_std=c11'])
subproject('tapegrad', default_options: ['tests=false', 'examples=false', 'bench=false'])
executable('consumer', 'main.c', dependencies: dependency('tapegrad'))
M
CC="$*" meson setup "$work/sub/build" "$work/sub" >/dev/null
meson compile -C "$work/sub/build" >/dev/null
"$work/sub/build/consumer"

# 2. Installed, through pkg-config.
meson install -C "$build" --destdir "$work/stage" --no-rebuild >/dev/null
option() {
    meson introspect "$build" --buildoptions | python3 -c \
        'import json, sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]][0])' "$1"
}
prefix=$(option prefix)
# A sanitizer build's library needs its runtime in the program too.
san=$(option b_sanitize)
cflags=""
[ "$san" = none ] || cflags="-fsanitize=$san"

pc=$(find "$work/stage" -name tapegrad.pc | head -n 1)
libdir=$(dirname "$(dirname "$pc")")
# The .pc files name the final prefix; point them at the staging copy.
for name in tapegrad tapegrad-static; do
    sed "s|^prefix=.*|prefix=$work/stage$prefix|" "$(dirname "$pc")/$name.pc" >"$work/$name.pc"
done
export PKG_CONFIG_PATH="$work"
# The public header needs its own directory and nothing else (no OpenBLAS include path); with
# MPI, <tapegrad/dist.h> also needs MPI's flags. Compared as sorted words.
words() { printf '%s\n' $* | sort | tr '\n' ' '; }
want="-I$work/stage$prefix/include"
[ "$(pkg-config --variable=mpi tapegrad)" = yes ] && want="$want $(pkg-config --cflags ompi-c)"
flags=$(pkg-config --cflags tapegrad)
[ "$(words $flags)" = "$(words $want)" ] || {
    echo "pkg-config --cflags tapegrad gives '$flags', not '$want'"
    exit 1
}
needs_libtapegrad() { readelf -d "$1" | grep -q 'NEEDED.*libtapegrad'; }
"$@" -std=c11 $cflags "$work/main.c" $(pkg-config --cflags --libs tapegrad) -Wl,-rpath,"$libdir" \
    -o "$work/shared"
"$work/shared"
needs_libtapegrad "$work/shared"
"$@" -std=c11 $cflags "$work/main.c" $(pkg-config --cflags --libs tapegrad-static) -o "$work/static"
"$work/static"
if needs_libtapegrad "$work/static"; then
    echo "the program linked through tapegrad-static.pc needs libtapegrad.so"
    exit 1
fi

# 3. With MPI: tapegrad/dist.h through the same .pc (which says mpi=yes and brings MPI's flags).
if [ "$(pkg-config --variable=mpi tapegrad)" = yes ]; then
    cat >"$work/dist.c" <<'C'
#include <stdio.h>
#include <tapegrad/dist.h>
int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    tg_ctx *ctx;
    tg_param *w;
    tg_dist *d = NULL;
    tg_status st = tg_ctx_new(&ctx, NULL);
    if (!st)
        st = tg_param_new(ctx, "w", TG_F32, 1, (int64_t[]){4}, &w);
    if (!st)
        st = tg_dist_new(ctx, 1, &w, NULL, &d);
    printf("dist consumer: %s, rank %d of %d\n", tg_status_name(st), tg_dist_rank(d),
           tg_dist_size(d));
    tg_dist_free(d);
    tg_ctx_free(ctx);
    MPI_Finalize();
    return st != TG_OK;
}
C
    "$@" -std=c11 $cflags "$work/dist.c" $(pkg-config --cflags --libs tapegrad) \
        -Wl,-rpath,"$libdir" -o "$work/dist"
    # Full stacks under AddressSanitizer, so that OpenMPI's own leaks meet their suppressions.
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0" "$work/dist"
fi
