#!/bin/sh
# The image's entrypoint: the first argument picks the role, the rest goes to it.
#
#   edge          one edge node (EZT_REGION picks the region)
#   coordinator   a coordinator (one active through the Redis lease, others stand by)
#   delivery      a webhook delivery worker
#   admin ...     ezthrottle-admin, e.g. `admin keys create --customer acme`
#
# `--print ROLE [ARGS]` prints the command instead of running it.
# The role's process replaces this shell (exec), so it is PID 1 and gets SIGTERM.
set -eu

usage() {
    echo "usage: ezthrottle-entrypoint [--print] {edge|coordinator|delivery|admin} [args...]" >&2
}

print_only=0
if [ "${1:-}" = "--print" ]; then
    print_only=1
    shift
fi

if [ $# -eq 0 ]; then
    usage
    exit 64
fi

role=$1
shift
case "$role" in
    edge|coordinator|delivery|admin)
        module="ezthrottle_server.$role"
        ;;
    -h|--help|help)
        usage
        exit 0
        ;;
    *)
        echo "ezthrottle-entrypoint: unknown role '$role'" >&2
        usage
        exit 64
        ;;
esac

if [ "$print_only" -eq 1 ]; then
    if [ $# -gt 0 ]; then
        echo "python -m $module $*"
    else
        echo "python -m $module"
    fi
    exit 0
fi
exec python -m "$module" "$@"
