#!/usr/bin/env bash
# Writes the local stack's secrets under deploy/compose/secrets/ (ignored by
# git), random for each checkout; prints the caller token to use. Existing
# files are kept, so a second run changes nothing.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
rand() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
write() { [ -f "$dir/$1" ] || printf '%s' "$2" > "$dir/$1"; }
# The emulator's own default key: the emulator is no secret.
write imprint-api-key "sk_sandbox_emulator"
write imprint-webhook-secret "whsec_$(rand)"
write grafana-admin-password "$(rand)"
[ -f "$dir/master-key" ] || head -c 32 /dev/urandom > "$dir/master-key"
if [ ! -f "$dir/callers.toml" ]; then
    token="local-$(rand)"
    printf '[[callers]]\nname = "local"\ntoken = "%s"\nallow = ["*"]\n' "$token" > "$dir/callers.toml"
fi
# The directory is 0700 (umask); the files must be readable by the
# containers' user (65532): compose bind-mounts them as they are.
chmod 0644 "$dir"/*
echo "secrets in $dir"
echo "caller token: $(sed -n 's/^token = "\(.*\)"/\1/p' "$dir/callers.toml")"
echo "  imprint-gateway call --token <it> imprint.v2.CustomerService/SearchCustomers '{}'"
