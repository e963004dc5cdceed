#!/bin/sh
# Regenerates this fixture: a CA with a 1024-bit RSA key (which ring cannot verify) and a
# workload certificate it signed. rcgen on ring cannot make RSA keys, hence openssl.
set -eu
cd "$(dirname "$0")"
openssl req -x509 -newkey rsa:1024 -nodes -keyout root-key.pem -out root-cert.pem -days 36500 \
  -subj "/O=meshvm test/CN=Weak Root" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr -subj "/" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:spiffe://cluster.local/ns/vm/sa/vm\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA root-cert.pem -CAkey root-key.pem -CAcreateserial -days 36500 \
  -extfile leaf.ext -out cert-chain.pem 2>/dev/null
rm -f leaf.csr leaf.ext root-cert.srl
