#!/usr/bin/env bash
# Regenerates the TEST-ONLY keys in this directory with the openssl CLI.
# These keys are public (committed); never use them for anything but hoist's tests.
set -euo pipefail
cd "$(dirname "$0")"
gen() { # name, genpkey args...
  local name=$1; shift
  openssl genpkey "$@" -out "test-$name.pkcs8.pem" 2>/dev/null
  openssl pkey -in "test-$name.pkcs8.pem" -pubout -out "test-$name.pub.pem"
}
gen rsa2048 -algorithm RSA -pkeyopt rsa_keygen_bits:2048
openssl rsa -in test-rsa2048.pkcs8.pem -traditional -out test-rsa2048.pkcs1.pem 2>/dev/null
openssl rsa -in test-rsa2048.pkcs8.pem -RSAPublicKey_out -out test-rsa2048.pkcs1-pub.pem 2>/dev/null
gen rsa4096 -algorithm RSA -pkeyopt rsa_keygen_bits:4096
for c in P-256 P-384 P-521; do
  n=$(echo "$c" | tr -d '-' | tr 'P' 'p')
  gen "$n" -algorithm EC -pkeyopt ec_paramgen_curve:$c -pkeyopt ec_param_enc:named_curve
  openssl ec -in "test-$n.pkcs8.pem" -out "test-$n.sec1.pem" 2>/dev/null
done
gen ed25519 -algorithm ed25519
# A second Ed25519 key that signs nothing: the "unknown key" in tests.
gen other-ed25519 -algorithm ed25519
# A 1024-bit RSA key: hoist refuses RSA under 2048 bits.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out test-rsa1024.pkcs8.pem 2>/dev/null
# A certificate: not a key.
openssl req -x509 -key test-p256.pkcs8.pem -subj /CN=hoist-test -days 3650 -out test-p256.cert.pem 2>/dev/null
