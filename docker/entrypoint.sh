#!/bin/sh
# Entrypoint of the synapse-compliance image.
#
# - No argument, or one of the official image's modes (run, generate, migrate_config): hand over
#   to the image's /start.py unchanged. Before `run`, refuse to start while homeserver.yaml still
#   holds CHANGE_ME placeholders (secrets nobody replaced).
# - Anything else (e.g. `synapse-compliance keygen --pii-key /data/compliance-pii.key`): run it
#   directly, as the same user /start.py runs Synapse as (UID/GID from the environment, else
#   991:991), so files it writes in /data (the PII key is mode 0600) stay readable by Synapse.
set -e

mode="${1:-run}"
case "$mode" in
    run|generate|migrate_config)
        config="${SYNAPSE_CONFIG_PATH:-${SYNAPSE_CONFIG_DIR:-/data}/homeserver.yaml}"
        if [ "$mode" = run ] && grep -Eq '^[^#]*CHANGE_ME' "$config" 2>/dev/null; then
            echo "$config still contains CHANGE_ME placeholders:" >&2
            grep -En '^[^#]*CHANGE_ME' "$config" >&2
            echo "Replace them first (see docker/README.md)." >&2
            exit 2
        fi
        exec /start.py "$@"
        ;;
esac

if [ "$(id -u)" = 0 ]; then
    # printenv, not $UID: some shells set UID themselves; /start.py reads the environment.
    uid="$(printenv UID || echo 991)"
    gid="$(printenv GID || echo 991)"
    exec gosu "$uid:$gid" "$@"
fi
exec "$@"
