#!/usr/bin/env bash
# Makes the TLS fixtures of the tests (test/fixtures/tls): two certificate authorities, a server
# certificate for 127.0.0.1/localhost and client certificates with SPIFFE ids, all signed by "ca";
# "other-ca" signs a client certificate the mesh must refuse. Valid for 100 years, so the tests
# need no openssl; run this again only to change them.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/test/fixtures/tls"
mkdir -p "$out"
cd "$out"
rm -f ./*.pem ./*.srl
days=36500

authority() { # name, subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -keyout "$1-key.pem" -out "$1.pem" -subj "/CN=$2" 2>/dev/null
}

leaf() { # name, authority, subject, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$3" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial \
    -days "$days" -out "$1.pem" -extfile <(printf 'subjectAltName=%s\n' "$4") 2>/dev/null
  rm -f "$1.csr"
}

authority ca 'dsat test CA'
authority other-ca 'another CA'
leaf server ca 'dsat service' 'DNS:localhost,IP:127.0.0.1,URI:spiffe://dsat/service'
leaf worker ca 'dsat worker w1' 'URI:spiffe://dsat/worker/w1'
leaf stranger other-ca 'stranger' 'URI:spiffe://elsewhere/client'
rm -f ./*.srl ca-key.pem other-ca-key.pem
ls "$out"
