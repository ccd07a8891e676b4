#!/bin/sh
# Every tuner service starts here. A secret it cannot read is refused at once, with
# the file and the fix, instead of a crash loop deep inside Ray or the database driver.
for secret in "${TUNER_STORAGE_PASSWORD_FILE:-}" "${RAY_AUTH_TOKEN_PATH:-}"; do
    [ -n "$secret" ] || continue
    if [ ! -e "$secret" ]; then
        echo "error: the secret $secret is missing. Fix: create it on the host (secrets/$(basename "$secret"), see" \
             "the README's cluster section) and list it under this service's secrets: in docker-compose.yml." >&2
        exit 78
    fi
    if [ ! -r "$secret" ]; then
        echo "error: the secret $secret cannot be read by the tuner services (uid $(id -u)): it is mode" \
             "$(stat -c %a "$secret"), owned by uid $(stat -c %u "$secret") on the host (Docker Compose mounts the" \
             "host file as it is). Fix: on the host, chmod 644 secrets/$(basename "$secret") (keep the secrets" \
             "folder itself chmod 700), then docker-compose up -d again." >&2
        exit 78
    fi
done
# A restarted container keeps its files: healthcheck.py must not take the last start's
# word that the Ray node is up.
rm -f /tmp/ray/ray_current_cluster
exec "$@"
