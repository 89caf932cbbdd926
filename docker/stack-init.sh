#!/bin/sh
# docker-compose's one-shot `init` service: everything the other services need in /state,
# created once and reused on every later `docker compose up` (nothing is overwritten).
#   /state/pki        local CA; broker certificate (names: broker, localhost); device gw-01;
#                     consumer and dashboard identities (docs/security.md)
#   /state/broker     mosquitto.conf + dynamic-security.json: mTLS listener on 8883, grants by
#                     role; owned by eclipse-mosquitto's `mosquitto` user (uid 1883), which it runs as
#   /state/model      the model bundle the model server serves (trained on the simulator
#                     when PUMPWATCH_TRAIN=1, the default; else the built-in physics bundle)
set -eu
S="${PUMPWATCH_STATE_DIR:-/state}"  # overridable for the tests
mkdir -p "$S/pki" "$S/broker" "$S/edge"
[ -f "$S/pki/ca.crt" ] || pumpwatch certs init --dir "$S/pki" \
    --host broker --host localhost --host 127.0.0.1
# issue what is missing, and re-issue a certificate made before roles (no role in it:
# the broker would grant it nothing)
has_role() {
    [ -f "$1" ] && [ -n "$(python -c 'import sys; from cloud.pki import role_of
print(role_of(sys.argv[1]) or "")' "$1")" ]
}
has_role "$S/pki/devices/gw-01.crt" || pumpwatch certs device gw-01 --dir "$S/pki" --force
for c in consumer dashboard; do
    has_role "$S/pki/clients/$c.crt" || pumpwatch certs "$c" "$c" --dir "$S/pki" --force
done
pumpwatch certs broker-config --dir "$S/pki" --out "$S/broker" --port 8883 --host 0.0.0.0 \
    --dynsec-plugin /usr/lib/mosquitto_dynamic_security.so --broker-uid 1883
if [ ! -f "$S/model/bundle.json" ]; then
    if [ "${PUMPWATCH_TRAIN:-1}" = "1" ]; then
        pumpwatch train --out "$S/train" --model-version compose-sim-mlp
        cp -r "$S/train/bundle" "$S/model"
    else
        pumpwatch models bundle --out "$S/model" --model-version compose-physics
    fi
fi
# the broker and the model server may run as other users: let them read what they need
chmod -R a+rX "$S/model" "$S/pki/ca.crt"
echo "pumpwatch stack state ready in $S"
